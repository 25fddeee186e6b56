"""Choose a merge recipe without target labels: score candidate recipes on unlabelled target images.

Each candidate is merged in memory through :func:`segmerge.api.merge`, loaded into its
anchor's network and scored by the label-free criteria of :mod:`segmerge.tuning.criteria`.
The selection rule is one criterion or ``rank`` (the mean of a candidate's ranks under the
three). The default is ``agreement`` with the output ensemble: the ensemble is what a merge
approximates at one model's cost, and entropy alone rewards confident but wrong models
(the anchor alone is usually the most confident). The benchmark reports each criterion's
rank correlation with true target mIoU, so the default can be checked on every run.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from segmerge import api
from segmerge.errors import SegmergeError
from segmerge.evaluation.prediction import InferenceConfig, predict
from segmerge.merging.keys import leaf_of
from segmerge.recipe import Recipe
from segmerge.tuning.adabn import BN_STATISTICS, batch_norms, reestimate_batch_norm
from segmerge.tuning.candidates import Candidate, Rename, candidate_grid
from segmerge.tuning.criteria import (
    CRITERIA,
    SELECTION_RULES,
    CriteriaMeter,
    best_index,
    photometric_augment,
    rank_average,
)
from segmerge.tuning.images import ImageSource, load_images
from segmerge.tuning.models import TuningModels

DEFAULT_CRITERION = "agreement"


@dataclass
class CandidateScore:
    candidate: Candidate
    recipe: Recipe
    entropy: float
    agreement: float
    consistency: float
    rank: float = math.nan
    seconds: float = 0.0

    def row(self) -> dict[str, Any]:
        return {
            **self.candidate.describe(),
            "entropy": self.entropy,
            "agreement": self.agreement,
            "consistency": self.consistency,
            "rank": self.rank,
            "seconds": self.seconds,
        }


@dataclass
class SearchResult:
    """Every candidate's scores (``rows``, in grid order), the rule, and the chosen row ``best``.

    ``state_dict`` is the chosen merge (checkpoint names; BatchNorm statistics re-estimated
    when the search ran with AdaBN); ``ensemble`` scores the output ensemble on the same images.
    """

    rows: list[CandidateScore]
    criterion: str
    best: int
    state_dict: dict[str, torch.Tensor]
    ensemble: dict[str, float]
    adabn: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def best_recipe(self) -> Recipe:
        return self.rows[self.best].recipe

    @property
    def chosen(self) -> CandidateScore:
        return self.rows[self.best]

    def table(self) -> list[dict[str, Any]]:
        return [{**r.row(), "chosen": i == self.best} for i, r in enumerate(self.rows)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "criterion": self.criterion,
            "chosen": self.chosen.candidate.name,
            "recipe": self.best_recipe.model_dump(mode="json"),
            "adabn": self.adabn,
            "ensemble": self.ensemble,
            "candidates": self.table(),
            "notes": self.notes,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=True)

    def to_markdown(self) -> str:
        arrows = {name: ("higher" if up else "lower") for name, up in CRITERIA.items()}
        lines = [
            f"# segmerge tune: search ({len(self.rows)} candidates)",
            "",
            f"Chosen by **{self.criterion}**: {self.chosen.candidate.name}. Criteria are label-free: "
            f"entropy (nats, {arrows['entropy']} is better), agreement with the output ensemble "
            f"(mIoU %, {arrows['agreement']} is better), consistency under photometric augmentation "
            f"(mIoU %, {arrows['consistency']} is better); rank = mean rank over the three.",
            "",
            "| | candidate | entropy | agreement | consistency | rank |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for i, r in enumerate(self.rows):
            mark = "**>**" if i == self.best else ""
            lines.append(
                f"| {mark} | {r.candidate.name} | {r.entropy:.4f} | {r.agreement:.2f} | "
                f"{r.consistency:.2f} | {r.rank:.2f} |"
            )
        e = self.ensemble
        lines += [
            "",
            f"Output ensemble (M times the cost): entropy {e['entropy']:.4f}, consistency {e['consistency']:.2f}.",
        ]
        lines += [f"- note: {n}" for n in self.notes]
        return "\n".join(lines) + "\n"


def default_anchors(models: TuningModels, anchor: int, rename: Rename | None) -> list[int]:
    """The anchor given first, then every other model that can anchor.

    With ``rename``, a model can anchor when every other model has rules onto its names
    (rules given for both models of a pair let each anchor; rules for donors only keep the
    anchor given). Without, every model can anchor when all hold the same keys and shapes.
    """
    others = [i for i in range(len(models)) if i != anchor]
    if rename:
        ruled = {int(i) for i, rules in rename.items() if rules}
        return [anchor, *[i for i in others if all(j in ruled for j in range(len(models)) if j != i)]]
    first = {k: tuple(v.shape) for k, v in models.states[0].items()}
    if all({k: tuple(v.shape) for k, v in s.items()} == first for s in models.states[1:]):
        return [anchor, *others]
    return [anchor]


def score_network(
    models: TuningModels,
    anchor: int,
    images: torch.Tensor,
    augmented: torch.Tensor,
    ensemble: torch.Tensor | None,
) -> CriteriaMeter:
    segmenter = models.segmenters[anchor]
    size = tuple(ensemble.shape[-2:]) if ensemble is not None else None
    meter = CriteriaMeter(segmenter.num_classes)
    on_images = predict([segmenter], images, models.config, size)
    on_augmented = predict([segmenter], augmented, models.config, size)
    for batch, augmented_batch in zip(on_images, on_augmented, strict=True):
        reference = ensemble[batch.indices] if ensemble is not None else None
        meter.update(batch.probabilities[0], reference, augmented_batch.probabilities[0])
    return meter


def search(
    models: Sequence[str | Path] | TuningModels,
    images: ImageSource,
    *,
    anchor: int = 0,
    rename: Rename | None = None,
    candidates: Sequence[Candidate] | None = None,
    criterion: str = DEFAULT_CRITERION,
    adabn: bool = False,
    factory: str | None = None,
    device: str = "cpu",
    amp: bool = False,
    batch_size: int = 8,
    seed: int = 0,
    progress: bool = False,
) -> SearchResult:
    """Score ``candidates`` (default: :func:`candidate_grid` over the anchors that fit) on unlabelled
    ``images`` and pick one by ``criterion`` (entropy, agreement, consistency or rank).

    ``models``: checkpoint paths (HF folders, segmerge's ``.pth``, or anything ``factory``
    builds); ``rename``: {model: [(pattern, replacement)]} maps donors' keys onto the anchor's.
    """
    if criterion not in SELECTION_RULES:
        raise SegmergeError(f"unknown criterion {criterion!r}; choose one of {', '.join(SELECTION_RULES)}")
    if not isinstance(models, TuningModels):
        models = TuningModels.open(models, factory, InferenceConfig(device=device, amp=amp, batch_size=batch_size))
    images = load_images(images)
    notes: list[str] = []
    if candidates is None:
        candidates = candidate_grid(len(models), default_anchors(models, anchor, rename))
    if not candidates:
        raise SegmergeError("no candidate recipes to score")

    ensemble = models.ensemble(images)
    augmented = photometric_augment(images, seed)
    ensemble_meter = CriteriaMeter(ensemble.shape[1])
    aug_ensemble = models.ensemble(augmented, tuple(ensemble.shape[-2:]))
    ensemble_meter.update(ensemble, ensemble, aug_ensemble)
    ensemble_scores = ensemble_meter.compute().as_dict()
    if adabn and not any(batch_norms(models.segmenters[c.anchor].module) for c in candidates):
        notes.append("--adabn: the networks have no BatchNorm layers; nothing was re-estimated")
        adabn = False

    rows: list[CandidateScore] = []
    with contextlib.ExitStack() as restore:
        for anchor in dict.fromkeys(c.anchor for c in candidates):
            restore.enter_context(models.bound(anchor).preserved())
        for candidate in tqdm(candidates, desc="score candidates", disable=not progress, leave=False):
            start = time.perf_counter()
            bound = models.bound(candidate.anchor)
            bound.load(_merge(models, candidate, rename))
            if adabn:
                reestimate_batch_norm(bound.segmenter, images, models.config.batch_size, models.config.device)
            result = score_network(models, candidate.anchor, images, augmented, ensemble).compute()
            recipe = candidate.recipe(models.paths, rename)
            rows.append(CandidateScore(candidate, recipe, **result.as_dict(), seconds=time.perf_counter() - start))
    table = [{"entropy": r.entropy, "agreement": r.agreement, "consistency": r.consistency} for r in rows]
    for r, rank in zip(rows, rank_average(table), strict=True):
        r.rank = rank
    best = best_index(table, criterion)

    chosen = rows[best].candidate
    state = _merge(models, chosen, rename)
    if adabn:
        with models.bound(chosen.anchor).preserved() as bound:
            bound.load(state)
            reestimate_batch_norm(bound.segmenter, images, models.config.batch_size, models.config.device)
            state = with_batch_norm_statistics(state, bound.state())
        notes.append(
            "BatchNorm statistics were re-estimated on the target images (AdaBN): the checkpoint holds them; "
            "the recipe alone reproduces the merge before re-estimation"
        )
    return SearchResult(rows, criterion, best, state, ensemble_scores, adabn, notes)


def with_batch_norm_statistics(
    state: dict[str, torch.Tensor], network: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """``state`` with its BatchNorm statistics taken from ``network`` (both under checkpoint names)."""
    out = dict(state)
    for key, tensor in network.items():
        if key in out and leaf_of(key) in BN_STATISTICS:
            out[key] = tensor.detach().cpu().to(out[key].dtype).clone()
    return out


def _merge(models: TuningModels, candidate: Candidate, rename: Rename | None) -> dict[str, torch.Tensor]:
    inputs = [models.states[i] for i in candidate.models]
    return api.merge(inputs, **candidate.recipe_options(rename))

"""Merges chosen or learned from unlabelled target images (``segmerge tune``), scored like the rest.

Per claim run: the tuning search scores a grid of recipes - each model that may anchor
the claim as anchor, the claim's renames applied to whichever is the donor - by its
label-free criteria on unlabelled target training images. Every candidate is then also
scored on the labelled test split, which gives each criterion's rank correlation with the
true score (mIoU, or PQ for the panoptic claim) and the true score of the recipe the
search picks. The learned merge (per-layer weights by gradient on the same images, on the
anchor of the search's pick) is written as an ordinary checkpoint and scored too. Target
labels are used only to score, never to choose.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from segmerge import api
from segmerge_bench.benchmark.claims import Claim
from segmerge_bench.benchmark.scoring import measure
from segmerge_bench.benchmark.store import remove_path
from segmerge_bench.training import TrainingData

if TYPE_CHECKING:  # experiments imports settings, which imports this module
    from segmerge_bench.benchmark.experiments import ScoredMerge

CRITERIA_SIGNS = {"entropy": -1.0, "agreement": 1.0, "consistency": 1.0}
"""Higher is better for every criterion once entropy (lower is better) is negated."""
PICK_CRITERION = "agreement"


@dataclass(frozen=True)
class TuneSettings:
    images: int = 32
    learn_steps: int = 60
    ramp_starts: tuple[float, ...] = (0.0, 0.5)
    end_weights: tuple[float, ...] = (0.75, 1.0)
    #: The anchor's share in the weighted soups the grid tries besides the uniform one.
    soup_anchor_weights: tuple[float, ...] = (0.75,)


def _spearman(x: list[float], y: list[float]) -> float:
    from scipy.stats import spearmanr

    if len(set(x)) < 2 or len(set(y)) < 2:
        return math.nan
    return float(spearmanr(x, y).statistic)


def tune_claim(
    claim: Claim,
    models: list[Path],
    singles: list[float],
    images: TrainingData,
    test: TrainingData,
    workdir: Path,
    settings: TuneSettings,
    seed: int,
    scored: Sequence[ScoredMerge] = (),
) -> dict:
    """``scored``: merges of this claim run already scored (the sweep); a candidate with the same
    anchor and options takes its score instead of being merged and scored again."""
    from segmerge.tuning import TuningModels, candidate_grid, search

    workdir.mkdir(parents=True, exist_ok=True)
    unlabelled = images.images[: settings.images]
    tuning_models = TuningModels.open([str(m) for m in models])
    grid = candidate_grid(
        len(models),
        anchors=claim.anchors,
        ramp_starts=settings.ramp_starts,
        end_weights=settings.end_weights,
        ramps=("linear",),
        soup_anchor_weights=settings.soup_anchor_weights,
    )
    found = search(
        tuning_models, unlabelled, rename=claim.renames, candidates=grid, criterion=PICK_CRITERION, seed=seed
    )
    known = {recipe_key(m.anchor, m.options): m.score for m in scored}
    truths = []
    for i, row in enumerate(found.rows):
        candidate = row.candidate
        if len(candidate.models) == 1 or _alone(candidate.options, candidate.models.index(candidate.anchor)):
            truths.append(singles[candidate.anchor])
            continue
        key = recipe_key(candidate.anchor, candidate.options)
        if len(candidate.models) == len(models) and key in known:
            truths.append(known[key])
            continue
        output = workdir / f"candidate{i}{models[candidate.anchor].suffix}"
        api.merge_to_file(row.recipe, output=output, overwrite=True)
        truths.append(measure(claim.metric, [output], test)[claim.metric])
        remove_path(output)
    correlation = {
        name: _spearman([sign * getattr(r, name) for r in found.rows], truths) for name, sign in CRITERIA_SIGNS.items()
    }
    anchor = found.chosen.candidate.anchor
    learned_score, learned = learned_merge(
        claim, tuning_models, models, unlabelled, test, workdir, settings, seed, anchor
    )
    return {
        "criterion": PICK_CRITERION,
        "pick": found.chosen.candidate.name,
        "learned_anchor": anchor,
        "pick_score": truths[found.best],
        "learned_score": learned_score,
        "learned_loss": [learned.initial_loss, learned.final_loss],
        "rank_correlation": correlation,
        "candidates": [
            {
                "name": r.candidate.name,
                "entropy": r.entropy,
                "agreement": r.agreement,
                "consistency": r.consistency,
                "score": t,
            }
            for r, t in zip(found.rows, truths, strict=True)
        ],
    }


def recipe_key(anchor: int, options: dict) -> str:
    """One merge of a claim's two models, however it was named: its anchor and its options."""
    return json.dumps({"anchor": anchor, **options}, sort_keys=True)


def _alone(options: dict, anchor_position: int) -> bool:
    """A weighted soup that gives the anchor everything: the anchor's own tensors."""
    weights = options.get("weights")
    return (
        options.get("method") == "linear"
        and weights is not None
        and all(w == (1.0 if i == anchor_position else 0.0) for i, w in enumerate(weights))
    )


def learned_merge(
    claim: Claim,
    tuning_models,
    models: list[Path],
    unlabelled,
    test: TrainingData,
    workdir: Path,
    settings: TuneSettings,
    seed: int,
    anchor: int = 0,
):
    """Learn per-layer weights on ``unlabelled`` images on ``anchor``'s network, write the merge as
    a checkpoint and score it on ``test``; returns (the claim's metric, the learn result)."""
    from segmerge.tuning import learn, write_tuned

    rename = claim.rename_for(anchor)
    learned = learn(tuning_models, unlabelled, anchor=anchor, rename=rename, steps=settings.learn_steps, seed=seed)
    output = Path(workdir) / f"learned{models[anchor].suffix}"
    remove_path(output)
    write_tuned(learned.recipe, output, learned.state_dict, overwrite=True)
    return measure(claim.metric, [output], test)[claim.metric], learned

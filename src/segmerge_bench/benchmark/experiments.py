"""One claim on one regime and seed: merge the claim's two models every way and score each.

Every merge goes through :func:`segmerge.api.merge` on the saved checkpoints - the path a
user's files take - and every score through the segmenter adapters ``segmerge eval`` uses.
Scores are in the claim's metric (mIoU, or PQ for the panoptic claim); ``details`` keeps
the numbers beside it (PQ things and stuff, the semantic output's mIoU).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from segmerge import api
from segmerge.labels import CITYSCAPES_CLASSES
from segmerge.merging.execute import single_threaded
from segmerge.merging.plan import Action
from segmerge_bench.benchmark.candidates import DEFAULT, SOUP, SweepRecipe, named_candidates, sweep_candidates
from segmerge_bench.benchmark.claims import Claim
from segmerge_bench.benchmark.discrepancy import layer_distances
from segmerge_bench.benchmark.scoring import PQ, measure
from segmerge_bench.benchmark.settings import Sweep
from segmerge_bench.benchmark.store import remove_path
from segmerge_bench.training import TrainingData

ENSEMBLE_ROW = "output ensemble"  # a claim run's row (bench.json), not segmerge eval's "ensemble" model name


@dataclass
class ScoredMerge:
    name: str
    group: str
    anchor: int
    options: dict
    #: In the claim's metric (percent).
    score: float
    #: Per merged layer: (depth, anchor weight), from the merge plan.
    anchor_weights: list[tuple[float, float]] = field(default_factory=list)
    details: dict[str, float] = field(default_factory=dict)


@dataclass
class ClaimRun:
    claim: str
    regime: str
    seed: int
    models: list[str]
    #: Each model alone in the claim's metric; NaN where it has none (a semantic model's PQ).
    singles: list[float]
    ensemble: float
    #: The target oracle's mIoU (a semantic upper bound, whatever the claim's metric).
    oracle: float
    merges: list[ScoredMerge]
    controls: dict[str, float] = field(default_factory=dict)
    #: Merges chosen or learned without target labels (see :mod:`segmerge_bench.benchmark.label_free`).
    label_free: dict = field(default_factory=dict)
    metric: str = "mIoU"
    #: The numbers beside the metric, per model alone (by position) and for the ensemble.
    details: dict[str, dict[str, float]] = field(default_factory=dict)
    #: Per merged layer, input to output: (depth, relative distance between the two models'
    #: weights) - the "discrepant parameters" analysis (:mod:`.discrepancy`).
    layer_distances: list[tuple[float, float]] = field(default_factory=list)
    #: The trainIds every score averages over (:func:`scored_test`); None: all 19.
    scored_classes: list[int] | None = None

    @property
    def class_count(self) -> int:
        """How many classes its scores average over."""
        return len(self.scored_classes or CITYSCAPES_CLASSES)

    @property
    def best_single(self) -> float:
        return max(s for s in self.singles if not math.isnan(s))

    def merge(self, name: str) -> ScoredMerge:
        return next(m for m in self.merges if m.name == name)

    @property
    def sweep_best(self) -> ScoredMerge:
        return max(self.merges, key=lambda m: m.score)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ClaimRun:
        merges = [
            ScoredMerge(**{**m, "anchor_weights": [tuple(w) for w in m["anchor_weights"]]}) for m in data["merges"]
        ]
        distances = [tuple(d) for d in data.get("layer_distances", [])]
        return cls(**{**data, "merges": merges, "layer_distances": distances})


def merge_options(claim: Claim, candidate: SweepRecipe) -> dict:
    options = {k: v for k, v in candidate.options.items()}
    rename = claim.rename_for(candidate.anchor)
    return {**options, "anchor": candidate.anchor, **({"rename": rename} if rename else {})}


def output_name(models: list[Path], candidate: SweepRecipe) -> str:
    """A folder for a SegFormer anchor, a ``.pth`` for a DAFormer one: the anchor's own layout."""
    stem = re.sub(r"[^A-Za-z0-9=_-]+", "_", candidate.name.replace(".", "p")).strip("_")
    return stem + models[candidate.anchor].suffix


def anchor_weights(models: list[Path], options: dict) -> list[tuple[float, float]]:
    plan = api.plan([str(m) for m in models], **options)
    return [(layer.depth, layer.weights[plan.anchor]) for layer in plan.layers if layer.action == Action.MERGED]


def merge_and_score(
    claim: Claim, models: list[Path], candidate: SweepRecipe, test: TrainingData, workdir: Path, keep: bool
) -> tuple[ScoredMerge, Path | None]:
    options = merge_options(claim, candidate)
    output = workdir / output_name(models, candidate)
    with single_threaded():  # as `segmerge merge` runs it (segmerge.merging.execute)
        api.merge_to_file([str(m) for m in models], output=output, overwrite=True, **options)
    measured = measure(claim.metric, [output], test)
    scored = ScoredMerge(
        candidate.name,
        candidate.group,
        candidate.anchor,
        candidate.options,
        measured[claim.metric],
        anchor_weights(models, options),
        measured,
    )
    if not keep:
        remove_path(output)
        return scored, None
    return scored, output


def run_claim(
    claim: Claim,
    regime: str,
    seed: int,
    models: list[Path],
    singles: list[dict[str, float]],
    oracle: float,
    test: TrainingData,
    sweep: Sweep,
    workdir: Path,
    progress=None,
) -> tuple[ClaimRun, dict[str, Path]]:
    """Score the ensemble, the named merges (kept on disk for the report) and the sweep.

    ``singles``: each model alone, as :func:`score_singles` measures them."""
    workdir.mkdir(parents=True, exist_ok=True)
    ensemble = measure(claim.metric, models, test)
    merges, kept = [], {}
    for candidate in [*named_candidates(), *sweep_candidates(sweep, claim.anchors)]:
        scored, path = merge_and_score(claim, models, candidate, test, workdir, keep=candidate.group == "named")
        merges.append(scored)
        if path is not None:
            kept[candidate.name] = path
        if progress is not None:
            progress()
    run = ClaimRun(
        claim.name,
        regime,
        seed,
        [m.name for m in models],
        [single.get(claim.metric, math.nan) for single in singles],
        ensemble[claim.metric],
        oracle,
        merges,
        metric=claim.metric,
        details={**{str(i): single for i, single in enumerate(singles)}, ENSEMBLE_ROW: ensemble},
        layer_distances=layer_distances(claim, models),
        scored_classes=None if test.scored_classes is None else list(test.scored_classes),
    )
    return run, kept


def score_singles(
    claim: Claim, models: list[Path], test: TrainingData, measured: dict[tuple, dict[str, float]]
) -> list[dict[str, float]]:
    """Each model alone in the claim's metric where it has it (only the anchors can have PQ), else
    its mIoU; ``measured`` caches scores across the claims of a run, by (checkpoint, metric,
    ``test.scored_classes``)."""
    out = []
    for i, path in enumerate(models):
        metric = claim.metric if i in claim.anchors else "mIoU"
        key = (path, metric, test.scored_classes)
        if key not in measured:
            measured[key] = measure(metric, [path], test)
        out.append(measured[key])
    return out


def scored_test(claim: Claim, regime: str, test: TrainingData) -> TrainingData:
    """The test split ``claim`` is scored on in ``regime``: a panoptic claim over the classes its
    panoptic model's source labels, as EDAPS scores SYNTHIA -> Cityscapes panoptic segmentation
    over SYNTHIA's 16 classes (6 things; susaha/edaps README: evaluated over all 19 with the
    labels whole, then mPQ16 = mPQ19 x 19 / 16), source B of the appearance regime leaving out
    the same three; every other claim over all 19 classes."""
    from segmerge_bench.benchmark.models import regime_specs
    from segmerge_bench.benchmark.regime import labelled_classes

    if claim.metric != PQ:
        return test
    classes = labelled_classes(regime_specs(regime, 0)[claim.roles[claim.anchors[0]]].source)
    return test if classes is None else test.over_classes(classes)


__all__ = ["DEFAULT", "SOUP", "ClaimRun", "ScoredMerge", "run_claim", "score_singles", "scored_test"]

"""The regime the merges are measured in, measured first: is it like the paper's?

A merge result means something only where the models are like the field's: trained to
convergence, with a domain gap of the field's size, adapted by a UDA method that works,
and fine-tuned from one start closely enough that their weights still average. Each run
measures these four properties per regime and seed, before any merge is scored, and the
report puts them first (:func:`preconditions` says which hold, on the mean over seeds):

* **converged**: a run of twice the steps adds less than :data:`CONVERGED_GAIN` mIoU to the
  oracle and to each adapted model;
* **a realistic gap**: the better source-only model scores a share of the oracle in
  :data:`GAP_RANGE` (GTA5 -> Cityscapes with MiT-B5: about 0.6);
* **UDA adapts**: each adapted model closes at least :data:`MIN_CLOSURE` of the way from its
  source-only model to the oracle (DAFormer closes about 0.7), with the share of target
  pixels its confident predictions cover and their accuracy beside it. A source that never
  labels some classes is measured over the classes it labels, all three models alike, as
  the field scores SYNTHIA -> Cityscapes over SYNTHIA's 16 classes (source B of the
  appearance regime leaves out the same three);
* **one basin**: along the straight line between two merged models (or, for different
  heads, between their encoders under each head), target mIoU never falls below the
  weaker endpoint - no loss barrier.

All scores are mIoU on the target test split; target labels are read only here, to
measure, never by training.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from segmerge.labels import IGNORE_INDEX
from segmerge_bench.benchmark.claims import Claim
from segmerge_bench.benchmark.scoring import score, scores_over
from segmerge_bench.benchmark.settings import REGIMES
from segmerge_bench.benchmark.store import remove_path
from segmerge_bench.training import TrainingData

CONVERGED_GAIN = 1.0
GAP_RANGE = (0.5, 0.7)
MIN_CLOSURE = 0.4
BARRIER_POINTS = tuple(i / 10 for i in range(11))
BARRIER_TOLERANCE = 0.1
"""A dip below the weaker endpoint smaller than this (mIoU points) is read as none: scores on a
test split of a few hundred images move by that much between neighbouring points anyway."""
ORACLE = "oracle"
ADAPTED = ("UDA A", "UDA B")
SOURCE_ONLY = ("source-only A", "source-only B")


@dataclass
class RegimeMeasures:
    """One regime and seed. ``singles``: mIoU per role (the oracle under :data:`ORACLE`);
    ``longer``: mIoU after twice the steps, per role checked; ``curves``: per role, (step,
    mIoU) along its twice-as-long run; ``pseudo``: per adapted role, ``coverage`` (share of
    labelled target training pixels predicted above the pseudo-label threshold) and
    ``accuracy`` (of those); ``barriers``: per merged pair, per head, mIoU at
    ``barrier_points`` (a = 0: the first model, 1: the second); ``labelled``: per adapted role
    whose source leaves classes out, the mIoU over the ``classes`` it labels (their number) of
    the ``oracle``, the ``source-only`` model and the ``adapted`` one."""

    regime: str
    seed: int
    singles: dict[str, float]
    longer: dict[str, float] = field(default_factory=dict)
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    pseudo: dict[str, dict[str, float]] = field(default_factory=dict)
    barriers: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    barrier_points: tuple[float, ...] = BARRIER_POINTS
    labelled: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> RegimeMeasures:
        curves = {role: [tuple(point) for point in points] for role, points in data.get("curves", {}).items()}
        points = tuple(data.get("barrier_points", BARRIER_POINTS))
        return cls(**{**data, "curves": curves, "barrier_points": points})


@dataclass(frozen=True)
class Check:
    """One precondition on one regime: what was measured against what is required."""

    regime: str
    name: str
    measured: str
    required: str
    passed: bool


def closure(adapted: float, source_only: float, oracle: float) -> float:
    """The share of the gap from the source-only model to the oracle that adaptation closed."""
    gap = oracle - source_only
    return (adapted - source_only) / gap if gap > 0 else math.nan


def labelled_classes(domain: str) -> tuple[int, ...] | None:
    """The trainIds a source domain labels, or None when it labels all 19."""
    from segmerge_bench.synthetic.domains import get_domain

    found = get_domain(domain)
    return found.labelled_ids() if found.absent_classes else None


def barrier_drop(curve: Sequence[float]) -> float:
    """How far the curve falls below its weaker endpoint (0 when it never does)."""
    return max(0.0, min(curve[0], curve[-1]) - min(curve))


def _mean(values: Sequence[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return statistics.fmean(values) if values else math.nan


def preconditions(measures: Sequence[RegimeMeasures]) -> list[Check]:
    """The four preconditions per regime, on the means over the seeds measured."""
    checks: list[Check] = []
    for regime in dict.fromkeys(m.regime for m in measures):
        runs = [m for m in measures if m.regime == regime]

        def mean(role: str, runs=runs) -> float:
            return _mean([m.singles.get(role, math.nan) for m in runs])

        longer = {
            role: _mean([m.longer[role] - m.singles[role] for m in runs if role in m.longer])
            for role in (ORACLE, *ADAPTED)
        }
        gains = {role: gain for role, gain in longer.items() if not math.isnan(gain)}
        if gains:
            checks.append(
                Check(
                    regime,
                    "converged",
                    ", ".join(f"{role} {gain:+.1f}" for role, gain in gains.items()) + " mIoU at twice the steps",
                    f"each < +{CONVERGED_GAIN:g}",
                    len(gains) == len(longer) and all(g < CONVERGED_GAIN for g in gains.values()),
                )
            )
        oracle = mean(ORACLE)
        best = max(mean(role) for role in SOURCE_ONLY)
        share = best / oracle if oracle > 0 else math.nan
        checks.append(
            Check(
                regime,
                "realistic gap",
                f"best source-only {best:.1f} = {share:.2f} of the oracle ({oracle:.1f})",
                f"{GAP_RANGE[0]:g}-{GAP_RANGE[1]:g} of the oracle",
                GAP_RANGE[0] <= share <= GAP_RANGE[1],
            )
        )
        closed, over = {}, {}
        for adapted, source_only in zip(ADAPTED, SOURCE_ONLY, strict=True):
            subset = [m.labelled[adapted] for m in runs if adapted in m.labelled]
            if subset:
                numbers = {k: _mean([s[k] for s in subset]) for k in ("adapted", "source-only", "oracle")}
                closed[adapted] = closure(numbers["adapted"], numbers["source-only"], numbers["oracle"])
                over[adapted] = f" over the {int(subset[0]['classes'])} classes its source labels"
            else:
                closed[adapted] = closure(mean(adapted), mean(source_only), oracle)
                over[adapted] = ""
        pseudo = {
            role: (
                _mean([m.pseudo[role]["coverage"] for m in runs if role in m.pseudo]),
                _mean([m.pseudo[role]["accuracy"] for m in runs if role in m.pseudo]),
            )
            for role in ADAPTED
        }
        checks.append(
            Check(
                regime,
                "UDA adapts",
                "; ".join(
                    f"{role} closes {closed[role]:.0%}{over[role]} (confident pixels {pseudo[role][0]:.0%}, "
                    f"{pseudo[role][1]:.0%} right)"
                    for role in ADAPTED
                ),
                f"each >= {MIN_CLOSURE:.0%} of its source-only-to-oracle gap",
                all(c >= MIN_CLOSURE for c in closed.values()),
            )
        )
        pairs = dict.fromkeys(pair for m in runs for pair in m.barriers)
        for pair in pairs:
            heads = dict.fromkeys(head for m in runs for head in m.barriers.get(pair, {}))
            drops = {}
            for head in heads:
                curves = [m.barriers[pair][head] for m in runs if head in m.barriers.get(pair, {})]
                drops[head] = barrier_drop([_mean(points) for points in zip(*curves, strict=True)])
            checks.append(
                Check(
                    regime,
                    f"one basin: {pair}",
                    "; ".join(f"{head}: drop {drop:.2f}" for head, drop in drops.items()),
                    f"no drop below the weaker endpoint (> {BARRIER_TOLERANCE:g})",
                    all(drop <= BARRIER_TOLERANCE for drop in drops.values()),
                )
            )
    return checks


def regime_table(measures: Sequence[RegimeMeasures]) -> str:
    """Markdown: per regime, each model's target mIoU (mean ± sd over seeds) alone and, where
    measured, after twice the steps."""
    roles = (ORACLE, *SOURCE_ONLY, *ADAPTED)
    lines = ["| regime | " + " | ".join(roles) + " |", "|---|" + "---:|" * len(roles)]
    for regime in dict.fromkeys(m.regime for m in measures):
        runs = [m for m in measures if m.regime == regime]
        cells = []
        for role in roles:
            values = [m.singles[role] for m in runs if role in m.singles]
            cell = f"{_mean(values):.1f}" + (f" ± {statistics.stdev(values):.1f}" if len(values) > 1 else "")
            longer = [m.longer[role] for m in runs if role in m.longer]
            if longer:
                cell += f" (x2: {_mean(longer):.1f})"
            cells.append(cell)
        lines.append(f"| {regime} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def barrier_curves(
    claim: Claim, models: Sequence[Path], test: TrainingData, workdir: Path, points: Sequence[float] = BARRIER_POINTS
) -> dict[str, list[float]]:
    """Target mIoU along ``(1-a) theta_1 + a theta_2``, through :func:`segmerge.api.merge_to_file`'s
    weighted average (``method="linear"``) of the claim's two files. With one head each, it is
    the anchor's: one curve per model that can carry the blend (both, when the heads differ)."""
    from segmerge import api
    from segmerge.merging.execute import single_threaded

    names = claim.roles
    curves: dict[str, list[float]] = {}
    workdir.mkdir(parents=True, exist_ok=True)
    for anchor in claim.anchors:
        curve = []
        for a in points:
            output = workdir / f"line-anchor{anchor}-a{round(a * 100):03d}{models[anchor].suffix}"
            rename = claim.rename_for(anchor)
            with single_threaded():
                api.merge_to_file(
                    [str(m) for m in models],
                    output=output,
                    overwrite=True,
                    method="linear",
                    weights=[1 - a, a],
                    anchor=anchor,
                    allow_few=True,
                    **({"rename": rename} if rename else {}),
                )
            curve.append(score([output], test))
            remove_path(output)
        curves[f"head of {names[anchor]}"] = curve
        if not claim.renames:  # one architecture: both anchors give the same network
            break
    return curves


CURVE_FRACTIONS = (0.25, 0.5, 0.75)
"""Where along a twice-as-long run the learning curve is sampled (besides its end)."""


def longer_spec(spec):
    """The twice-as-long run of ``spec`` the convergence check trains, saving its learning curve."""
    return dataclasses.replace(spec, length=2, snapshots=CURVE_FRACTIONS)


def measure_regime(
    zoo,
    regime: str,
    seed: int,
    paths: dict[str, Path],
    longer_specs: dict,
    claims: Sequence[Claim],
    test: TrainingData,
    workdir: Path,
    points: Sequence[float] = BARRIER_POINTS,
    known: dict[Path, float] | None = None,
) -> RegimeMeasures:
    """Measure one regime and seed. ``paths``: the trained models by role (the oracle under
    :data:`ORACLE`); ``longer_specs``: the specs, by role, of the models whose convergence is
    checked (their twice-as-long runs are trained here; empty: not checked for this seed);
    ``known``: mIoU already measured on ``test``, by checkpoint (not scored again). Learning
    curves count steps from the shared start: a warm-started run's begins with its source-only model."""
    known = known or {}
    over_labelled = {}  # a source that labels only some classes: its models scored over those too
    for adapted, source_only, domain in zip(ADAPTED, SOURCE_ONLY, REGIMES[regime].sources, strict=True):
        classes = labelled_classes(domain)
        if classes is not None:
            over_labelled[adapted] = (classes, {"oracle": ORACLE, "source-only": source_only, "adapted": adapted})
    singles, fewer = {}, {}
    for role in (ORACLE, *SOURCE_ONLY, *ADAPTED):
        sets = sorted({classes for classes, roles in over_labelled.values() if role in roles.values()})
        measured = known.get(paths[role])
        everything = [] if measured is not None else [test.scored_classes]
        values = scores_over([paths[role]], test, everything + sets) if everything + sets else []
        singles[role] = measured if measured is not None else values[0]
        fewer[role] = dict(zip(sets, values[len(everything) :], strict=True))
    labelled = {
        adapted: {**{k: fewer[role][classes] for k, role in roles.items()}, "classes": len(classes)}
        for adapted, (classes, roles) in over_labelled.items()
    }
    threshold = zoo.settings.uda.pseudo_label_threshold
    target = zoo.data.target_train()  # labelled: measured here, never trained on by UDA
    pseudo = {role: pseudo_label_quality(paths[role], target, threshold) for role in ADAPTED}
    longer: dict[str, float] = {}
    curves: dict[str, list[tuple[int, float]]] = {}
    for role in (ORACLE, *ADAPTED):
        if role not in longer_specs:
            continue
        spec = longer_spec(longer_specs[role])
        steps = zoo.config_for(spec).steps
        longer[role] = score([zoo.path(spec)], test)
        # a warm-started run's curve starts where its source-only run ended: steps count both
        warm = zoo.warm_start(spec)
        before = zoo.config_for(warm).steps if warm is not None else 0
        curve = [(before, score([zoo.path(warm)], test))] if warm is not None else []
        curve += [(before + round(f * steps), score([zoo.snapshot_path(spec, f)], test)) for f in CURVE_FRACTIONS]
        curves[role] = [*curve, (before + steps, longer[role])]
    barriers = {
        " + ".join(claim.roles): barrier_curves(
            claim, [paths[r] for r in claim.roles], test, workdir / claim.name, points
        )
        for claim in claims
    }
    return RegimeMeasures(regime, seed, singles, longer, curves, pseudo, barriers, tuple(points), labelled)


def confident_pixels(batches: Iterable[tuple[torch.Tensor, torch.Tensor]], threshold: float) -> dict[str, float]:
    """From (class probabilities [N,C,H,W], labels [N,H,W]) batches: ``coverage``, the share of
    labelled pixels predicted above ``threshold``, and ``accuracy``, the share of those predicted
    right (what a teacher's pseudo-labels would be worth)."""
    covered = right = labelled = 0
    for probabilities, labels in batches:
        confidence, predicted = probabilities.max(1)
        valid = labels != IGNORE_INDEX
        confident = (confidence > threshold) & valid
        covered += int(confident.sum())
        right += int(((predicted == labels) & confident).sum())
        labelled += int(valid.sum())
    return {"coverage": covered / max(labelled, 1), "accuracy": right / max(covered, 1)}


@torch.no_grad()
def pseudo_label_quality(path: Path, data: TrainingData, threshold: float) -> dict[str, float]:
    """:func:`confident_pixels` of the checkpoint at ``path`` on labelled ``data``."""
    from segmerge.evaluation.prediction import predict
    from segmerge_bench.benchmark.scoring import inference, load_segmenters

    batches = predict(load_segmenters([path]), data.images, inference())
    return confident_pixels(((b.probabilities[0], data.labels[b.indices].long()) for b in batches), threshold)

"""The benchmark's own figures: each recipe's anchor weight by layer, the sweep heat-map, and the
regime (learning curves, the loss barrier between merged models)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from segmerge.reports.plots import _figure, safe_name, save_figure
from segmerge_bench.benchmark.candidates import DEFAULT, SOUP, SWEEP
from segmerge_bench.benchmark.experiments import ClaimRun
from segmerge_bench.benchmark.regime import RegimeMeasures


def plot_anchor_weights(runs: Sequence[ClaimRun], path: Path) -> Path:
    """Per claim (one panel each): the anchor's weight at every merged layer for the named
    recipes and the sweep's best, from the merge plans of the first seed."""
    claims = list(dict.fromkeys(r.claim for r in runs))
    fig = _figure(4.2 * len(claims), 3.2, layout="constrained")
    axes = fig.subplots(1, len(claims), squeeze=False)[0]
    for ax, claim in zip(axes, claims, strict=True):
        first = [r for r in runs if r.claim == claim and r.seed == runs[0].seed]
        shown = set()
        for run in first:
            for merge in (run.merge(SOUP), run.merge(DEFAULT), run.sweep_best):
                label = merge.name if merge.group != SWEEP else f"{run.regime} best: {merge.name}"
                if label in shown or not merge.anchor_weights:
                    continue
                shown.add(label)
                depth, weight = zip(*merge.anchor_weights, strict=True)
                ax.plot(np.arange(len(depth)), weight, marker=".", linewidth=1.2, label=label)
        ax.set_title(claim, fontsize=9)
        ax.set_xlabel("merged layer (input to output)")
        ax.set_ylabel("anchor weight")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=6, loc="upper left")
    return save_figure(fig, path)


def plot_sweep(runs: Sequence[ClaimRun], path: Path) -> Path | None:
    """The claim's metric (mean over seeds) over ramp start x end weight (linear ramp, anchor A), one
    heat-map per claim, with the best single model's mean in the title."""
    grid = [m for m in runs[0].merges if m.group == SWEEP and m.options.get("ramp") == "linear" and m.anchor == 0]
    starts = sorted({m.options["ramp_start"] for m in grid})
    ends = sorted({m.options["end_weight"] for m in grid})
    if len(starts) < 2 or len(ends) < 2:
        return None
    values = np.full((len(starts), len(ends)), np.nan)
    for i, t0 in enumerate(starts):
        for j, h in enumerate(ends):
            found = [
                m.score
                for r in runs
                for m in r.merges
                if m.group == SWEEP
                and m.anchor == 0
                and m.options.get("ramp") == "linear"
                and m.options.get("ramp_start") == t0
                and m.options.get("end_weight") == h
            ]
            values[i, j] = np.mean(found) if found else np.nan
    best_single = float(np.mean([r.best_single for r in runs]))
    fig = _figure(4.0, 3.2, layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(values, cmap="viridis", origin="lower", aspect="auto")
    for i in range(len(starts)):
        for j in range(len(ends)):
            ax.text(
                j,
                i,
                f"{values[i, j]:.1f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if values[i, j] < np.nanmean(values) else "black",
            )
    ax.set_xticks(range(len(ends)), [f"{h:g}" for h in ends])
    ax.set_yticks(range(len(starts)), [f"{t:g}" for t in starts])
    ax.set_xlabel("end weight h_end")
    ax.set_ylabel("ramp start t0")
    ax.set_title(f"{runs[0].claim}, {runs[0].regime}\n{runs[0].metric} (best single {best_single:.1f})", fontsize=8)
    fig.colorbar(image, ax=ax)
    return save_figure(fig, path)


def sweep_figure_name(regime: str, claim: str) -> str:
    return f"sweep_{safe_name(claim)}_{safe_name(regime)}.png"


def plot_regime(measures: Sequence[RegimeMeasures], path: Path) -> Path | None:
    """Per regime (one row): the learning curves of the twice-as-long runs (first panel), then the
    target mIoU along the line between each merged pair (one panel per pair, a line per head;
    mean over the seeds measured)."""
    regimes = list(dict.fromkeys(m.regime for m in measures))
    pairs = {r: list(dict.fromkeys(p for m in measures if m.regime == r for p in m.barriers)) for r in regimes}
    columns = 1 + max((len(p) for p in pairs.values()), default=0)
    if not regimes:
        return None
    fig = _figure(3.4 * columns, 2.8 * len(regimes), layout="constrained")
    axes = fig.subplots(len(regimes), columns, squeeze=False)
    for row, regime in zip(axes, regimes, strict=True):
        runs = [m for m in measures if m.regime == regime]
        ax = row[0]
        for role in dict.fromkeys(r for m in runs for r in m.curves):
            points = [m.curves[role] for m in runs if role in m.curves]
            steps = [step for step, _ in points[0]]
            ax.plot(steps, np.mean([[v for _, v in p] for p in points], axis=0), marker=".", label=role)
        ax.set_title(f"{regime}: learning curves (twice the steps)", fontsize=8)
        ax.set_xlabel("training steps from the shared start")
        ax.set_ylabel("target mIoU")
        ax.legend(fontsize=6)
        for ax, pair in zip(row[1:], pairs[regime], strict=False):
            for head in dict.fromkeys(h for m in runs for h in m.barriers.get(pair, {})):
                curves = [m.barriers[pair][head] for m in runs if head in m.barriers.get(pair, {})]
                ax.plot(runs[0].barrier_points, np.mean(curves, axis=0), marker=".", label=head)
            ax.set_title(f"{regime}: {pair}", fontsize=7)
            ax.set_xlabel("a (0: first model, 1: second)")
            ax.set_ylabel("target mIoU")
            ax.legend(fontsize=6)
        for ax in row[1 + len(pairs[regime]) :]:
            ax.set_axis_off()
    return save_figure(fig, path)


def plot_layer_distances(runs: Sequence[ClaimRun], path: Path) -> Path | None:
    """Per regime (one panel each): the relative distance between the two merged models' weights
    at every merged layer, one line per claim (mean over seeds)."""
    regimes = list(dict.fromkeys(r.regime for r in runs if r.layer_distances))
    if not regimes:
        return None
    fig = _figure(4.6 * len(regimes), 3.2, layout="constrained")
    axes = fig.subplots(1, len(regimes), squeeze=False)[0]
    for ax, regime in zip(axes, regimes, strict=True):
        for claim in dict.fromkeys(r.claim for r in runs if r.regime == regime and r.layer_distances):
            curves = [r.layer_distances for r in runs if r.regime == regime and r.claim == claim]
            depth = [d for d, _ in curves[0]]
            ax.plot(depth, np.mean([[v for _, v in c] for c in curves], axis=0), marker=".", linewidth=1, label=claim)
        ax.set_title(f"{regime}: where the merged models differ", fontsize=9)
        ax.set_xlabel("layer depth (0 input, 1 output)")
        ax.set_ylabel("||w1 - w2|| / ||w1||")
        ax.legend(fontsize=6)
    return save_figure(fig, path)

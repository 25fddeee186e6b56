"""The benchmark's own figures: each recipe's anchor weight by layer, and the sweep heat-map."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from segmerge.reports.plots import _figure, safe_name, save_figure
from segmerge_bench.benchmark.candidates import DEFAULT, SOUP, SWEEP
from segmerge_bench.benchmark.experiments import ClaimRun


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

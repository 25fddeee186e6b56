#!/usr/bin/env python
"""Seconds per training step of every kind of model a full `segmerge bench` run trains, and
what a full run's training would take from them.

Each kind (source-only / oracle SegFormer, DACS and MIC UDA SegFormer, DAFormer-head UDA,
panoptic UDA) trains ``--steps`` steps from the shipped start, in alternating rounds, with
deterministic kernels on (the default) and off. Medians over rounds. Then the full run's
training time is estimated from the models ``regime_specs`` lists, the oracle per seed, the
first seed's convergence runs (twice as long) and unshared-init controls, at
``FINE_TUNE.steps`` steps. Run it on an idle machine; it prints the load average.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/training_speed.py --steps 30 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics

import torch

from segmerge_bench.benchmark.models import SHIPPED_START, shipped_path
from segmerge_bench.benchmark.settings import FULL
from segmerge_bench.synthetic import SyntheticDataset
from segmerge_bench.training import SharedStart, train_source_only, train_uda
from segmerge_bench.training.data import TrainingData
from segmerge_bench.training.panoptic import train_panoptic_uda

KINDS = ("source-only", "uda", "mic", "daformer uda", "panoptic uda")


def data(domain: str, n: int, instances: bool = False) -> TrainingData:
    """``n`` rendered images of ``domain`` (with thing instances: what panoptic training needs)."""
    return TrainingData.from_samples(SyntheticDataset(domain, n=n, seed=0), True, domain, instances=instances)


def seconds_per_step(kind: str, start: SharedStart, source, target, config) -> float:
    """Seconds per step of a ``config.steps``-step run (the loop's own clock: model copies and
    data set-up excluded)."""
    settings = FULL.uda.replace(steps=config.steps, warmup_steps=1, threads=config.threads, progress=False)
    settings = settings.replace(deterministic=config.deterministic)
    if kind == "source-only":
        _, log = train_source_only(start.model("segformer"), source, settings)
    elif kind in ("uda", "mic"):
        _, log = train_uda(
            start.model("segformer"), source, target, settings, method="mic" if kind == "mic" else "dacs"
        )
    elif kind == "daformer uda":
        _, log = train_uda(start.model("daformer"), source, target, settings)
    else:
        _, log = train_panoptic_uda(start.model("panoptic"), source, target, settings)
    return log["seconds"] / config.steps


def full_run_steps() -> dict[str, float]:
    """Training steps of a full run per kind (``FULL``: its seeds, regimes, claims' models)."""
    from segmerge_bench.benchmark.models import MIC, regime_specs

    n = FULL.source_only.steps
    per_kind = dict.fromkeys(KINDS, 0.0)
    for _ in FULL.seeds:
        for regime in FULL.regimes:
            for spec in regime_specs(regime, 0).values():
                kind = "mic" if spec.recipe == MIC else spec.recipe
                if spec.architecture == "daformer":
                    kind = "daformer uda"
                elif spec.architecture == "panoptic":
                    kind = "panoptic uda"
                per_kind[kind] += n
        per_kind["source-only"] += n  # the oracle (one per seed, shared by the regimes)
    per_kind["uda"] += len(FULL.regimes) * n if FULL.unshared_init_control else 0  # first seed, per regime
    if FULL.convergence_seeds:  # twice-as-long oracle and adapted models, first seed, per regime
        per_kind["source-only"] += 2 * n
        per_kind["uda"] += len(FULL.regimes) * 2 * 2 * n
    return per_kind


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30, help="counted steps per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=64)
    args = parser.parse_args()
    start = SharedStart.load(shipped_path(SHIPPED_START))
    source, target = data("appearance-a", args.images, True), data("target", args.images, True)
    results: dict[tuple[str, bool], list[float]] = {}
    for r in range(args.rounds):
        for kind in KINDS:
            for deterministic in (True, False):
                args.deterministic = deterministic
                s = seconds_per_step(kind, start, source, target, args)
                results.setdefault((kind, deterministic), []).append(s)
                print(f"round {r + 1} {kind:13s} deterministic={deterministic!s:5s} {s:.3f} s/step", flush=True)
    print(f"\n1-min load average now {os.getloadavg()[0]:.2f}; torch {torch.__version__}, {args.threads} threads\n")
    print("| kind | s/step deterministic | s/step not | ratio |")
    print("|---|---:|---:|---:|")
    medians = {key: statistics.median(v) for key, v in results.items()}
    for kind in KINDS:
        on, off = medians[(kind, True)], medians[(kind, False)]
        print(f"| {kind} | {on:.3f} | {off:.3f} | {off / on:.2f} |")
    steps = full_run_steps()
    for deterministic in (True, False):
        total = sum(steps[k] * medians[(k, deterministic)] for k in KINDS)
        print(
            f"\nfull run's training ({', '.join(f'{k} {v:.0f}' for k, v in steps.items())} steps), "
            f"deterministic={deterministic}: {total / 60:.0f} min"
        )


if __name__ == "__main__":
    main()

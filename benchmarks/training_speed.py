#!/usr/bin/env python
"""Seconds per training step of every kind of model a full `segmerge bench` run trains, what
its training would take from them, and what training two models side by side saves.

Each kind (source-only / oracle SegFormer, DACS and MIC UDA SegFormer, DAFormer-head and
panoptic models source-only and by UDA) trains ``--steps`` steps from the shipped start, in
alternating rounds; medians over rounds (``--compare-deterministic`` also times each with
deterministic kernels off). The full run's training time follows from the models
:func:`~segmerge_bench.benchmark.runner.run_specs` lists for ``FULL`` (with the source-only
runs warm-started UDA starts from). ``--side-by-side`` times two UDA runs one after the other
on ``--threads`` threads against the same two at once in two processes on one thread each
(what ``bench --jobs 2`` does), alternating. Run it on an idle machine; it prints the load.

``--sizes small,large`` times both of ``bench --size``'s models in the same alternating rounds
(``large``: MiT-B0's encoder shape, untrained - a step costs the same whatever the weights) and
prints each one's full run from its preset's step counts (``LARGE``: its pre-training too) and
the ratio of their steps. ``--device cuda`` times them on a GPU (what ``bench --device cuda``
trains on); every step reads its loss back, so the loop's clock waits for the GPU.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/training_speed.py --steps 30 --rounds 3 --side-by-side
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/training_speed.py --sizes small,large --device cuda
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
import os
import statistics
import time
from dataclasses import replace

import torch

from segmerge_bench.benchmark.models import MIC, SHIPPED_START, recipe_config, shipped_path, with_warm_starts
from segmerge_bench.benchmark.runner import run_specs
from segmerge_bench.benchmark.settings import FULL, SIZES, BenchSettings
from segmerge_bench.synthetic import SyntheticDataset
from segmerge_bench.training import SharedStart, train_source_only, train_uda
from segmerge_bench.training.data import TrainingData
from segmerge_bench.training.panoptic import train_panoptic_supervised, train_panoptic_uda
from segmerge_bench.zoo.models import ARCHITECTURES, build_model, decoder_of, encoder_of

KINDS = (
    ("segformer", "source-only"),
    ("segformer", "uda"),
    ("segformer", MIC),
    ("daformer", "source-only"),
    ("daformer", "uda"),
    ("panoptic", "source-only"),
    ("panoptic", "uda"),
)


def data(domain: str, n: int, instances: bool = False) -> TrainingData:
    """``n`` rendered images of ``domain`` (with thing instances: what panoptic training needs)."""
    return TrainingData.from_samples(SyntheticDataset(domain, n=n, seed=0), True, domain, instances=instances)


def untrained_start(encoder: dict) -> SharedStart:
    """A shared start of ``encoder``'s shape at its random init (for timing only)."""
    encoder_state = encoder_of(build_model("segformer", **encoder)).state_dict()
    decoders = {arch: decoder_of(build_model(arch, **encoder)).state_dict() for arch in ARCHITECTURES}
    return SharedStart(encoder_state, decoders, settings=dict.fromkeys(ARCHITECTURES, encoder))


def seconds_per_step(
    kind, start: SharedStart, source, target, steps: int, threads: int, deterministic=True, device="cpu"
) -> float:
    """Seconds per step of a ``steps``-step run (the loop's own clock: model copies and data
    set-up excluded)."""
    architecture, recipe = kind
    config = FULL.uda.replace(steps=steps, warmup_steps=1, threads=threads, progress=False, device=device)
    config = config.replace(deterministic=deterministic)
    model = start.model(architecture)
    if architecture == "panoptic" and recipe == "source-only":
        _, log = train_panoptic_supervised(model, source, config)
    elif architecture == "panoptic":
        _, log = train_panoptic_uda(model, source, target, config)
    elif recipe == "source-only":
        _, log = train_source_only(model, source, config)
    else:
        _, log = train_uda(model, source, target, config, method="mic" if recipe == MIC else "dacs")
    return log["seconds"] / steps


def full_run_steps(settings: BenchSettings = FULL) -> dict[tuple[str, str], int]:
    """Training steps of a run per kind (every model it trains, warm-ups included; a pre-training
    by the run counts as source-only SegFormer steps)."""
    per_kind = dict.fromkeys(KINDS, 0)
    for spec in dict.fromkeys(replace(s, snapshots=()) for s in with_warm_starts(settings, run_specs(settings))):
        recipe = "source-only" if spec.recipe == "oracle" else spec.recipe
        per_kind[(spec.architecture, recipe)] += recipe_config(settings, spec.recipe).steps * spec.length
    if settings.pretrain_from_scratch:
        per_kind[("segformer", "source-only")] += settings.pretrain.steps
    return per_kind


@functools.cache
def _worker_inputs():
    """The start and data a worker process trains from, loaded and rendered once per process."""
    return SharedStart.load(shipped_path(SHIPPED_START)), data("appearance-a", 64), data("target", 64)


def _uda_run(steps: int, threads: int, seed: int) -> float:
    """One UDA run in a worker process (what a pool worker does); its wall seconds."""
    start, source, target = _worker_inputs()
    config = FULL.uda.replace(steps=steps, warmup_steps=1, threads=threads, progress=False, seed=seed)
    began = time.perf_counter()
    train_uda(start.model("segformer"), source, target, config)
    return time.perf_counter() - began


def side_by_side(steps: int, threads: int, rounds: int) -> None:
    """Wall time of two UDA runs: one after the other on ``threads`` threads, and at once in two
    one-thread processes; alternating rounds, processes started before the clock."""
    context = multiprocessing.get_context("spawn")
    sequential, parallel = [], []
    with context.Pool(2) as pool:
        pool.starmap(_uda_run, [(2, 1, 0), (2, 1, 1)])  # each worker imports and renders before the clock
        for r in range(rounds):
            began = time.perf_counter()
            pool.apply(_uda_run, (steps, threads, 0))
            pool.apply(_uda_run, (steps, threads, 1))
            sequential.append(time.perf_counter() - began)
            began = time.perf_counter()
            pool.starmap(_uda_run, [(steps, 1, 0), (steps, 1, 1)])
            parallel.append(time.perf_counter() - began)
            print(f"round {r + 1}: one after the other {sequential[-1]:.1f} s, side by side {parallel[-1]:.1f} s")
    s, p = statistics.median(sequential), statistics.median(parallel)
    print(
        f"two {steps}-step UDA runs: one after the other ({threads} threads) {s:.1f} s, "
        f"side by side {p:.1f} s: {s / p:.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30, help="counted steps per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--compare-deterministic", action="store_true", help="also time deterministic kernels off")
    parser.add_argument("--side-by-side", action="store_true", help="also time two UDA runs at once, one thread each")
    parser.add_argument("--sizes", default="small", help="comma-separated bench --size presets: small, large")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    args = parser.parse_args()
    sizes = args.sizes.split(",")
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        parser.error(f"--sizes: unknown {unknown}; choose from {', '.join(SIZES)}")
    shipped = SharedStart.load(shipped_path(SHIPPED_START))
    starts = {size: shipped if size == "small" else untrained_start(SIZES[size].encoder) for size in sizes}
    source, target = data("appearance-a", args.images, True), data("target", args.images, True)
    modes = (True, False) if args.compare_deterministic else (True,)
    results: dict[tuple, list[float]] = {}
    for r in range(args.rounds):
        for kind in KINDS:
            for size in sizes:
                for deterministic in modes:
                    s = seconds_per_step(
                        kind, starts[size], source, target, args.steps, args.threads, deterministic, args.device
                    )
                    results.setdefault((size, kind, deterministic), []).append(s)
                    name = f"{size} {' '.join(kind)}"
                    print(f"round {r + 1} {name:28s} deterministic={deterministic!s:5s} {s:.3f} s/step", flush=True)
    print(
        f"\n1-min load average now {os.getloadavg()[0]:.2f}; torch {torch.__version__}, {args.threads} threads, "
        f"device {args.device}" + (f" ({torch.cuda.get_device_name(args.device)})" if "cuda" in args.device else "")
    )
    medians = {key: statistics.median(v) for key, v in results.items()}
    for size in sizes:
        print(f"\n{size} ({SIZES[size].name} preset)\n")
        print("| kind | s/step |" + (" deterministic off | ratio |" if args.compare_deterministic else ""))
        print("|---|---:|" + ("---:|---:|" if args.compare_deterministic else ""))
        for kind in KINDS:
            on = medians[(size, kind, True)]
            off = medians.get((size, kind, False))
            extra = f" {off:.3f} | {off / on:.2f} |" if off is not None else ""
            print(f"| {' '.join(kind)} | {on:.3f} |{extra}")
        steps = full_run_steps(SIZES[size])
        total = sum(steps[k] * medians[(size, k, True)] for k in KINDS)
        listing = ", ".join(f"{' '.join(k)} {v}" for k, v in steps.items() if v)
        print(f"\n{size}: the run's training, one model at a time ({listing} steps): {total / 60:.0f} min")
    if len(sizes) > 1:
        first, *others = sizes
        for other in others:
            ratios = ", ".join(
                f"{' '.join(k)} {medians[(other, k, True)] / medians[(first, k, True)]:.2f}x" for k in KINDS
            )
            print(f"{other} against {first}, s/step: {ratios}")
    if args.side_by_side:
        side_by_side(args.steps * 3, args.threads, args.rounds)


if __name__ == "__main__":
    main()

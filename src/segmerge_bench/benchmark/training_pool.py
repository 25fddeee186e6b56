"""Training a run's models several at a time, each in its own process on one torch thread.

A tiny model's training step does not keep two cores busy: one thread runs a UDA step in
about 1.4x the time two threads take, so two models trained side by side, one thread each,
finish sooner than the same two trained one after the other on two threads. The pool
trains, ahead of the run that reads them, every model the cache lacks; the run then finds
them in the cache. Models whose UDA run starts from a source-only model
(``BenchSettings.uda_warm_start``) wait for it: the pool trains in waves, the models that
start from the shared start first. A model trained on one thread may differ from one
trained on two in the last bits of its floats (the order of summation differs); the cache
does not tell them apart.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from segmerge_bench.benchmark.models import DataCache, ModelZoo, TrainedModelSpec
from segmerge_bench.benchmark.settings import BenchSettings
from segmerge_bench.benchmark.store import ArtifactStore


def train_ahead(
    zoo: ModelZoo, specs: Iterable[TrainedModelSpec], processes: int, log: Callable[[str], None] = print
) -> list[str]:
    """Train the ``specs`` the cache lacks (and the source-only models they start from), up to
    ``processes`` at a time; returns the names trained. With fewer than 2 processes it trains
    nothing: the run then trains each model when it first needs it."""
    if processes < 2:
        return []
    wanted: dict[TrainedModelSpec, None] = {}
    for spec in specs:
        warm = zoo.warm_start(spec)
        if warm is not None:
            wanted[warm] = None
        wanted[spec] = None
    missing = [spec for spec in wanted if not zoo.path(spec, retrain=True).exists()]
    waves = [
        [spec for spec in missing if zoo.warm_start(spec) is None],
        [spec for spec in missing if zoo.warm_start(spec) is not None],
    ]
    trained: list[str] = []
    if not missing:
        return trained
    for spec in missing:
        zoo.data_for(spec)  # rendered once here, not by every process at once
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(processes, len(missing)), mp_context=context) as pool:
        for wave in waves:
            jobs = [(zoo.settings, zoo.store.root, spec) for spec in wave]
            for name, seconds in pool.map(_train, *zip(*jobs, strict=True)) if jobs else ():
                log(f"  trained {name} ({seconds:.0f} s, one thread)")
                trained.append(name)
    zoo.trained.extend(trained)
    return trained


def _train(settings: BenchSettings, root: Path, spec: TrainedModelSpec) -> tuple[str, float]:
    """One model, in a worker process: the run's own zoo over the same cache, on one thread."""
    store = ArtifactStore(root)
    zoo = ModelZoo(settings, store, DataCache(settings, store, progress=False), progress=False, threads=1)
    zoo.path(spec)
    return spec.name, zoo.training_seconds.get(spec.name, 0.0)

"""Training a run's models several at a time, each in its own process on one torch thread.

A tiny model's training step does not keep two cores busy: one thread runs a UDA step in
about 1.4x the time two threads take, so two models trained side by side, one thread each,
finish sooner than the same two trained one after the other on two threads. The pool
trains, ahead of the run that reads them, every model the cache lacks; the run then finds
them in the cache. A UDA run that starts from a source-only model
(``BenchSettings.uda_warm_start``) waits for it. A model trained on one thread may differ from one
trained on two in the last bits of its floats (the order of summation differs); the cache
does not tell them apart.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import replace
from pathlib import Path

from segmerge_bench.benchmark.models import DataCache, ModelZoo, TrainedModelSpec, with_warm_starts
from segmerge_bench.benchmark.settings import BenchSettings
from segmerge_bench.benchmark.store import ArtifactStore, remove_path


def train_ahead(
    zoo: ModelZoo, specs: Iterable[TrainedModelSpec], processes: int, log: Callable[[str], None] = print
) -> list[str]:
    """Train the ``specs`` the cache lacks (and the source-only models they start from), up to
    ``processes`` at a time, longest first; returns the names trained. With fewer than 2
    processes it trains nothing: the run then trains each model when it first needs it.

    A spec listed twice with different snapshots is one model, trained once with all of them;
    a cached model that lacks a snapshot asked for is trained again. A warm-started run is
    started as soon as its source-only model is done. If a training fails, the models already
    trained stay in the cache and the error is raised once the running ones have finished.
    """
    if processes < 2:
        return []
    wanted: dict[Path, TrainedModelSpec] = {}
    for spec in with_warm_starts(zoo.settings, specs):
        path = zoo.path(spec, retrain=True)
        if path in wanted:  # the same model: ask for every snapshot either listing wants
            spec = replace(spec, snapshots=tuple(sorted({*wanted[path].snapshots, *spec.snapshots})))
        wanted[path] = spec
    missing = {path: spec for path, spec in wanted.items() if not _cached(zoo, path, spec)}
    if not missing:
        return []
    where = "one torch thread each" if zoo.settings.device == "cpu" else f"on {zoo.settings.device}"
    log(f"training: {len(missing)} models the cache lacks, {processes} at a time ({where})")
    for spec in missing.values():
        zoo.data_for(spec)  # rendered once here, not by every process at once
    for path in missing:
        remove_path(path)  # a cached model without a snapshot asked for is trained again
    waiting = {path: zoo.path(warm, retrain=True) for path, spec in missing.items() if (warm := zoo.warm_start(spec))}
    trained: list[str] = []
    with worker_pool(min(processes, len(missing))) as pool:
        running: dict[Future, Path] = {}

        def submit_ready() -> None:
            ready = [path for path in missing if path not in running.values() and waiting.get(path) not in missing]
            for path in sorted(ready, key=lambda p: -_cost(zoo, missing[p])):
                running[pool.submit(_train, zoo.settings, zoo.store.root, missing[path])] = path

        submit_ready()
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                path = running.pop(future)
                if future.exception() is not None:  # raised once the running ones end; queued ones never start
                    for queued in running:
                        queued.cancel()
                    raise future.exception()
                name, seconds = future.result()
                where = "one thread" if zoo.settings.device == "cpu" else zoo.settings.device
                log(f"  trained {name} ({seconds:.0f} s, {where})")
                trained.append(name)
                del missing[path]
            submit_ready()
    zoo.trained.extend(trained)
    return trained


def worker_pool(processes: int) -> ProcessPoolExecutor:
    """``processes`` fresh interpreters (spawned: no torch state is forked) that end with the run.

    A run killed outright (SIGTERM, SIGKILL, a closed terminal) cannot shut its pool down; its
    workers would train on, unseen, for as long as their models take. Each worker watches its
    parent and exits when it is gone: what it was writing is a temporary file, never a model
    in the cache, so the next run trains that model again."""
    context = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(processes, mp_context=context, initializer=_exit_with, initargs=(os.getpid(),))


def _exit_with(parent: int, every: float = 1.0) -> None:
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-the-run", daemon=True).start()


def _cached(zoo: ModelZoo, path: Path, spec: TrainedModelSpec) -> bool:
    """The model and every snapshot ``spec`` asks for are in the cache."""
    return path.exists() and all(zoo.snapshot_path(spec, f, train=False).exists() for f in spec.snapshots)


def _cost(zoo: ModelZoo, spec: TrainedModelSpec) -> float:
    """A model's training time, roughly: its steps, a UDA step costing about twice a supervised one."""
    return zoo.config_for(spec).steps * (2.0 if spec.recipe not in ("source-only", "oracle") else 1.0)


def _train(settings: BenchSettings, root: Path, spec: TrainedModelSpec) -> tuple[str, float]:
    """One model, in a worker process: the run's own zoo over the same cache, on one thread."""
    store = ArtifactStore(root)
    zoo = ModelZoo(settings, store, DataCache(settings, store, progress=False), progress=False, threads=1)
    zoo.path(spec)
    return spec.name, zoo.training_seconds.get(spec.name, 0.0)

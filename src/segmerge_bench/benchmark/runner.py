"""``segmerge bench``: data -> shared start -> trained models -> merges -> scores -> report.

Stages are timed and reported; trained models and rendered data are cached under
``OUT/cache`` so that a rerun (another seed, a changed sweep) reuses what it can.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from segmerge_bench.benchmark.candidates import named_candidates, sweep_candidates
from segmerge_bench.benchmark.claims import CLAIMS
from segmerge_bench.benchmark.experiments import ClaimRun, run_claim, score_singles, scored_test
from segmerge_bench.benchmark.label_free import tune_claim
from segmerge_bench.benchmark.models import (
    SNAPSHOT_ROLES,
    DataCache,
    ModelZoo,
    TrainedModelSpec,
    oracle_spec,
    regime_paths,
    regime_specs,
    unshared_init_spec,
)
from segmerge_bench.benchmark.regime import (
    ADAPTED,
    ORACLE,
    SOURCE_ONLY,
    RegimeMeasures,
    longer_spec,
    measure_regime,
)
from segmerge_bench.benchmark.scoring import score, scoring_on
from segmerge_bench.benchmark.settings import BenchSettings
from segmerge_bench.benchmark.store import ArtifactStore
from segmerge_bench.benchmark.training_pool import train_ahead
from segmerge_bench.training.devices import usable_device

Log = Callable[[str], None]


@dataclass
class BenchResult:
    settings: dict
    runs: list[ClaimRun]
    timings: dict[str, float] = field(default_factory=dict)
    machine: dict = field(default_factory=dict)
    #: Paths of the checkpoints and merges of the first seed, for the evaluation report.
    first_seed_models: dict = field(default_factory=dict)
    #: The regime per regime and seed, measured before the merges (:mod:`.regime`).
    regimes: list[RegimeMeasures] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "settings": self.settings,
            "timings": self.timings,
            "machine": self.machine,
            "regimes": [m.to_dict() for m in self.regimes],
            "runs": [r.to_dict() for r in self.runs],
        }

    @classmethod
    def from_dict(cls, data: dict) -> BenchResult:
        return cls(
            data["settings"],
            [ClaimRun.from_dict(r) for r in data["runs"]],
            data.get("timings", {}),
            data.get("machine", {}),
            regimes=[RegimeMeasures.from_dict(m) for m in data.get("regimes", [])],
        )


def machine(device: str = "cpu") -> dict:
    """What the run ran on (``device``: where it trained and scored), for the report."""
    where = torch.device(device)
    gpu = {"gpu": torch.cuda.get_device_name(where)} if where.type == "cuda" else {}
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": device,
        **gpu,
    }


def settings_dict(settings: BenchSettings) -> dict:
    return json.loads(json.dumps(asdict(settings), default=str))


class StageTimer:
    """Seconds spent per stage (data, pre-training, training, scoring, merging and scoring)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start


def run_benchmark(settings: BenchSettings, out: Path, log: Log = print, progress: bool = True) -> BenchResult:
    """Train what the cache lacks, measure the regime, merge and score every claim on every seed
    (models trained and scored on ``settings.device``; merges are made on the CPU)."""
    usable_device(settings.device)
    with scoring_on(settings.device):
        return _run(settings, Path(out), log, progress)


def _run(settings: BenchSettings, out: Path, log: Log, progress: bool) -> BenchResult:
    store = ArtifactStore(out / "cache")
    data = DataCache(settings, store, progress)
    zoo = ModelZoo(settings, store, data, progress)
    stage = StageTimer()
    began = time.perf_counter()

    log(f"data: rendering (or loading) the target test split, {settings.test_images} images")
    with stage("data"):
        test = data.target_test()
    log("shared start: " + ("pre-training the MiT encoder" if settings.pretrain_from_scratch else "shipped encoder"))
    with stage("pre-training"):
        zoo.start()

    pooled: list[str] = []
    if settings.training_processes > 1:
        with stage("training"):
            pooled = train_ahead(zoo, run_specs(settings), settings.training_processes, log)
        store.misses += len(pooled)

    runs: list[ClaimRun] = []
    regimes: list[RegimeMeasures] = []
    first_models: dict = {}
    for seed in settings.seeds:
        log(f"seed {seed}: training the target oracle")
        with stage("training"):
            oracle_path = zoo.path(oracle_spec(seed))
        with stage("scoring"):
            oracle = score([oracle_path], test)
        for regime in settings.regimes:
            claims, roles = run_claims(settings), run_roles(settings)
            specs = {role: spec for role, spec in regime_specs(regime, seed).items() if role in roles}
            log(f"seed {seed}, regime {regime}: training {len(roles)} models")
            with stage("training"):
                paths = regime_paths(zoo, regime, seed, sorted(roles))
            check_convergence = checks_convergence(settings, seed)
            log(
                f"seed {seed}, regime {regime}: measuring the regime"
                + (" (with twice-as-long runs of the oracle and the adapted models)" if check_convergence else "")
            )
            with stage("regime"):
                regimes.append(
                    measure_regime(
                        zoo,
                        regime,
                        seed,
                        {**paths, ORACLE: oracle_path},
                        {ORACLE: oracle_spec(seed), **specs} if check_convergence else {},
                        claims,
                        test,
                        out / "merges" / f"seed{seed}" / regime / "regime",
                        settings.barrier_points,
                        known={oracle_path: oracle},
                    )
                )
            # the models the regime scored alone are not scored again for the claims
            measured: dict = {
                (paths[role], "mIoU", None): {"mIoU": value}
                for role, value in regimes[-1].singles.items()
                if role in paths
            }
            for claim in claims:
                models = [paths[role] for role in claim.roles]
                scored = scored_test(claim, regime, test)  # a panoptic claim: its source's classes
                with stage("scoring"):
                    singles = score_singles(claim, models, scored, measured)
                    upper = oracle if scored is test else score([oracle_path], scored)
                candidates = len(named_candidates()) + len(sweep_candidates(settings.sweep, claim.anchors))
                log(f"  {claim.name}: {candidates} merges")
                workdir = out / "merges" / f"seed{seed}" / regime / claim.name
                with stage("merging and scoring"):
                    run, kept = run_claim(
                        claim,
                        regime,
                        seed,
                        models,
                        singles,
                        upper,
                        scored,
                        settings.sweep,
                        workdir,
                    )
                if settings.tune is not None:
                    with stage("label-free tuning"):
                        run.label_free = tune_claim(
                            claim,
                            models,
                            run.singles,
                            data.target_train().unlabelled(),
                            scored,
                            workdir / "tune",
                            settings.tune,
                            seed,
                            run.merges,
                        )
                runs.append(run)
                if seed == settings.seeds[0]:
                    first_models[(regime, claim.name)] = {
                        "models": models,
                        "merges": kept,
                        "oracle": oracle_path,
                        "metric": claim.metric,
                        "classes": run.class_count,
                    }
            if has_control(settings, seed):
                log("  control: a SegFormer adapted from B with another decoder init, soup with UDA A")
                with stage("training"):
                    other = zoo.path(unshared_init_spec(regime, seed))
                with stage("merging and scoring"):
                    control = _unshared_soup(paths["UDA A"], other, test, out / "merges" / "control" / regime)
                for run in runs:
                    if run.regime == regime and run.seed == seed and run.claim == "same-architecture":
                        run.controls.update(control)
    timings = {**stage.seconds, "total": time.perf_counter() - began}
    # the models' own training time summed, this run's and that of models an interrupted run left in
    # the cache (side by side, it exceeds the training stage's wall time)
    timings["model training (summed)"] = sum(zoo.training_seconds.values())
    late = [name for name in zoo.trained if name not in pooled]
    if pooled and late:
        log(f"warning: trained one at a time after the pool, which run_specs did not list: {', '.join(late)}")
    log(f"cache: {store.hits} artefacts reused, {store.misses} made")
    return BenchResult(
        settings_dict(settings),
        runs,
        {k: round(v, 1) for k, v in timings.items()},
        machine(settings.device),
        first_models,
        regimes,
    )


def run_claims(settings: BenchSettings) -> list:
    return [c for c in CLAIMS if c.name in settings.claims]


def run_roles(settings: BenchSettings) -> set[str]:
    """The roles a run trains per regime and seed: its claims' models and those the regime's measures read."""
    return {role for c in run_claims(settings) for role in c.roles} | {*SOURCE_ONLY, *ADAPTED}


def checks_convergence(settings: BenchSettings, seed: int) -> bool:
    return seed in settings.seeds[: settings.convergence_seeds]


def has_control(settings: BenchSettings, seed: int) -> bool:
    return settings.unshared_init_control and seed == settings.seeds[0]


def run_specs(settings: BenchSettings) -> list[TrainedModelSpec]:
    """Every model a run with ``settings`` trains: per seed the oracle, per regime the models its
    claims and the regime's measures read, the first seed's twice-as-long runs and control
    (without the source-only runs UDA starts from: :func:`~.models.with_warm_starts` adds them)."""
    roles = run_roles(settings)
    specs = []
    for seed in settings.seeds:
        specs.append(oracle_spec(seed))
        for regime in settings.regimes:
            by_role = regime_specs(regime, seed)
            specs += [by_role[role] for role in sorted(roles) if role in by_role]
            specs += [by_role[of] for role, (of, _) in SNAPSHOT_ROLES.items() if role in roles]
            if checks_convergence(settings, seed):
                specs += [longer_spec(spec) for spec in (oracle_spec(seed), *(by_role[role] for role in ADAPTED))]
            if has_control(settings, seed):
                specs.append(unshared_init_spec(regime, seed))
    return list(dict.fromkeys(specs))


def _unshared_soup(a: Path, b: Path, test, workdir: Path) -> dict[str, float]:
    from segmerge import api

    workdir.mkdir(parents=True, exist_ok=True)
    output = workdir / "soup-unshared-init"
    api.merge_to_file([str(a), str(b)], output=output, overwrite=True, method="linear")
    return {
        "model B alone (other decoder init)": score([b], test),
        "uniform soup, decoder inits differ": score([output], test),
    }

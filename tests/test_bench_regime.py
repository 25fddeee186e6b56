"""The regime's preconditions: the arithmetic behind each verdict, on hand-built measurements."""

import json
import math
import os
import time
from pathlib import Path

import pytest
import torch

from segmerge_bench.benchmark.regime import (
    RegimeMeasures,
    barrier_drop,
    closure,
    labelled_classes,
    preconditions,
    regime_table,
)


def _measures(seed, oracle=60.0, so=(33.0, 36.0), uda=(48.0, 50.0), longer=None, barrier=None):
    singles = {
        "oracle": oracle,
        "source-only A": so[0],
        "source-only B": so[1],
        "UDA A": uda[0],
        "UDA B": uda[1],
    }
    return RegimeMeasures(
        "appearance",
        seed,
        singles,
        longer=longer or {},
        pseudo={role: {"coverage": 0.6, "accuracy": 0.9} for role in ("UDA A", "UDA B")},
        barriers={"UDA A + UDA B": {"head of UDA A": barrier or [48, 49, 50, 51, 50, 50, 50, 50, 50, 50, 50]}},
    )


def _verdicts(measures):
    return {c.name: c.passed for c in preconditions(measures)}


def test_closure_and_barrier_drop():
    assert closure(50, 30, 60) == pytest.approx(2 / 3)
    assert math.isnan(closure(50, 60, 60))  # no gap to close
    assert barrier_drop([40, 45, 50]) == 0
    assert barrier_drop([40, 30, 50]) == 10  # below the weaker endpoint
    assert barrier_drop([40, 42, 39.5, 50]) == 0.5


def test_a_regime_like_the_fields_passes_every_precondition():
    measures = [_measures(0, longer={"oracle": 60.5, "UDA A": 48.2, "UDA B": 50.9}), _measures(1)]
    assert _verdicts(measures) == {
        "converged": True,
        "realistic gap": True,
        "UDA adapts": True,
        "one basin: UDA A + UDA B": True,
    }


def test_each_precondition_fails_on_its_own_symptom():
    undertrained = _measures(0, longer={"oracle": 63.0, "UDA A": 48.0, "UDA B": 50.0})
    assert not _verdicts([undertrained])["converged"]
    wide_gap = _measures(0, so=(20.0, 24.0), uda=(40.0, 45.0))  # 0.4 of the oracle
    assert not _verdicts([wide_gap])["realistic gap"]
    weak_uda = _measures(0, uda=(38.0, 50.0))  # A closes 5/27 of its gap
    assert not _verdicts([weak_uda])["UDA adapts"]
    barrier = _measures(0, barrier=[48, 40, 30, 35, 50, 50, 50, 50, 50, 50, 50])
    assert not _verdicts([barrier])["one basin: UDA A + UDA B"]


def test_a_source_that_leaves_classes_out_is_measured_over_the_classes_it_labels():
    from segmerge.labels import SYNTHIA_16_TRAIN_IDS

    # source B labels SYNTHIA's 16 classes, as SYNTHIA does, and is scored over them (mIoU16)
    assert labelled_classes("appearance-b") == SYNTHIA_16_TRAIN_IDS
    assert labelled_classes("appearance-a") is None and labelled_classes("classes-b") is None
    # over 19 classes UDA B closes 1/24 of its gap; over the 16 B labels, 14/26
    measures = _measures(0, uda=(48.0, 37.0))
    assert not _verdicts([measures])["UDA adapts"]
    measures.labelled = {"UDA B": {"oracle": 64.0, "source-only": 38.0, "adapted": 52.0, "classes": 16}}
    check = next(c for c in preconditions([measures]) if c.name == "UDA adapts")
    assert check.passed and "UDA B closes 54% over the 16 classes its source labels" in check.measured
    assert "UDA A closes 56% (" in check.measured  # A labels every class: scored over 19
    measures.labelled["UDA B"]["adapted"] = 40.0  # 2/26
    assert not _verdicts([measures])["UDA adapts"]
    assert RegimeMeasures.from_dict(json.loads(json.dumps(measures.to_dict()))) == measures


def test_preconditions_hold_on_the_mean_over_seeds_and_round_trip():
    # one seed's gap is too wide, the other's fine: the mean (0.6) decides
    measures = [_measures(0, so=(26.0, 28.0)), _measures(1, so=(40.0, 44.0))]
    assert _verdicts(measures)["realistic gap"]
    again = [RegimeMeasures.from_dict(json.loads(json.dumps(m.to_dict()))) for m in measures]
    assert again == measures
    table = regime_table(measures)
    assert "appearance" in table and "36.0 ± 11.3" in table  # source-only B: 28 and 44


def test_the_zoo_saves_checkpoints_along_a_run_and_reuses_them(tmp_path):
    from dataclasses import replace

    from segmerge_bench.benchmark.models import DataCache, ModelZoo, TrainedModelSpec
    from segmerge_bench.benchmark.settings import QUICK
    from segmerge_bench.benchmark.store import ArtifactStore
    from segmerge_bench.training import TrainConfig

    settings = replace(
        QUICK,
        source_images=8,
        target_images=8,
        source_only=TrainConfig(steps=4, batch_size=2, warmup_steps=1, threads=1, progress=False),
    )
    store = ArtifactStore(tmp_path)
    zoo = ModelZoo(settings, store, DataCache(settings, store, progress=False), progress=False)
    spec = TrainedModelSpec("segformer", "source-only", "appearance-a", 0, snapshots=(0.5,))
    final = zoo.path(spec)
    half = zoo.snapshot_path(spec, 0.5)
    assert half != final and half.name.startswith("segformer-source-only-appearance-a-seed0-step2")
    assert zoo.trained == [spec.name]  # one run gave both
    # a later run resuming from the cache trains nothing, yet knows what the model cost to train
    resumed = ModelZoo(settings, store, zoo.data, progress=False)
    assert resumed.path(spec) == final and resumed.trained == []
    assert resumed.training_seconds == zoo.training_seconds and zoo.training_seconds[spec.name] > 0
    assert zoo.snapshot_path(spec, 0.5) == half and zoo.trained == [spec.name]
    longer = replace(spec, length=2)
    assert zoo.config_for(longer).steps == 8 and longer.name.endswith("-x2-seed0")
    assert zoo.path(longer) != final
    # a snapshot the run did not save: the run is redone once, saving it
    quarter = zoo.snapshot_path(spec, 0.25)
    assert quarter.exists() and zoo.trained.count(spec.name) == 2


@pytest.mark.parametrize("architecture", ["segformer", "panoptic"])
def test_a_warm_started_uda_run_starts_from_its_source_only_model(tmp_path, architecture):
    from dataclasses import replace

    from segmerge_bench.benchmark.models import DataCache, ModelZoo, TrainedModelSpec
    from segmerge_bench.benchmark.settings import QUICK
    from segmerge_bench.benchmark.store import ArtifactStore
    from segmerge_bench.training import TrainConfig
    from segmerge_bench.zoo.models import load_model

    tiny = TrainConfig(steps=3, batch_size=2, warmup_steps=1, threads=1, progress=False)
    settings = replace(
        QUICK,
        source_images=6,
        target_images=6,
        source_only=tiny.replace(lr=1e-2),
        uda=tiny.replace(lr=1e-9, steps=1),  # the UDA run leaves its model where it started
        uda_warm_start=True,
    )
    store = ArtifactStore(tmp_path / "warm")
    zoo = ModelZoo(settings, store, DataCache(settings, store, progress=False), progress=False)
    uda = TrainedModelSpec(architecture, "uda", "appearance-b", 0)
    adapted = dict(load_model(zoo.path(uda)).named_parameters())  # running statistics move at any rate
    warm = zoo.warm_start(uda)
    assert warm == TrainedModelSpec(architecture, "source-only", "appearance-b", 0)
    assert zoo.trained == [warm.name, uda.name]  # the source-only model first, then UDA from it
    source_only = dict(load_model(zoo.path(warm)).named_parameters())
    start = dict(zoo.start().model(architecture).named_parameters())
    moved = [k for k in start if not torch.equal(start[k], source_only[k])]
    assert moved and all(torch.allclose(adapted[k], source_only[k], atol=1e-6) for k in moved)
    assert zoo.warm_start(replace(uda, length=2)) == replace(warm, length=2)  # a longer run warms up longer
    assert zoo.warm_start(warm) is None
    cold = ModelZoo(replace(settings, uda_warm_start=False), store, zoo.data, progress=False)
    assert cold.warm_start(uda) is None and cold.path(uda, retrain=True) != zoo.path(uda)


def test_the_full_runs_spread_and_preconditions_travel_with_the_shipped_models(tmp_path):
    from segmerge_bench.benchmark.experiments import ClaimRun, ScoredMerge
    from segmerge_bench.benchmark.runner import BenchResult
    from segmerge_bench.benchmark.shipping import full_run_numbers

    def run(seed, best, default):
        merges = [
            ScoredMerge("uniform soup", "named", 0, {}, best - 1),
            ScoredMerge("layer-wise (default)", "named", 0, {}, default),
        ]
        return ClaimRun("same-architecture", "appearance", seed, ["a", "b"], [best, best - 2], best + 1, 60, merges)

    result = BenchResult({"seeds": [3, 4]}, [run(3, 40, 42), run(4, 44, 43)], regimes=[_measures(3), _measures(4)])
    assert full_run_numbers(tmp_path) == {}  # no report: nothing to carry
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "bench.json").write_text(json.dumps(result.to_dict()))
    numbers = full_run_numbers(tmp_path)
    same = numbers["claims"]["same-architecture"]["appearance"]
    assert same["gains_per_seed"] == [2.0, -1.0] and same["mean"]["gain"] == 0.5
    assert same["sd"]["gain"] == pytest.approx(2.12, abs=0.01)
    assert {c["name"] for c in numbers["preconditions"]} >= {"realistic gap", "UDA adapts"}


def test_confident_pixels_counts_coverage_and_accuracy_over_labelled_pixels():
    import torch

    from segmerge_bench.benchmark.regime import confident_pixels

    probabilities = torch.tensor([[0.9, 0.1], [0.3, 0.7], [0.55, 0.45], [0.95, 0.05]]).T.reshape(1, 2, 2, 2)
    labels = torch.tensor([[[0, 0], [0, 255]]])  # the last pixel is ignored
    # above 0.6: pixels 0 (class 0, right) and 1 (class 1, wrong); pixel 2 is below; pixel 3 unlabelled
    assert confident_pixels([(probabilities, labels)], 0.6) == {"coverage": 2 / 3, "accuracy": 0.5}


def test_the_pool_trains_what_the_cache_lacks_side_by_side_and_the_run_reuses_it(tmp_path):
    from dataclasses import replace

    from segmerge_bench.benchmark.models import DataCache, ModelZoo, TrainedModelSpec, oracle_spec
    from segmerge_bench.benchmark.settings import QUICK
    from segmerge_bench.benchmark.store import ArtifactStore
    from segmerge_bench.benchmark.training_pool import train_ahead
    from segmerge_bench.training import TrainConfig

    tiny = TrainConfig(steps=2, batch_size=2, warmup_steps=1, threads=2, progress=False)
    settings = replace(
        QUICK, source_images=6, target_images=6, source_only=tiny, uda=tiny, oracle=tiny, uda_warm_start=True
    )
    store = ArtifactStore(tmp_path)
    zoo = ModelZoo(settings, store, DataCache(settings, store, progress=False), progress=False)
    uda = [TrainedModelSpec("segformer", "uda", source, 0) for source in ("appearance-a", "appearance-b")]
    halfway = replace(uda[0], snapshots=(0.5,))  # the same model as uda[0], asked with a snapshot
    specs = [*uda, halfway, oracle_spec(0)]
    assert train_ahead(zoo, specs, processes=1) == []  # one process: the run trains on demand
    lines: list[str] = []
    trained = train_ahead(zoo, specs, processes=2, log=lines.append)
    warm = [zoo.warm_start(spec) for spec in uda]
    expected = {s.name for s in [*uda, oracle_spec(0), *warm]}
    assert sorted(trained) == sorted(expected) and len(lines) == 1 + 5  # each model once
    assert all(trained.index(w.name) < trained.index(u.name) for w, u in zip(warm, uda, strict=True))
    assert zoo.snapshot_path(halfway, 0.5, train=False).exists()
    resumed = ModelZoo(settings, store, zoo.data, progress=False)
    for spec in specs:
        resumed.path(spec)
    # the resumed run knows what every model cost, the source-only runs UDA started from included
    assert resumed.trained == [] and set(resumed.training_seconds) == expected
    assert train_ahead(zoo, specs, processes=2) == []
    # a cached model without a snapshot now asked for is trained again, with it
    quarter = replace(uda[1], snapshots=(0.25,))
    assert train_ahead(zoo, [quarter], processes=2) == [uda[1].name]
    assert zoo.snapshot_path(quarter, 0.25, train=False).exists()


def test_run_specs_lists_every_model_a_full_run_trains_once():
    from segmerge_bench.benchmark.models import oracle_spec, regime_specs, unshared_init_spec, with_warm_starts
    from segmerge_bench.benchmark.regime import CURVE_FRACTIONS
    from segmerge_bench.benchmark.runner import run_specs
    from segmerge_bench.benchmark.settings import FULL

    specs = run_specs(FULL)
    assert len(specs) == len(set(specs))
    first, *others = FULL.seeds
    names = {spec.name for spec in specs}
    for seed in FULL.seeds:
        assert oracle_spec(seed) in specs
        for regime in FULL.regimes:
            assert {s.name for s in regime_specs(regime, seed).values()} <= names
    longer = [spec for spec in specs if spec.length == 2]
    assert {spec.seed for spec in longer} == {first} and all(s.snapshots == CURVE_FRACTIONS for s in longer)
    assert len(longer) == 1 + 2 * len(FULL.regimes)  # the oracle, and each regime's two adapted models
    assert unshared_init_spec(FULL.regimes[0], first) in specs
    # with the source-only runs UDA starts from: twice as long for the twice-as-long runs
    everything = with_warm_starts(FULL, specs)
    warm = [spec for spec in everything if spec not in specs]
    assert {(s.architecture, s.recipe) for s in warm} >= {("daformer", "source-only"), ("panoptic", "source-only")}
    assert {s.length for s in warm if s.recipe == "source-only"} == {1, 2} and len(everything) == len(set(everything))


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if entry.name.isdigit() and int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc")
def test_a_run_killed_outright_leaves_no_worker_training_on():
    """`segmerge bench` killed by SIGKILL (or SIGTERM) cannot shut its pool down: its workers
    must notice and stop, not train on unseen for as long as their models take."""
    import signal
    import subprocess
    import sys

    run = (
        "import time\n"
        "from segmerge_bench.benchmark.training_pool import worker_pool\n"
        "pool = worker_pool(1)\n"
        "pool.submit(time.sleep, 120)\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", run])
    try:
        deadline = time.monotonic() + 60
        workers: list[int] = []
        while not workers and time.monotonic() < deadline:
            time.sleep(0.2)
            workers = [p for p in _children(parent.pid) if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]
        assert workers, "the pool started no worker"
        time.sleep(2)  # the worker has imported and runs its task
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 15
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(w) for w in workers)
    finally:
        for pid in [parent.pid, *workers]:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

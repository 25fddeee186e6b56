"""The built-in benchmark: its bookkeeping on hand-built runs, its cache, and ``bench --quick`` end to end."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from segmerge.cli.app import app
from segmerge_bench.benchmark.candidates import DEFAULT, SOUP, sweep_candidates
from segmerge_bench.benchmark.experiments import ClaimRun, ScoredMerge
from segmerge_bench.benchmark.settings import QUICK
from segmerge_bench.benchmark.store import ArtifactStore, cache_key
from segmerge_bench.benchmark.summary import claims_object, markdown_tables


def _run(claim, regime, seed, singles, soup, default, ensemble, swept=()):
    merges = [
        ScoredMerge(SOUP, "named", 0, {"method": "linear"}, soup),
        ScoredMerge(DEFAULT, "named", 0, {"method": "layerwise"}, default),
    ]
    merges += [ScoredMerge(name, "sweep", 0, {}, miou) for name, miou in swept]
    return ClaimRun(claim, regime, seed, ["a", "b"], list(singles), ensemble, 60.0, merges)


def test_claims_object_compares_the_default_merge_with_the_best_single_model_per_seed():
    runs = [
        _run("same-architecture", "appearance", 0, (40, 44), 45, 47, 50, [("x", 49)]),
        _run("same-architecture", "appearance", 1, (46, 42), 44, 45, 51, [("x", 44)]),
        _run("same-architecture", "classes", 0, (30, 31), 29, 28, 33, [("x", 30)]),
    ]
    claims = claims_object(runs)["claims"]
    assert len(claims) == 1
    claim = claims[0]
    assert claim["regime"] == "appearance" and claim["paper_gain"] == 2.6
    assert claim["best_single"] == 45.0  # the better model of each seed: 44 and 46
    assert claim["layerwise"] == 46.0 and claim["gain"] == 1.0
    assert claim["sweep_best_with_target_labels"] == 47.0  # per seed the best of all merges: 49 and 45 (default)
    assert claim["by_regime"]["classes"]["gain"] == -3.0  # losses are reported as they are
    table = markdown_tables(runs)
    assert "46.0 ± 1.4" in table and "sweep best (chosen with target labels)" in table


def test_round_trip_of_a_run_through_json():
    run = _run("different-architecture", "classes", 2, (1, 2), 3, 4, 5, [("y", 6)])
    run.merges[0].anchor_weights = [(0.0, 0.5), (1.0, 0.75)]
    again = ClaimRun.from_dict(json.loads(json.dumps(run.to_dict())))
    assert again == run


def test_sweep_covers_the_grid_the_heat_map_needs():
    names = [c.name for c in sweep_candidates(QUICK.sweep)]
    assert len(names) == len(set(names))
    full = sweep_candidates(__import__("segmerge_bench.benchmark", fromlist=["FULL"]).FULL.sweep)
    grid = {(c.ramp_start, c.end_weight) for c in full if c.options.get("ramp") == "linear" and c.anchor == 0}
    assert len(grid) >= 4


def test_store_reuses_what_it_made_and_leaves_nothing_when_making_fails(tmp_path):
    store = ArtifactStore(tmp_path)
    path = store.path("models", "m", cache_key(steps=3))
    assert cache_key(steps=3) == cache_key(steps=3) != cache_key(steps=4)

    def fail(temporary):
        temporary.write_text("half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        store.produce(path, fail)
    assert list((tmp_path / "models").iterdir()) == []
    store.produce(path, lambda temporary: temporary.write_text("done"))
    store.produce(path, lambda temporary: pytest.fail("a cached artefact was made again"))
    assert path.read_text() == "done" and (store.hits, store.misses) == (1, 2)


@pytest.mark.slow
def test_bench_quick_end_to_end_then_reuses_its_cache(tmp_path):
    runner = CliRunner()
    arguments = ["bench", "--quick", "--out", str(tmp_path), "--eval-reports", "--jobs", "2"]
    first = runner.invoke(app, arguments, catch_exceptions=False)
    assert first.exit_code == 0, first.output
    assert "2 at a time" in first.output and "trained segformer-uda-appearance-a-seed0" in first.output
    report = tmp_path / "report"
    for name in ("bench.md", "bench.json", "claims.json", "anchor_weights.png"):
        assert (report / name).is_file(), name
    evaluation = report / "evaluation" / "appearance" / "same-architecture"
    assert (evaluation / "results.md").is_file() and (evaluation / "qualitative.png").is_file()
    panoptic_report = (report / "evaluation" / "classes" / "semantic-to-panoptic" / "results.md").read_text()
    assert "PQ" in panoptic_report
    claims = json.loads((report / "claims.json").read_text())["claims"]
    assert [c["name"] for c in claims] == ["same-architecture", "different-architecture", "semantic-to-panoptic"]
    assert all(set(c["by_regime"]) == {"appearance", "classes"} for c in claims)
    panoptic = claims[-1]
    assert panoptic["metric"] == "PQ" and 0 <= panoptic["layerwise"] <= 100
    assert set(panoptic["details"]["layer-wise (default)"]) == {"PQ things", "PQ stuff", "mIoU"}

    again = runner.invoke(app, ["bench", "--quick", "--out", str(tmp_path), "--json"], catch_exceptions=False)
    assert again.exit_code == 0, again.output
    assert "0 made" in again.output
    assert json.loads(again.stdout)["claims"] == claims

    # exporting the run ships its own models (nothing trained again) and drops what an earlier export listed
    from segmerge_bench.benchmark.shipping import MANIFEST, export

    dest = tmp_path.parent / f"{tmp_path.name}-shipped"
    dest.mkdir()
    (dest / "old-model.pth").write_bytes(b"stale")
    (dest / "mine.txt").write_text("not the export's")
    (dest / MANIFEST).write_text(json.dumps({"regimes": {"classes": {"UDA A": "old-model.pth"}}, "oracle": None}))
    cached = sorted((tmp_path / "cache" / "models").iterdir())
    export(tmp_path, dest)
    assert sorted((tmp_path / "cache" / "models").iterdir()) == cached  # the quick run's models, none trained
    manifest = json.loads((dest / MANIFEST).read_text())
    assert set(manifest["regimes"]) == {"appearance", "classes"} and manifest["seed"] == 0
    assert not (dest / "old-model.pth").exists() and (dest / "mine.txt").exists()
    assert all((dest / name).exists() for models in manifest["regimes"].values() for name in models.values())


def test_label_free_rows_and_correlations_appear_when_the_runs_were_tuned():
    runs = [_run("different-architecture", "appearance", seed, (40, 44), 45, 46, 50, [("x", 47)]) for seed in (0, 1)]
    for run, (pick, learned, rho) in zip(runs, [(45.5, 47.0, 0.8), (44.5, 46.0, float("nan"))], strict=True):
        run.label_free = {
            "criterion": "agreement",
            "pick": "soup",
            "pick_score": pick,
            "learned_score": learned,
            "rank_correlation": {"agreement": rho, "entropy": -0.2},
        }
    claim = claims_object(runs)["claims"][0]
    assert claim["unsupervised_pick"] == 45.0 and claim["tuned"] == 46.5
    assert claim["rank_correlation"] == {"agreement": 0.8, "entropy": -0.2}  # NaN seeds left out
    table = markdown_tables(runs)
    assert "unsupervised pick (agreement, no target labels) | 45.0 ± 0.7" in table
    assert "agreement +0.80, entropy -0.20" in table


def test_more_jobs_than_cores_is_warned_about():
    from segmerge_bench.cli.bench import oversubscribed

    assert oversubscribed(2, 2) is None and oversubscribed(1, 8) is None and oversubscribed(4, None) is None
    warning = oversubscribed(4, 2)
    assert "--jobs 4" in warning and "2 CPU cores" in warning and "--jobs 2 or fewer" in warning


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--size", "medium"], "--size 'medium': choose small or large"),
        (["--quick", "--size", "large"], "leave out --size large"),
        (["--device", "gpu"], "not a device"),
        (["--device", "meta"], "the benchmark trains on cpu, cuda, mps"),
        pytest.param(
            ["--device", "cuda"],
            "sees no CUDA GPU",
            marks=pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA"),
        ),
    ],
)
def test_bench_refuses_a_size_or_device_it_cannot_run_before_writing_anything(tmp_path, arguments, message):
    out = tmp_path / "bench"
    result = CliRunner().invoke(app, ["bench", "--out", str(out), *arguments])
    assert result.exit_code != 0
    assert message in " ".join(result.output.split())
    assert not out.exists()


def test_the_large_preset_pretrains_a_wider_encoder_and_trains_four_times_as_long():
    from segmerge.errors import SegmergeError
    from segmerge_bench.benchmark.settings import FULL, LARGE, MIT_B0
    from segmerge_bench.zoo.models import build_model, encoder_of

    assert LARGE.encoder == MIT_B0 and LARGE.pretrain_from_scratch
    assert (LARGE.claims, LARGE.seeds, LARGE.sweep) == (FULL.claims, FULL.seeds, FULL.sweep)
    for recipe in ("source_only", "uda", "oracle"):
        large, full = getattr(LARGE, recipe), getattr(FULL, recipe)
        assert large.steps == 4 * full.steps and large.lr == full.lr
    assert LARGE.source_images == 4 * FULL.source_images
    for stage in ("pretrain", "pretrain_continued"):  # both pre-training stages, twice as long
        large, full = getattr(LARGE, stage), getattr(FULL, stage)
        assert large.steps == 2 * full.steps and large.lr == full.lr and large.seed == full.seed
    wide = sum(p.numel() for p in encoder_of(build_model("segformer", **MIT_B0)).parameters())
    assert 3.0e6 < wide < 3.6e6  # MiT-B0's encoder: 3.3M parameters
    with pytest.raises(SegmergeError, match="must be pre-trained by the run"):
        replace(FULL, encoder=MIT_B0)


def test_a_killed_writers_temporary_file_is_removed_and_a_live_ones_left(tmp_path):
    """A worker killed outright cannot remove what it was writing; the next write to the folder
    does, unless its writer still runs (another run sharing the cache) or runs on another machine."""
    import subprocess
    import sys

    from segmerge_bench.benchmark import store as store_module

    store = ArtifactStore(tmp_path)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        folder = tmp_path / "models"
        folder.mkdir()
        here = store_module._WRITER
        orphan = folder / f".uda-A-0123.pt.partial-{here}-{gone.stdout.strip()}"
        in_flight = folder / f".uda-B-4567.pt.partial-{here}-{running.pid}"
        elsewhere = folder / f".uda-A-0123.pt.partial-{here}x-{gone.stdout.strip()}"  # another machine's
        for temporary in (orphan, in_flight, elsewhere):
            temporary.write_bytes(b"half a checkpoint")
        store.produce(folder / "oracle-89ab.pt", lambda path: path.write_bytes(b"model"))
        assert not orphan.exists() and in_flight.exists() and elsewhere.exists()
        assert (folder / "oracle-89ab.pt").read_bytes() == b"model"
    finally:
        running.kill()
        running.wait()


def test_a_shipped_start_replaced_by_another_of_the_same_size_keys_its_models_apart(tmp_path, monkeypatch):
    """Two starts of one architecture have the same size; models fine-tuned from the old one must
    not be reused for the new one."""
    from segmerge_bench.benchmark import models
    from segmerge_bench.benchmark.models import DataCache, ModelZoo, regime_specs
    from segmerge_bench.training import SharedStart

    start = tmp_path / "shared_start.pt"
    SharedStart.load(models.shipped_path(models.SHIPPED_START)).save(start)
    size = start.stat().st_size
    monkeypatch.setattr(models, "shipped_path", lambda name: start)
    store = ArtifactStore(tmp_path / "cache")

    def model_path() -> Path:
        zoo = ModelZoo(QUICK, store, DataCache(QUICK, store, False), False)
        zoo.start()
        return zoo.path(regime_specs("appearance", 0)["UDA A"], retrain=True)

    before = model_path()
    assert model_path() == before  # the same start: the same models
    other = SharedStart.load(start)
    next(iter(other.encoder.values())).add_(0.01)  # another start, of the same size
    other.save(start)
    assert start.stat().st_size == size
    assert model_path() != before


def test_gpu_trained_models_are_cached_apart_and_cpu_keys_stay_as_they_were(tmp_path):
    """A GPU draws other dropout masks, so its models are other models; the CPU's keys carry no
    device (a cache made before there was one stays valid); which GPU does not matter."""
    from segmerge_bench.benchmark.models import DataCache, ModelZoo, _config_fields, regime_specs

    store = ArtifactStore(tmp_path)
    devices = ("cpu", "cuda", "cuda:1")
    zoos = [ModelZoo(replace(QUICK, device=d), store, DataCache(QUICK, store, False), False) for d in devices]
    spec = regime_specs("appearance", 0)["UDA A"]
    cpu, cuda, cuda1 = (zoo.path(spec, retrain=True) for zoo in zoos)
    assert cpu != cuda and cuda == cuda1
    assert [zoo.config_for(spec).device for zoo in zoos] == list(devices)
    assert "device" not in _config_fields(zoos[0].config_for(spec))


def test_editing_a_domain_keys_its_data_and_models_apart_and_leaves_the_others_alone(tmp_path, monkeypatch):
    """Domains are data: a source whose definition changed (here its camera) under the same name
    must not reuse the scenes and models its old definition drew."""
    from segmerge_bench.benchmark.models import DataCache, ModelZoo, oracle_spec, regime_specs
    from segmerge_bench.synthetic import domains

    store = ArtifactStore(tmp_path)

    def paths() -> tuple:
        data = DataCache(QUICK, store, False)
        rendered = [data.get(d, "train", 2).name for d in ("appearance-a", "appearance-b")]
        zoo = ModelZoo(QUICK, store, data, False)
        specs = [regime_specs("appearance", 0)[m] for m in ("source-only A", "source-only B", "UDA B")]
        models = [zoo.path(spec, retrain=True) for spec in (*specs, oracle_spec(0))]
        return sorted(p.name for p in store.root.joinpath("data").iterdir()), rendered, models

    before = paths()
    b = domains.DOMAINS["appearance-b"]
    monkeypatch.setitem(domains.DOMAINS, "appearance-b", replace(b, camera=replace(b.camera, height=(2.2, 3.6))))
    after = paths()
    new_data = sorted(set(after[0]) - set(before[0]))
    assert len(new_data) == 1 and new_data[0].startswith("appearance-b-train-2")  # only B rendered again
    assert after[2][0] == before[2][0] and after[2][3] == before[2][3]  # A's model and the oracle stay
    assert after[2][1] != before[2][1] and after[2][2] != before[2][2]  # B's models are other models


def test_a_wider_encoder_is_pretrained_into_its_own_start(tmp_path):
    from segmerge_bench.benchmark.models import DataCache, ModelZoo
    from segmerge_bench.training import TrainConfig
    from segmerge_bench.zoo.models import encoder_of

    narrow = {"hidden_sizes": [8, 16, 32, 64], "num_attention_heads": [1, 1, 2, 4]}
    pretrain = TrainConfig(steps=2, batch_size=2, warmup_steps=1, threads=1, progress=False)
    settings = replace(
        QUICK, pretrain_from_scratch=True, pretrain=pretrain, pretrain_continued=pretrain, pretrain_images=4
    )
    store = ArtifactStore(tmp_path)
    tiny = ModelZoo(settings, store, DataCache(settings, store, False), False)
    other = ModelZoo(replace(settings, encoder=narrow), store, DataCache(settings, store, False), False)
    start = other.start()
    assert encoder_of(start.model("segformer")).config.hidden_sizes == [8, 16, 32, 64]
    assert start.model("panoptic") is not None
    tiny.start()
    assert tiny._start_key != other._start_key
    assert encoder_of(tiny.start().model("segformer")).config.hidden_sizes == [16, 32, 64, 128]

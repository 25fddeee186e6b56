"""The checkpoints that ship inside segmerge (``segmerge_bench/zoo/shipped``) and the demo's run on them.

Shipped: the shared start (pre-trained encoder and decoder inits, what ``bench --quick``
starts from) and, from the first seed of a full benchmark run, per regime the two adapted
SegFormers, the adapted DAFormer-style model and the adapted panoptic model, plus the
target oracle. Regenerate them with::

    segmerge bench --out runs/full
    python -m segmerge_bench.benchmark.shipping BENCH_OUT DEST

with ``BENCH_OUT=runs/full`` and, for regenerating the repository's files (from the root of a
source checkout), ``DEST=src/segmerge_bench/zoo/shipped``. ``DEST`` is required: nothing is
written into an installed package unless it is named.

``export`` finds each model in the run's cache by the same key the run used (training it
if it is missing), so the shipped files are exactly the run's. :func:`run_demo` is what
``segmerge demo`` runs on them.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from segmerge.errors import SegmergeError
from segmerge_bench.benchmark.claims import CLAIMS, HEADLINE_CLAIMS
from segmerge_bench.benchmark.experiments import ClaimRun, run_claim, score_singles, scored_test
from segmerge_bench.benchmark.label_free import TuneSettings, learned_merge
from segmerge_bench.benchmark.models import SHIPPED_START, DataCache, ModelZoo, oracle_spec, regime_specs, shipped_path
from segmerge_bench.benchmark.report import write_bench_report
from segmerge_bench.benchmark.runner import BenchResult, machine
from segmerge_bench.benchmark.scoring import score
from segmerge_bench.benchmark.settings import FULL, QUICK, TARGET, BenchSettings, Sweep
from segmerge_bench.benchmark.store import ArtifactStore, remove_path
from segmerge_bench.benchmark.summary import claims_object
from segmerge_bench.training import TrainingData

MANIFEST = "MANIFEST.json"
SHIPPED_ROLES = ("UDA A", "UDA B", "DAFormer UDA B", "panoptic UDA B")
NO_SWEEP = Sweep((), (), (), (), ())
REGENERATE = "segmerge bench --out DIR && python -m segmerge_bench.benchmark.shipping DIR DEST"
"""How the shipped files are made (``DEST=src/segmerge_bench/zoo/shipped`` in a source checkout)."""


def _file_name(regime: str, role: str, suffix: str) -> str:
    return f"{regime}-{role.lower().replace(' ', '-')}{suffix}"


def export(bench_out: Path, dest: Path, settings: BenchSettings = FULL) -> Path:
    """Copy the first seed's models of the full run in ``bench_out`` into ``dest``, with their
    manifest (``src/segmerge_bench/zoo/shipped`` to regenerate the repository's files).

    The run's preset, seeds and regimes are read from its report (``--quick``, ``--seed``,
    ``--regime`` as it was run), so the files are the ones it trained; files an earlier export listed in ``dest``'s
    manifest and this one does not are removed."""
    dest = Path(dest)
    report = Path(bench_out) / "report" / "bench.json"
    if report.is_file():
        ran = json.loads(report.read_text())["settings"]
        preset = {QUICK.name: QUICK, FULL.name: FULL}.get(ran.get("name"), settings)
        settings = replace(preset, seeds=tuple(ran["seeds"]), regimes=tuple(ran["regimes"]))
    earlier = _listed(dest / MANIFEST)
    store = ArtifactStore(Path(bench_out) / "cache")
    zoo = ModelZoo(settings, store, DataCache(settings, store), progress=True)
    seed = settings.seeds[0]
    manifest: dict = {
        "seed": seed,
        "data_seed": settings.data_seed,
        "test_images": settings.test_images,
        "regimes": {},
        "command": REGENERATE,
    }
    dest.mkdir(parents=True, exist_ok=True)
    for regime in settings.regimes:
        specs = regime_specs(regime, seed)
        manifest["regimes"][regime] = {}
        for role in SHIPPED_ROLES:
            name = _file_name(regime, role, specs[role].suffix)
            _copy(zoo.path(specs[role]), dest / name)
            manifest["regimes"][regime][role] = name
    manifest["oracle"] = "oracle" + oracle_spec(seed).suffix
    _copy(zoo.path(oracle_spec(seed)), dest / manifest["oracle"])
    zoo.start().save(dest / SHIPPED_START)
    manifest["full_run"] = full_run_numbers(Path(bench_out))
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    for name in earlier - _listed(dest / MANIFEST):
        remove_path(dest / name)
    return dest


def _listed(manifest: Path) -> set[str]:
    """The model files a shipped manifest names (none if there is no manifest)."""
    if not manifest.is_file():
        return set()
    content = json.loads(manifest.read_text())
    names = {name for models in content.get("regimes", {}).values() for name in models.values()}
    return names | ({content["oracle"]} if content.get("oracle") else set())


def full_run_numbers(bench_out: Path) -> dict:
    """What the shipped models' run measured over all its seeds (``report/bench.json``): per claim and
    regime the mean and spread behind the headline numbers, and the regime's preconditions - so the
    demo can show the run behind a single seed's models. Empty if the run wrote no report."""
    from segmerge_bench.benchmark.regime import preconditions

    path = bench_out / "report" / "bench.json"
    if not path.is_file():
        return {}
    result = BenchResult.from_dict(json.loads(path.read_text()))
    claims = claims_object(result.runs)
    return {
        "seeds": result.settings.get("seeds"),
        "claims": {
            claim["name"]: {
                regime: {
                    "mean": {k: numbers[k] for k in ("best_single", "uniform_soup", "layerwise", "ensemble", "gain")},
                    "sd": numbers.get("spread", {}),
                    "gains_per_seed": numbers.get("gains_per_seed", []),
                }
                for regime, numbers in claim["by_regime"].items()
            }
            for claim in claims["claims"]
        },
        "preconditions": [
            {"regime": c.regime, "name": c.name, "measured": c.measured, "holds": c.passed}
            for c in preconditions(result.regimes)
        ],
    }


def _copy(source: Path, target: Path) -> None:
    remove_path(target)
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        shutil.copy2(source, target)


def shipped_manifest(folder: Path | None = None) -> dict:
    path = Path(folder) / MANIFEST if folder is not None else shipped_path(MANIFEST)
    if not path.is_file():
        raise SegmergeError(
            f"{path}: the shipped checkpoints are missing from this installation; reinstall segmerge, or "
            "regenerate them: segmerge bench --out runs/full && "
            "python -m segmerge_bench.benchmark.shipping runs/full src/segmerge_bench/zoo/shipped"
        )
    return json.loads(path.read_text())


DEMO_TUNING = TuneSettings(images=16, learn_steps=20)
"""The demo's learned merge: 20 steps on 16 unlabelled target training images per claim."""


def demo_runs(
    workdir: Path,
    test_images: int | None = None,
    log=print,
    folder: Path | None = None,
    tune: bool = True,
    singles: dict | None = None,
) -> list[ClaimRun]:
    """Merge the shipped models (soup and the default layer-wise merge) and score everything on
    freshly rendered target test images - the same images as the run that trained them.
    ``folder``: another folder written by :func:`export` instead of the package's. ``singles``
    (a dict, filled in): per regime, the mIoU of the oracle and of every shipped model alone."""
    singles = {} if singles is None else singles
    from segmerge_bench.synthetic import SyntheticDataset

    manifest = shipped_manifest(folder)

    def shipped(name: str) -> Path:
        return Path(folder) / name if folder is not None else shipped_path(name)

    n = test_images or manifest["test_images"]
    log(f"rendering {n} target test images")
    test = TrainingData.from_samples(
        SyntheticDataset(TARGET, n=n, seed=manifest["data_seed"], split="test"), name="target/test", instances=True
    )
    oracle = score([shipped(manifest["oracle"])], test)
    unlabelled = TrainingData.from_samples(
        SyntheticDataset(TARGET, n=DEMO_TUNING.images, seed=manifest["data_seed"], split="train"), labelled=False
    ).images
    runs = []
    for regime, files in manifest["regimes"].items():
        paths = {role: shipped(name) for role, name in files.items()}
        measured: dict = {(paths[role], "mIoU", None): {"mIoU": score([paths[role]], test)} for role in paths}
        singles[regime] = {"oracle": oracle, **{role: measured[paths[role], "mIoU", None]["mIoU"] for role in paths}}
        for claim in CLAIMS:
            if claim.name not in HEADLINE_CLAIMS or any(role not in paths for role in claim.roles):
                continue
            log(f"{regime} regime, {claim.name}: merging and scoring")
            models = [paths[role] for role in claim.roles]
            scored = scored_test(claim, regime, test)  # a panoptic claim: its source's classes
            run, _ = run_claim(
                claim,
                regime,
                manifest["seed"],
                models,
                score_singles(claim, models, scored, measured),
                oracle if scored is test else score([shipped(manifest["oracle"])], scored),
                scored,
                NO_SWEEP,
                Path(workdir) / regime / claim.name,
            )
            if tune:
                from segmerge.tuning import TuningModels

                run.label_free["learned_score"], _ = learned_merge(
                    claim,
                    TuningModels.open([str(m) for m in models]),
                    models,
                    unlabelled,
                    scored,
                    Path(workdir) / regime / claim.name,
                    DEMO_TUNING,
                    manifest["seed"],
                )
            runs.append(run)
    return runs


def run_demo(
    out: Path | None = None, test_images: int | None = None, log: Callable[[str], None] = print, tune: bool = True
) -> dict:
    """``segmerge demo``: merge and score the shipped checkpoints (:func:`demo_runs`) and return the
    claims object, with ``models`` (per regime, the oracle's and every shipped model's mIoU alone)
    and ``full_run`` (the spread over seeds and the preconditions of the run that trained them).
    With ``out``, the merges stay in ``out/merges`` and the report is written to ``out/report``;
    without, the merges go to a temporary folder, removed on return."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="segmerge-demo-") as scratch:
        workdir = Path(out) / "merges" if out is not None else Path(scratch)
        singles: dict = {}
        runs = demo_runs(workdir, test_images, log, tune=tune, singles=singles)
        claims = claims_object(runs)
        claims["models"] = singles
        claims["full_run"] = shipped_manifest().get("full_run", {})
        if out is not None:
            manifest = shipped_manifest()
            result = BenchResult(
                {"test_images": test_images or manifest["test_images"], **manifest},
                runs,
                {"total": round(time.perf_counter() - start, 1)},
                machine(),
            )
            write_bench_report(result, Path(out) / "report", "segmerge demo", evaluation_reports=False)
    return claims


if __name__ == "__main__":  # pragma: no cover - the regeneration command
    if len(sys.argv) != 3:
        sys.exit(
            "usage: python -m segmerge_bench.benchmark.shipping BENCH_OUT DEST\n"
            "  (DEST=src/segmerge_bench/zoo/shipped regenerates the repository's shipped files)"
        )
    print(export(Path(sys.argv[1]), Path(sys.argv[2])))

"""Folders a command writes hold one run: a non-empty folder the command did not write is refused
(before any work) unless --overwrite, and a written folder is replaced whole, never added to."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from segmerge.checkpoints.atomic import MARKER, claim_folder, folder_owner, fresh_folder
from segmerge.cli.app import app
from segmerge.errors import SegmergeError

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def foreign(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "thesis.tex").write_text("mine")
    return folder


def untouched(folder: Path) -> bool:
    return sorted(p.name for p in folder.iterdir()) == ["thesis.tex"] and (folder / "thesis.tex").read_text() == "mine"


def test_fresh_folder_replaces_whole_and_refuses_foreign_folders(tmp_path):
    out = tmp_path / "out"
    assert claim_folder(out, "eval", overwrite=False) == "new"
    with fresh_folder(out, "eval", overwrite=False) as folder:
        (folder / "old.png").write_text("first run")
    assert folder_owner(out) == "eval" and (out / "old.png").is_file()
    assert claim_folder(out, "eval", overwrite=False) == "own"
    with fresh_folder(out, "eval", overwrite=False) as folder:
        (folder / "results.md").write_text("second run")
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "results.md"]  # nothing of the first run
    with pytest.raises(SegmergeError, match="not written by segmerge tune; pass --overwrite"):
        claim_folder(out, "tune", overwrite=False)  # another command's folder is not tune's to replace
    mine = foreign(tmp_path / "mine")
    with pytest.raises(SegmergeError, match=r"mine: a folder that is not empty .* pass --overwrite"):
        with fresh_folder(mine, "eval", overwrite=False):
            pytest.fail("a foreign folder was taken")
    assert untouched(mine)
    with fresh_folder(mine, "eval", overwrite=True) as folder:
        (folder / "results.md").write_text("run")
    assert sorted(p.name for p in mine.iterdir()) == [MARKER, "results.md"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(SegmergeError, match="exists and is not a folder"):
        claim_folder(tmp_path / "file", "eval", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "mine", "out"]  # no temporaries left


def test_a_failed_run_leaves_the_folder_as_it_was(tmp_path):
    out = tmp_path / "out"
    with fresh_folder(out, "eval", overwrite=False) as folder:
        (folder / "results.md").write_text("good")
    with pytest.raises(RuntimeError):
        with fresh_folder(out, "eval", overwrite=False) as folder:
            (folder / "results.md").write_text("half")
            raise RuntimeError("interrupted")
    assert (out / "results.md").read_text() == "good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# --- the commands -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from segmerge_bench.zoo.toy_checkpoints import tiny_segformer

    root = tmp_path_factory.mktemp("models")
    for seed in (1, 2):
        tiny_segformer(seed=seed).save_pretrained(root / f"seg{seed}")
    return root


def dataset(root: Path) -> str:
    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True)
    (root / "lbl").mkdir()
    Image.fromarray(rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)).save(root / "img" / "a.png")
    Image.fromarray(rng.integers(0, 19, (32, 48), dtype=np.uint8)).save(root / "lbl" / "a.png")
    return f"folder:images={root / 'img'},labels={root / 'lbl'}"


def test_eval_out_holds_one_run(tmp_path, models):
    spec = dataset(tmp_path / "data")
    mine = foreign(tmp_path / "mine")
    refused = invoke("eval", models / "seg1", "--data", "folder:images=/nowhere,labels=/nowhere", "--out", mine)
    assert refused.exit_code == 2 and "pass --overwrite" in refused.output  # before reading the data
    assert untouched(mine)

    out = tmp_path / "report"
    first = invoke("eval", models / "seg1", models / "seg2", "--data", spec, "--out", out)
    assert first.exit_code == 0, first.output
    assert (out / "confusion_seg2.png").is_file()
    again = invoke("eval", models / "seg1", "--data", spec, "--out", out)  # its own folder: replaced whole
    assert again.exit_code == 0, again.output
    assert not (out / "confusion_seg2.png").exists() and (out / "confusion_seg1.png").is_file()
    names = [m["name"] for m in json.loads((out / "results.json").read_text())["models"]]
    assert names == ["seg1"]

    replaced = invoke("eval", models / "seg1", "--data", spec, "--out", mine, "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert not (mine / "thesis.tex").exists() and (mine / "results.md").is_file()


@pytest.mark.parametrize(
    "command",
    [
        ["tune", "a.pth", "b.pth", "--target-images", "/nowhere", "-o", "{tmp}/m.pth", "--report", "{out}"],
        ["demo", "--no-tune", "--out", "{out}"],
        ["bench", "--quick", "--out", "{out}"],
        ["data", "--domain", "target", "--n", "1", "--out", "{out}"],
    ],
)
def test_every_folder_command_refuses_a_foreign_folder_before_any_work(tmp_path, command):
    mine = foreign(tmp_path / "mine")
    args = [a.format(tmp=tmp_path, out=mine) for a in command]
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert "--overwrite" in result.output and "Traceback" not in result.output
    assert untouched(mine) and sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_bench_reuses_its_own_cache_and_replaces_the_rest(tmp_path):
    from segmerge_bench.cli.bench import in_bench_folder

    out = tmp_path / "bench"

    def benchmark(folder: Path):
        (folder / "cache").mkdir(exist_ok=True)
        made = (folder / "cache" / "model.pt").exists()
        (folder / "cache" / "model.pt").write_text("trained")
        (folder / "merges").mkdir()
        (folder / "merges" / f"run{len(list((folder / 'cache').iterdir()))}.pth").write_text("merge")
        return made

    def report(made, folder: Path):
        folder.mkdir(exist_ok=True)
        (folder / "bench.md").write_text(f"reused cache: {made}")

    assert in_bench_folder(out, claim_folder(out, "bench", False), False, benchmark, report) is False
    (out / "merges" / "stale-from-another-setting.pth").write_text("old")
    (out / "report" / "old-figure.png").write_text("old")
    assert in_bench_folder(out, claim_folder(out, "bench", False), False, benchmark, report) is True  # cache reused
    assert sorted(p.name for p in (out / "merges").iterdir()) == ["run1.pth"]
    assert sorted(p.name for p in (out / "report").iterdir()) == ["bench.md"]
    assert in_bench_folder(out, claim_folder(out, "bench", True), True, benchmark, report) is False  # whole
    assert folder_owner(out) == "bench" and sorted(p.name for p in tmp_path.iterdir()) == ["bench"]

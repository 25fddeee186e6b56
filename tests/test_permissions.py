"""Outputs get the permissions a plain open()/mkdir() would under the user's umask, through the
temporary-then-rename path: readable by colleagues under 022, private under 077."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch
from tiny_models import tiny_state

from segmerge.checkpoints import save_checkpoint
from segmerge.checkpoints.atomic import atomic_file, atomic_folder


@pytest.fixture(params=[0o022, 0o077, 0o002])
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def assert_plain(root: Path, umask: int) -> None:
    """``root`` and everything under it as open()/mkdir() would have made them."""
    for path in [root, *root.rglob("*")] if root.is_dir() else [root]:
        want = (0o777 if path.is_dir() else 0o666) & ~umask
        assert mode(path) == want, f"{path}: {oct(mode(path))}, expected {oct(want)} under umask {oct(umask)}"


@pytest.mark.parametrize("name", ["m.pth", "m.safetensors", "hf_out"])
def test_checkpoints(tmp_path, umask, name):
    assert_plain(save_checkpoint(tiny_state(1), tmp_path / name), umask)


def test_folder_output_does_not_copy_the_anchors_permissions(tmp_path, umask):
    from safetensors.torch import save_file

    from segmerge import api

    for i in (1, 2):
        folder = tmp_path / f"m{i}"
        folder.mkdir()
        (folder / "config.json").write_text("{}")
        save_file(tiny_state(i), folder / "model.safetensors")
        os.chmod(folder / "config.json", 0o400)  # a read-only download cache, say
    out = api.merge_to_file([str(tmp_path / "m1"), str(tmp_path / "m2")], output=tmp_path / "out")
    assert_plain(out, umask)


def test_merge_command_output_and_tuned_recipe(tmp_path, umask):
    from segmerge import api
    from segmerge.tuning.output import write_tuned

    paths = []
    for i in (1, 2):
        torch.save(tiny_state(i), tmp_path / f"{i}.pth")
        paths.append(str(tmp_path / f"{i}.pth"))
    written, recipe = write_tuned(api.make_recipe(paths), tmp_path / "tuned.safetensors")
    assert_plain(written, umask)
    assert_plain(recipe, umask)


def test_reports(tmp_path, umask):
    from segmerge.evaluation.results import EvaluationResult, ModelScores
    from segmerge.reports import write_report

    scores = {"miou": 50.0, "pixel_accuracy": 90.0, "mean_accuracy": 60.0, "per_class": [{"name": "road", "iou": 50.0}]}
    result = EvaluationResult(
        dataset="folder", split="val", num_images=1, class_names=["road"], ignore_index=255,
        rows=[ModelScores("a", "model", 10, 1.0, scores)],
    )  # fmt: skip
    write_report(result, tmp_path / "report")
    assert_plain(tmp_path / "report", umask)


def test_synthetic_data_folder(tmp_path, umask):
    from segmerge_bench.synthetic import write_domain

    assert_plain(write_domain("target", 1, tmp_path / "data"), umask)


def test_atomic_primitives(tmp_path, umask):
    with atomic_file(tmp_path / "a.txt") as tmp:
        tmp.write_text("x")
    with atomic_folder(tmp_path / "d") as tmp:
        (tmp / "f").write_text("y")
    assert_plain(tmp_path / "a.txt", umask)
    assert_plain(tmp_path / "d", umask)


def test_replacing_a_file_keeps_its_permissions(tmp_path, umask):
    target = tmp_path / "shared.txt"
    target.write_text("old")
    os.chmod(target, 0o640)
    with atomic_file(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and mode(target) == 0o640

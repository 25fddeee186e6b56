"""What a user meets first: --version, settings checked before any work, `eval --ensemble I,J`
in one run, and an `eval` table that fits a terminal."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from segmerge.cli.app import app

os.environ.setdefault("HF_HUB_OFFLINE", "1")
runner = CliRunner()


def make_folder_dataset(root: Path, n: int) -> str:
    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True)
    (root / "lbl").mkdir()
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)).save(root / "img" / f"f{i}.png")
        Image.fromarray(rng.integers(0, 19, (32, 48), dtype=np.uint8)).save(root / "lbl" / f"f{i}.png")
    return f"folder:images={root / 'img'},labels={root / 'lbl'}"


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_version():
    from segmerge._version import __version__

    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"segmerge {__version__}"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_tune_checks_the_device_before_reading_anything(tmp_path):
    result = invoke("tune", tmp_path / "a.pth", tmp_path / "b.pth", "--target-images", tmp_path / "nowhere",
                    "-o", tmp_path / "m.pth", "--device", "cuda")  # fmt: skip
    assert result.exit_code == 2
    assert "sees no CUDA GPU; use --device cpu" in result.output and "nowhere" not in result.output


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from segmerge_bench.zoo.toy_checkpoints import tiny_segformer

    root = tmp_path_factory.mktemp("models")
    for seed in (1, 2, 3):
        tiny_segformer(seed=seed).save_pretrained(root / f"seg{seed}")
    return root


def test_ensemble_of_some_models_in_the_same_run(tmp_path, models):
    spec = make_folder_dataset(tmp_path / "data", n=2)
    three = [models / "seg1", models / "seg2", models / "seg3"]
    some = invoke("eval", *three, "--data", spec, "--ensemble", "1,2", "--json")
    assert some.exit_code == 0, some.output
    rows = {m["name"]: m for m in json.loads(some.stdout)["models"]}
    assert list(rows) == ["seg1", "seg2", "seg3", "ensemble 1+2"]
    assert rows["ensemble 1+2"]["cost"] == 2.0
    assert rows["ensemble 1+2"]["parameters"] == rows["seg2"]["parameters"] + rows["seg3"]["parameters"]
    # the same ensemble as evaluating the two alone with a plain --ensemble (before the options, too)
    alone = invoke("eval", "--ensemble", three[1], three[2], "--data", spec, "--json")
    assert alone.exit_code == 0, alone.output
    pair = {m["name"]: m for m in json.loads(alone.stdout)["models"]}
    assert list(pair) == ["seg2", "seg3", "ensemble"]
    assert pair["ensemble"]["confusion"] == rows["ensemble 1+2"]["confusion"]


@pytest.mark.parametrize(
    "value, message",
    [("0,5", "--ensemble 0,5: 5 is not a model position; the 2 models are 0..1"), ("1", "at least two models")],
)
def test_ensemble_positions_are_checked_before_any_work(tmp_path, models, value, message):
    result = invoke("eval", models / "seg1", models / "seg2", "--data", tmp_path / "nowhere", f"--ensemble={value}")
    assert result.exit_code == 2 and message in result.output, result.output


def test_the_terminal_table_fits_100_columns_and_points_to_the_details(tmp_path, models):
    spec = make_folder_dataset(tmp_path / "data", n=1)
    names = [models / "seg1", models / "seg2"]
    result = invoke("eval", *names, "--data", spec, "--ensemble", "--protocol", "synthia16", "--protocol", "synthia13")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 100, result.stdout
    assert lines[0].split()[:2] == ["model", "kind"] and "mIoU16" in lines[0] and "road" not in lines[0]
    assert "per-class scores and confusion matrices: --out DIR" in result.stdout

"""`segmerge eval` and `segmerge score` end to end, on fabricated data and tiny models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from segmerge.cli.app import app
from segmerge.metrics import SemanticMetric
from segmerge.metrics.panoptic import id2rgb

os.environ.setdefault("HF_HUB_OFFLINE", "1")
runner = CliRunner()


def make_folder_dataset(root: Path, n: int = 5, size=(32, 48), seed=0) -> str:
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True)
    (root / "lbl").mkdir()
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(root / "img" / f"f{i}.png")
        label = rng.integers(0, 19, size, dtype=np.uint8)
        label[:3] = 255
        Image.fromarray(label).save(root / "lbl" / f"f{i}.png")
    return f"folder:images={root / 'img'},labels={root / 'lbl'}"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from segmerge_bench.zoo.toy_checkpoints import tiny_segformer

    root = tmp_path_factory.mktemp("models")
    for seed in (1, 2):
        tiny_segformer(seed=seed).save_pretrained(root / f"seg{seed}")
    return root


def test_eval_with_ensemble_writes_a_report_and_matches_a_direct_computation(tmp_path, models):
    spec = make_folder_dataset(tmp_path / "data")
    out = tmp_path / "report"
    args = ["eval", str(models / "seg1"), str(models / "seg2"), "--data", spec, "--ensemble", "--out", str(out)]
    result = runner.invoke(app, [*args, "--json", "--protocol", "synthia16"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    names = [m["name"] for m in report["models"]]
    assert names == ["seg1", "seg2", "ensemble"]
    ensemble = report["models"][2]
    assert ensemble["cost"] == 2.0 and ensemble["parameters"] == 2 * report["models"][0]["parameters"]
    assert all(m["ms_per_image"] > 0 for m in report["models"])
    assert "synthia16" in report["models"][0]["subsets"]
    for f in ("results.json", "results.md", "per_class_bars.png", "qualitative.png", "confusion_seg1.png"):
        assert (out / f).is_file(), f

    # The same numbers by hand: the model's argmax at label resolution, one confusion matrix.
    from segmerge.datasets import open_dataset
    from segmerge.segmenters import load_segmenter

    seg = load_segmenter(str(models / "seg1"))
    metric = SemanticMetric(19)
    for sample in open_dataset(spec):
        pixels = seg.normalise(torch.tensor(sample.image)[None])
        with torch.no_grad():
            logits = seg.scores(pixels)
        logits = torch.nn.functional.interpolate(logits, size=sample.label.shape, mode="bilinear", align_corners=False)
        metric.update(logits.argmax(1)[0], torch.from_numpy(sample.label))
    assert report["models"][0]["miou"] == pytest.approx(metric.compute().miou, abs=1e-6)


def test_eval_refuses_a_model_with_other_classes(tmp_path, models):
    spec = make_folder_dataset(tmp_path / "data", n=1)
    result = runner.invoke(app, ["eval", str(models / "seg1"), "--data", spec, "--num-classes", "16"])
    assert result.exit_code == 2
    assert "predicts 19 classes but the protocol has 16" in result.output


def test_eval_refuses_an_empty_dataset(tmp_path, models):
    (tmp_path / "img").mkdir()
    (tmp_path / "lbl").mkdir()
    result = runner.invoke(
        app, ["eval", str(models / "seg1"), "--data", f"folder:images={tmp_path / 'img'},labels={tmp_path / 'lbl'}"]
    )
    assert result.exit_code == 2


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--mode", "tiles"], "--mode 'tiles': choose whole or slide"),
        (["--crop", "0x512"], "--crop 0x512: both sides must be at least 1 pixel"),
        (["--batch-size", "0"], "--batch-size 0: must be at least 1"),
        (["--device", "toaster"], "--device 'toaster': not a device"),
        (["--mode", "slide", "--panoptic"], "--mode whole"),
    ],
)
def test_eval_settings_are_checked_before_any_work(tmp_path, models, flags, message):
    spec = make_folder_dataset(tmp_path / "data", n=1)
    result = runner.invoke(app, ["eval", str(models / "seg1"), "--data", spec, *flags])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_eval_on_a_missing_gpu_is_one_line_and_exit_2(tmp_path, models):
    spec = make_folder_dataset(tmp_path / "data", n=1)
    result = runner.invoke(app, ["eval", str(models / "seg1"), "--data", spec, "--device", "cuda"])
    assert result.exit_code == 2
    assert "sees no CUDA GPU; use --device cpu" in result.output and len(result.output.strip().splitlines()) == 1


@pytest.mark.slow
def test_torchrun_with_two_processes_gives_the_single_process_numbers(tmp_path, models):
    spec = make_folder_dataset(tmp_path / "data", n=5)
    common = ["eval", str(models / "seg1"), str(models / "seg2"), "--data", spec, "--ensemble", "--json"]
    single = subprocess.run([sys.executable, "-m", "segmerge", *common], capture_output=True, text=True, check=True)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]  # a free port
    double = subprocess.run([*launcher, "-m", "segmerge", *common], capture_output=True, text=True)
    assert double.returncode == 0, double.stderr[-2000:]
    one, two = json.loads(single.stdout), json.loads(double.stdout)
    for a, b in zip(one["models"], two["models"], strict=True):
        assert a["miou"] == b["miou"] and a["confusion"] == b["confusion"]
    assert one["num_images"] == two["num_images"] == 5


def test_score_prediction_pngs_against_labels(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "pred").mkdir()
    (tmp_path / "gt" / "city").mkdir(parents=True)
    reference = SemanticMetric(19)
    for i in range(3):
        gt = rng.integers(0, 19, (20, 30), dtype=np.uint8)
        gt[0] = 255
        pred = np.where(rng.random((20, 30)) < 0.7, gt, rng.integers(0, 19, (20, 30))).astype(np.uint8)
        pred[gt == 255] = 0
        Image.fromarray(gt).save(tmp_path / "gt" / "city" / f"c_{i}_gtFine_labelTrainIds.png")
        Image.fromarray(pred).save(tmp_path / "pred" / f"c_{i}_leftImg8bit.png")
        reference.update(pred.astype(np.int64), gt.astype(np.int64))
    result = runner.invoke(app, ["score", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--json"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    assert scores["miou"] == pytest.approx(reference.compute().miou)
    assert [c["name"] for c in scores["per_class"]][:2] == ["road", "sidewalk"]


def test_score_names_mismatched_or_bad_files(tmp_path):
    (tmp_path / "pred").mkdir()
    (tmp_path / "gt").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "gt" / "a.png")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "pred" / "b.png")
    r = runner.invoke(app, ["score", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt")])
    assert r.exit_code == 2 and "a.png" in r.output
    Image.fromarray(np.full((4, 4), 40, np.uint8)).save(tmp_path / "pred" / "a.png")
    (tmp_path / "pred" / "b.png").unlink()
    r = runner.invoke(app, ["score", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt")])
    assert r.exit_code == 2 and "a.png: holds class id 40" in r.output
    Image.fromarray(np.zeros((4, 5), np.uint8)).save(tmp_path / "pred" / "a.png")
    r = runner.invoke(app, ["score", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt")])
    assert r.exit_code == 2 and "(4, 5)" in r.output


def test_score_panoptic_files(tmp_path):
    categories = [{"id": 7, "name": "road", "isthing": 0}, {"id": 26, "name": "car", "isthing": 1}]
    ids = np.zeros((20, 20), np.int64)
    ids[:10] = 1
    ids[12:18, 2:8] = 2
    ids[12:18, 10:16] = 3
    segments = [
        {"id": 1, "category_id": 7, "iscrowd": 0, "area": int((ids == 1).sum())},
        {"id": 2, "category_id": 26, "iscrowd": 0, "area": int((ids == 2).sum())},
        {"id": 3, "category_id": 26, "iscrowd": 0, "area": int((ids == 3).sum())},
    ]
    for side in ("gt", "pred"):
        (tmp_path / side).mkdir()
        Image.fromarray(id2rgb(ids).astype(np.uint8)).save(tmp_path / side / "x.png")
        doc = {
            "annotations": [{"image_id": "x", "file_name": "x.png", "segments_info": segments}],
            "categories": categories,
        }
        (tmp_path / f"{side}.json").write_text(json.dumps(doc))
    args = ["score", "--panoptic", "--gt-json", str(tmp_path / "gt.json"), "--gt-dir", str(tmp_path / "gt"),
            "--pred-json", str(tmp_path / "pred.json"), "--pred-dir", str(tmp_path / "pred"), "--json"]  # fmt: skip
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    scores = json.loads(r.stdout)
    assert scores["pq"] == pytest.approx(100.0)
    for key in ("sq", "rq", "pq_things", "pq_stuff", "per_class"):
        assert key in scores
    # Semantic settings would be ignored by panoptic scoring: they are refused instead.
    for extra in (["--protocol", "synthia16"], ["--num-classes", "16"], ["--ignore-index", "0"]):
        r = runner.invoke(app, [*args, *extra])
        assert r.exit_code == 2 and "semantic scoring only" in r.output, r.output


def write_cityscapes_panoptic(root: Path, n: int = 2, size=(64, 128)) -> None:
    """Cityscapes panoptic ground truth as createPanopticImgs.py writes it (category ids = labelIds)."""
    from cityscapesscripts.helpers.labels import labels as cs_labels

    categories = [
        {"id": lab.id, "name": lab.name, "isthing": int(lab.hasInstances)} for lab in cs_labels if not lab.ignoreInEval
    ]
    rng = np.random.default_rng(1)
    road, car = 7, 26
    annotations, images = [], []
    for i in range(n):
        image_id = f"city_{i:06d}_000019"
        img_dir = root / "leftImg8bit" / "val" / "city"
        img_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(img_dir / f"{image_id}_leftImg8bit.png")
        ids = np.full(size, road, np.int64)
        ids[20:50, 10:40] = car * 1000 + 1
        ids[20:50, 60:100] = car * 1000 + 2
        segments = [
            {"id": int(s), "category_id": int(s) // 1000 or int(s), "iscrowd": 0, "area": int((ids == s).sum())}
            for s in np.unique(ids)
        ]
        png_dir = root / "gtFine" / "cityscapes_panoptic_val"
        png_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(id2rgb(ids).astype(np.uint8)).save(png_dir / f"{image_id}_gtFine_panoptic.png")
        images.append({"id": image_id, "file_name": f"{image_id}_leftImg8bit.png"})
        annotations.append(
            {"image_id": image_id, "file_name": f"{image_id}_gtFine_panoptic.png", "segments_info": segments}
        )
    doc = {"images": images, "annotations": annotations, "categories": categories}
    (root / "gtFine" / "cityscapes_panoptic_val.json").write_text(json.dumps(doc))


def test_eval_panoptic_mask2former(tmp_path):
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, SwinConfig

    backbone = SwinConfig(
        embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], window_size=4, image_size=64,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )  # fmt: skip
    config = Mask2FormerConfig(
        backbone_config=backbone, num_labels=19, hidden_dim=32, mask_feature_size=32, feature_size=32,
        num_queries=10, encoder_layers=1, decoder_layers=2, encoder_feedforward_dim=64, dim_feedforward=64,
        num_attention_heads=2, use_pretrained_backbone=False,
    )  # fmt: skip
    torch.manual_seed(0)
    Mask2FormerForUniversalSegmentation(config).save_pretrained(tmp_path / "m2f")
    write_cityscapes_panoptic(tmp_path / "cs")
    out = tmp_path / "report"
    args = ["eval", str(tmp_path / "m2f"), "--data", f"cityscapes-panoptic:{tmp_path / 'cs'}", "--panoptic", "--json"]
    r = runner.invoke(app, [*args, "--out", str(out)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    row = json.loads(r.stdout)["models"][0]
    assert {"pq", "sq", "rq", "pq_things", "pq_stuff", "per_class"} <= set(row["panoptic"])
    assert "miou" in row  # the semantic output is scored too
    assert (out / "qualitative.png").is_file()


def test_score_runs_in_worker_processes_without_torch(tmp_path):
    """`segmerge score` (panoptic and semantic) never imports torch, in the command or its workers."""
    test_score_panoptic_files(tmp_path)  # writes gt/, pred/, gt.json, pred.json
    for side, value in (("sem_gt", 0), ("sem_pred", 1)):
        (tmp_path / side).mkdir()
        for name in ("y", "z"):
            Image.fromarray(np.full((4, 6), value, np.uint8)).save(tmp_path / side / f"{name}.png")
    files = {"--gt-json": "gt.json", "--gt-dir": "gt", "--pred-json": "pred.json", "--pred-dir": "pred"}
    panoptic = ["score", "--panoptic", "--workers", "2", *(x for k, v in files.items() for x in (k, str(tmp_path / v)))]
    semantic = ["score", "--pred", str(tmp_path / "sem_pred"), "--gt", str(tmp_path / "sem_gt"), "--workers", "2"]
    for args in (panoptic, semantic):
        code = (
            "import sys\n"
            f"sys.argv = {['segmerge', *args]!r}\n"
            "from segmerge.cli import main\n"
            "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
            "print('torch loaded' if 'torch' in sys.modules else 'no torch')\n"
        )
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
        assert run.returncode == 0, run.stderr[-2000:]
        assert run.stdout.strip().endswith("no torch"), run.stdout[-500:]


def test_score_semantic_files_gives_the_same_matrix_with_any_number_of_workers(tmp_path):
    from segmerge.evaluation.scoring import score_semantic_folders

    rng = np.random.default_rng(3)
    (tmp_path / "pred").mkdir()
    (tmp_path / "gt").mkdir()
    reference = SemanticMetric(19)
    for i in range(5):
        gt = rng.integers(0, 19, (24, 40)).astype(np.uint16 if i == 4 else np.uint8)  # one 16-bit label file
        gt[:2] = 255
        pred = np.where(rng.random(gt.shape) < 0.6, gt, rng.integers(0, 19, gt.shape)).astype(np.uint8)
        pred[gt == 255] = rng.integers(0, 19)
        Image.fromarray(gt).save(tmp_path / "gt" / f"a{i}.png")
        Image.fromarray(pred).save(tmp_path / "pred" / f"a{i}.png")
        reference.update(pred.astype(np.int64), gt.astype(np.int64))
    names = [str(i) for i in range(19)]
    one, two = (score_semantic_folders(tmp_path / "pred", tmp_path / "gt", 19, names, workers=n) for n in (1, 2))
    assert np.array_equal(one.confusion_matrix, reference.confusion_matrix.numpy())
    assert np.array_equal(two.confusion_matrix, one.confusion_matrix)
    assert one.compute(subset="synthia16") == reference.compute(subset="synthia16")


def test_panoptic_pngs_decode_to_the_same_ids_with_pillow_and_pyspng(tmp_path):
    """pyspng, when installed, decodes panoptic PNGs instead of Pillow: the same pixels, so the same scores."""
    from segmerge.evaluation.scoring import ID_BITS, read_panoptic_png

    rng = np.random.default_rng(4)
    ids = rng.integers(0, 2**24, (6, 7))
    Image.fromarray(id2rgb(ids)).save(tmp_path / "rgb.png")
    Image.fromarray(np.dstack([id2rgb(ids), np.full((6, 7), 9, np.uint8)])).save(tmp_path / "rgba.png")
    Image.fromarray(id2rgb(ids)).convert("P").save(tmp_path / "palette.png")
    for name in ("rgb", "rgba"):
        assert np.array_equal(read_panoptic_png(tmp_path / f"{name}.png", "pillow") & ID_BITS, ids)
    palette = np.asarray(Image.open(tmp_path / "palette.png").convert("RGB")).astype(np.int64)
    expected = palette[..., 0] + 256 * palette[..., 1] + 65536 * palette[..., 2]
    assert np.array_equal(read_panoptic_png(tmp_path / "palette.png", "pillow") & ID_BITS, expected)
    pytest.importorskip("pyspng")
    for name in ("rgb", "rgba", "palette"):
        path = tmp_path / f"{name}.png"
        assert np.array_equal(read_panoptic_png(path, "pyspng") & ID_BITS, read_panoptic_png(path, "pillow") & ID_BITS)

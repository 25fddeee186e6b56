"""Reports rendered from a synthetic evaluation: every file written, readable, and saying the right numbers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from segmerge.evaluation.results import EvaluationResult, ModelScores, QualitativeSample
from segmerge.reports import colorize, colorize_instances, markdown_table, write_report
from segmerge.reports.palette import CITYSCAPES_PALETTE
from segmerge.reports.tables import human_count, subset_headers

CLASSES = [
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
]  # fmt: skip
H, W = 32, 64


def semantic_scores(rng, miou: float) -> dict:
    """Percentages, as segmerge.metrics reports them."""
    iou = rng.uniform(20, 90, len(CLASSES))
    iou[16] = math.nan  # "train": absent from the split, as in many Cityscapes subsets
    return {
        "miou": miou,
        "pixel_accuracy": 90.0,
        "mean_accuracy": 70.0,
        "per_class": [{"name": n, "iou": float(v)} for n, v in zip(CLASSES, iou, strict=True)],
        "subsets": {"synthia16": miou - 1, "synthia13": miou + 2},
    }


def panoptic_scores(rng, pq: float) -> dict:
    """Percentages, as segmerge.metrics reports them."""
    counts = {"sq": 80.0, "rq": 60.0, "tp": 3, "fp": 1, "fn": 2}
    per_class = [{"name": n, "pq": float(rng.uniform(10, 80)), **counts} for n in CLASSES]
    return {"pq": pq, "sq": 78.0, "rq": 60.0, "pq_things": pq - 5, "pq_stuff": pq + 4, "per_class": per_class}


def confusion(rng) -> np.ndarray:
    # Like real ones: a strong diagonal, a few confusions, mostly zeros.
    n = len(CLASSES)
    counts = np.where(rng.random((n, n)) < 0.15, rng.integers(1, 200, (n, n)), 0) + np.diag(rng.integers(200, 900, n))
    counts[16] = 0  # a class with no ground-truth pixels: a NaN row once normalised
    return counts.astype(np.int64)


def sample(rng, name: str, models: list[str], panoptic: bool = False) -> QualitativeSample:
    label = rng.integers(0, len(CLASSES), (H, W))
    label[:4] = 255
    ids = {}
    if panoptic:
        ids = {n: rng.integers(0, 6, (H, W)) * 1000 + 11 for n in ["ground truth", *models]}
    return QualitativeSample(
        name=name,
        image=rng.integers(0, 256, (H, W, 3), dtype=np.uint8),
        label=label,
        predictions={n: rng.integers(0, len(CLASSES), (H, W)) for n in models},
        panoptic=ids,
    )


@pytest.fixture
def result() -> EvaluationResult:
    rng = np.random.default_rng(0)
    names = ["gta", "merged/0.75", "ensemble"]
    rows = [
        ModelScores("gta", "model", 3_700_000, 12.5, semantic_scores(rng, 52.0), confusion=confusion(rng)),
        ModelScores("merged/0.75", "model", 3_700_000, math.nan, semantic_scores(rng, 61.0), confusion=confusion(rng)),
        ModelScores(
            "ensemble", "ensemble", 11_100_000, 37.5, semantic_scores(rng, 58.0), confusion=confusion(rng), cost=3.0
        ),
    ]
    samples = [sample(rng, "frankfurt_0", names), sample(rng, "lindau_1", names, panoptic=True)]
    return EvaluationResult(
        dataset="cityscapes", split="val", num_images=500, class_names=CLASSES, ignore_index=255, rows=rows,
        protocol="synthia16,synthia13", qualitative=samples,
    )  # fmt: skip


def assert_png(path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()


def test_all_files_written_and_valid(result, tmp_path):
    written = write_report(result, tmp_path / "report")
    expected = {
        "results.json", "results.md", "per_class_bars.png", "qualitative.png",
        "confusion_gta.png", "confusion_merged_0.75.png", "confusion_ensemble.png",
    }  # fmt: skip
    assert set(written) == expected
    for name, path in written.items():
        assert path.is_file() and path.parent == tmp_path / "report"
        if name.endswith(".png"):
            assert_png(path)
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == sorted(expected)  # no temp files left
    data = json.loads(written["results.json"].read_text(), parse_constant=pytest.fail)  # strict: no NaN
    assert data["generated_by"].startswith("segmerge ")
    assert [m["semantic"]["miou"] for m in data["models"]] == [r.semantic["miou"] for r in result.rows]
    assert data["models"][1]["ms_per_image"] is None  # NaN as null
    assert data["models"][0]["confusion"] == result.rows[0].confusion.tolist()
    md = written["results.md"].read_text()
    assert markdown_table(result) in md and "(qualitative.png)" in md


def split_cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_markdown_table(result):
    lines = markdown_table(result).strip().splitlines()
    assert len(lines) == 2 + len(result.rows)  # header, separator, one line per row
    header = split_cells(lines[0])
    assert header[:7] == ["model", "kind", "params", "ms/image", "cost", "mIoU", "pixel acc"]
    assert "mIoU16" in header and "mIoU13" in header and header[-1] == "bicycle"
    cells = {row.name: split_cells(line) for row, line in zip(result.rows, lines[2:], strict=True)}
    for name in cells:
        assert cells[name][0] == name
    miou = header.index("mIoU")
    assert cells["merged/0.75"][miou] == "**61.0**"
    assert cells["gta"][miou] == "52.0" and cells["ensemble"][miou] == "58.0"
    assert cells["merged/0.75"][3] == "-"  # NaN ms/image
    assert cells["gta"][header.index("train")] == "-"  # NaN IoU
    assert cells["gta"][2] == "3.7M" and cells["ensemble"][4] == "3x" and cells["gta"][4] == "1x"
    assert all(cells[n][2] == cells[n][2].strip("*") for n in cells)  # size is not a score: never bold
    assert cells["gta"][header.index("pixel acc")] == "90.0"  # all rows tie: nothing to bold
    assert human_count(85_230_000) == "85.2M" and human_count(512) == "512"
    assert subset_headers(["synthia16", "other16", "cityscapes19"]) == {
        "synthia16": "mIoU (synthia16)", "other16": "mIoU (other16)", "cityscapes19": "mIoU19",
    }  # fmt: skip


def test_colorize():
    label = np.array([[0, 255], [13, 42]])
    rgb = colorize(label)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    assert tuple(rgb[0, 0]) == (128, 64, 128) and tuple(rgb[0, 1]) == (0, 0, 0)
    assert tuple(rgb[1, 0]) == (0, 0, 142)  # car
    assert rgb[1, 1].any() and np.array_equal(colorize(np.array([[42]])), rgb[1:, 1:])  # deterministic
    from cityscapesscripts.helpers.labels import trainId2label

    assert [tuple(c) for c in CITYSCAPES_PALETTE] == [trainId2label[i].color for i in range(19)]


def test_colorize_instances():
    ids = np.array([[1, 2, 3], [1, -1, 7000]])
    rgb = colorize_instances(ids)
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    assert len({tuple(c) for c in rgb.reshape(-1, 3)}) == 5  # four segments and void
    assert tuple(rgb[1, 1]) == (0, 0, 0) and np.array_equal(rgb[0, 0], rgb[1, 0])
    tinted = colorize_instances(np.array([[10, 13001]]), label_divisor=1000)
    assert tuple(tinted[0, 0]) == (70, 130, 180)  # stuff: its class colour (sky)


def test_panoptic_result_renders(tmp_path):
    rng = np.random.default_rng(1)
    names = ["m2f-a", "m2f-b"]
    rows = [
        ModelScores(n, "model", 44_000_000, 80.0, panoptic=panoptic_scores(rng, 50.0 + 10 * i))
        for i, n in enumerate(names)
    ]
    rows[1].panoptic["pq_stuff"] = math.nan
    result = EvaluationResult("cityscapes", "val", 10, CLASSES, 255, rows, qualitative=[sample(rng, "s0", names, True)])
    written = write_report(result, tmp_path)
    assert {"per_class_bars.png", "qualitative.png", "results.json", "results.md"} == set(written)
    for name in ("per_class_bars.png", "qualitative.png"):
        assert_png(written[name])
    lines = markdown_table(result).splitlines()
    header = split_cells(lines[0])
    assert header[5:10] == ["PQ", "SQ", "RQ", "PQ_th", "PQ_st"] and "mIoU" not in header
    b = split_cells(lines[3])
    assert b[5] == "**60.0**" and b[9] == "-"
    assert json.loads(written["results.json"].read_text())["models"][0]["panoptic"]["pq"] == 50.0

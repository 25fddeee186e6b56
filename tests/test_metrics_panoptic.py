"""PanopticMetric against cityscapesscripts' COCO-format panoptic evaluator, run on PNG + JSON files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from cityscapesscripts.evaluation import evalPanopticSemanticLabeling as reference
from PIL import Image

from segmerge.errors import SegmergeError
from segmerge.labels import cityscapes_categories
from segmerge.metrics import PanopticMetric, id2rgb, rgb2id

CATEGORIES = [
    {"id": 7, "name": "road", "isthing": 0},
    {"id": 11, "name": "building", "isthing": 0},
    {"id": 21, "name": "vegetation", "isthing": 0},
    {"id": 23, "name": "sky", "isthing": 0},
    {"id": 24, "name": "person", "isthing": 1},
    {"id": 26, "name": "car", "isthing": 1},
    {"id": 33, "name": "bicycle", "isthing": 1},
]
STUFF = [c["id"] for c in CATEGORIES if not c["isthing"]]
THINGS = [c["id"] for c in CATEGORIES if c["isthing"]]
KNOWN = STUFF + THINGS
UNSCORED = 6  # a category id the evaluation does not list (Cityscapes' 'ground')
H, W = 40, 56


def _random_rect(rng, min_size=3, max_size=18):
    h, w = rng.integers(min_size, max_size, size=2)
    y, x = rng.integers(0, H - h + 1), rng.integers(0, W - w + 1)
    return slice(y, y + h), slice(x, x + w)


def _finish(rng, index: np.ndarray, categories: dict[int, int], crowd: set[int]):
    """Give the segments present in ``index`` (0 = void) random RGB-encodable ids and a segments_info."""
    present = [int(s) for s in np.unique(index) if s != 0]
    ids = rng.choice(np.arange(1, 2**24), size=len(present), replace=False)
    id_map = np.zeros_like(index)
    info = []
    for seg, sid in zip(present, ids, strict=True):
        mask = index == seg
        id_map[mask] = sid
        info.append(
            {"id": int(sid), "category_id": categories[seg], "iscrowd": int(seg in crowd), "area": int(mask.sum())}
        )
    rng.shuffle(info)  # the reference uses the last crowd segment of a category: make the order matter
    return id_map, info


def random_gt(rng):
    """Stuff bands, thing rectangles on top (some crowd, some of an unscored category), void holes.

    Also returns the map before the void holes were cut: what a model sees under the void.
    """
    index = np.zeros((H, W), dtype=np.int64)
    categories: dict[int, int] = {}
    crowd: set[int] = set()
    rows = np.sort(rng.choice(np.arange(4, H - 4), size=3, replace=False))
    for band, (top, bottom) in enumerate(zip([0, *rows], [*rows, H], strict=True)):
        category = int(rng.choice(STUFF))
        # One segment per stuff category, as in COCO/Cityscapes: bands of the same category share it.
        seg = next((s for s, c in categories.items() if c == category), 1 + band)
        categories[seg] = category
        index[top:bottom] = seg
    for k in range(int(rng.integers(4, 10))):
        seg = 100 + k
        roll = rng.random()
        categories[seg] = UNSCORED if roll < 0.08 else int(rng.choice(THINGS))
        if 0.08 <= roll < 0.3:
            crowd.add(seg)
        index[_random_rect(rng)] = seg
    underneath = index.copy()
    for _ in range(int(rng.integers(1, 4))):
        index[_random_rect(rng, 3, 16)] = 0
    return index, underneath, categories, crowd


def perturbed_prediction(rng, gt_index, gt_categories):
    """A plausible prediction: gt segments kept, shifted, eroded, split, merged, relabelled or dropped.

    ``gt_index`` is the ground truth before void was cut out, so predictions extend over void.
    """
    index = gt_index.copy()
    categories = {s: (c if c in KNOWN else int(rng.choice(KNOWN))) for s, c in gt_categories.items()}
    next_seg = 1000
    background = [s for s, c in categories.items() if c in STUFF]
    for seg in list(gt_categories):
        mask = gt_index == seg
        if not mask.any():
            continue
        action = rng.choice(["keep", "shift", "shift", "erode", "split", "merge", "relabel", "drop"])
        if action == "shift":
            dy, dx = rng.integers(-5, 6, size=2)
            index[mask] = rng.choice(background + [0])
            index[np.roll(mask, (dy, dx), axis=(0, 1))] = seg
        elif action == "erode":
            inner = mask & np.roll(mask, 1, 0) & np.roll(mask, -1, 0) & np.roll(mask, 1, 1) & np.roll(mask, -1, 1)
            index[mask & ~inner] = rng.choice(background + [0])
        elif action == "split":
            cols = np.nonzero(mask.any(axis=0))[0]
            cut = int(rng.integers(cols.min(), cols.max() + 1))
            side = mask.copy()
            side[:, :cut] = False
            index[side] = next_seg
            categories[next_seg] = categories[seg]
            next_seg += 1
        elif action == "merge":
            same = [s for s in gt_categories if s != seg and categories[s] == categories[seg]]
            if same:
                index[index == int(rng.choice(same))] = seg
        elif action == "relabel":
            categories[seg] = int(rng.choice([c for c in KNOWN if c != categories[seg]]))
        elif action == "drop":
            index[mask] = rng.choice(background + [0])
    for _ in range(int(rng.integers(0, 4))):  # spurious detections, often over void or crowd
        index[_random_rect(rng, 2, 12)] = next_seg
        categories[next_seg] = int(rng.choice(KNOWN))
        next_seg += 1
    return index, categories


def random_dataset(seed: int, n_images: int):
    rng = np.random.default_rng(seed)
    images = []
    for i in range(n_images):
        gt_index, underneath, gt_categories, crowd = random_gt(rng)
        pred_index, pred_categories = perturbed_prediction(rng, underneath, gt_categories)
        gt_ids, gt_info = _finish(rng, gt_index, gt_categories, crowd)
        pred_ids, pred_info = _finish(rng, pred_index, pred_categories, set())
        images.append((f"img{i:03d}", gt_ids, gt_info, pred_ids, pred_info))
    return images


def write_coco_panoptic(root: Path, images, which: str) -> tuple[Path, Path]:
    folder = root / which
    folder.mkdir()
    annotations = []
    for name, gt_ids, gt_info, pred_ids, pred_info in images:
        ids, info = (gt_ids, gt_info) if which == "gt" else (pred_ids, pred_info)
        Image.fromarray(id2rgb(ids)).save(folder / f"{name}.png")
        annotations.append({"image_id": name, "file_name": f"{name}.png", "segments_info": info})
    json_file = root / f"{which}.json"
    json_file.write_text(json.dumps({"annotations": annotations, "categories": CATEGORIES}))
    return json_file, folder


def reference_stats(tmp_path: Path, images):
    """The per-category counts and averages of cityscapesscripts, computed from the files on disk."""
    gt_json, gt_folder = write_coco_panoptic(tmp_path, images, "gt")
    pred_json, pred_folder = write_coco_panoptic(tmp_path, images, "pred")
    gt_anns = json.loads(gt_json.read_text())["annotations"]
    pred_anns = {a["image_id"]: a for a in json.loads(pred_json.read_text())["annotations"]}
    categories = {c["id"]: c for c in CATEGORIES}
    pairs = [(a, pred_anns[a["image_id"]]) for a in gt_anns]
    stat = reference.pq_compute_single_core(0, pairs, str(gt_folder), str(pred_folder), categories)
    return stat, reference.average_pq(stat, categories)


def ours(images, with_area: bool = True) -> PanopticMetric:
    metric = PanopticMetric(CATEGORIES)
    for _, gt_ids, gt_info, pred_ids, pred_info in images:
        if not with_area:
            gt_info = [{k: v for k, v in s.items() if k != "area"} for s in gt_info]
        metric.update(gt_ids, gt_info, pred_ids, pred_info)
    return metric


def assert_same(a, b) -> None:
    """Equal up to float summation order; NaN (category never seen) equals NaN."""
    da, db = a.as_dict(), b.as_dict()
    for ca, cb in zip(da.pop("per_class"), db.pop("per_class"), strict=True):
        assert ca == pytest.approx(cb, nan_ok=True)
    assert da == pytest.approx(db, nan_ok=True)


def assert_agrees(result, stat, expected) -> None:
    for group, suffix in (("All", ""), ("Things", "_things"), ("Stuff", "_stuff")):
        for m in ("pq", "sq", "rq"):
            assert getattr(result, m + suffix) == pytest.approx(100 * expected[group][m], abs=1e-3), (group, m)
    assert (result.n, result.n_things, result.n_stuff) == (
        expected["All"]["n"],
        expected["Things"]["n"],
        expected["Stuff"]["n"],
    )
    for cls in result.per_class:
        ref = stat[cls.category_id]
        assert (cls.tp, cls.fp, cls.fn) == (ref.tp, ref.fp, ref.fn), cls.name
        if ref.tp + ref.fp + ref.fn == 0:
            assert math.isnan(cls.pq)
            continue
        for m in ("pq", "sq", "rq"):
            assert getattr(cls, m) == pytest.approx(100 * expected["per_class"][cls.category_id][m], abs=1e-3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_dataset_agrees_with_cityscapesscripts(tmp_path, capsys, seed):
    images = random_dataset(seed, n_images=8)
    stat, expected = reference_stats(tmp_path, images)
    result = ours(images).compute()
    assert_agrees(result, stat, expected)
    # The generator must exercise both outcomes, or the comparison proves little.
    assert sum(c.tp for c in result.per_class) > 0
    assert sum(c.fp for c in result.per_class) > 0 and sum(c.fn for c in result.per_class) > 0
    assert 0 < result.pq < 100
    # gt areas are optional: counting pixels gives the same numbers when the JSON areas are right.
    assert_same(ours(images, with_area=False).compute(), result)


def test_official_entry_point_on_files(tmp_path, capsys):
    """evaluatePanoptic itself (JSON + PNG folders, worker processes) gives the same numbers."""
    images = random_dataset(7, n_images=4)
    gt_json, gt_folder = write_coco_panoptic(tmp_path, images, "gt")
    pred_json, pred_folder = write_coco_panoptic(tmp_path, images, "pred")
    expected = reference.evaluatePanoptic(
        str(gt_json), str(gt_folder), str(pred_json), str(pred_folder), str(tmp_path / "results.json")
    )
    result = ours(images).compute()
    for group, suffix in (("All", ""), ("Things", "_things"), ("Stuff", "_stuff")):
        for m in ("pq", "sq", "rq"):
            assert getattr(result, m + suffix) == pytest.approx(100 * expected[group][m], abs=1e-3)


def test_summed_states_equal_one_metric_fed_everything():
    images = random_dataset(3, n_images=6)
    everything = ours(images)
    first, second = ours(images[:2]), ours(images[2:])
    total = first + second
    assert_same(total.compute(), everything.compute())
    merged = PanopticMetric(CATEGORIES)
    merged.load_state(first.state())
    merged.merge_state(second.state())
    merged.sync()  # torch.distributed not initialised: no-op
    for name, value in everything.state().items():
        assert torch.allclose(merged.state()[name], value)
    merged.reset()
    with pytest.raises(SegmergeError, match="no segments"):
        merged.compute()


def _single_segment_image(n_pred_pixels_on_gt: int):
    """gt: one 'car' of 1000 pixels; pred: a 'car' covering ``n`` of them, a 'road' on the rest."""
    gt = np.full((20, 100), 5, dtype=np.int64)
    gt[10:] = 9
    pred = np.full_like(gt, 8)
    pred.reshape(-1)[:n_pred_pixels_on_gt] = 3
    gt_info = [
        {"id": 5, "category_id": 26, "iscrowd": 0},
        {"id": 9, "category_id": 7, "iscrowd": 0},
    ]
    pred_info = [{"id": 3, "category_id": 26}, {"id": 8, "category_id": 7}]
    return gt, gt_info, pred, pred_info


def test_perfect_prediction_is_100():
    for seed in range(3):
        metric = PanopticMetric(CATEGORIES)
        for _, gt_ids, gt_info, _, _ in random_dataset(seed, n_images=3):
            # The gt itself, with crowd regions (and unscored categories) left unpredicted like void.
            pred_info = [
                {"id": s["id"], "category_id": s["category_id"]}
                for s in gt_info
                if s["category_id"] in KNOWN and not s["iscrowd"]
            ]
            pred_ids = np.where(np.isin(gt_ids, [s["id"] for s in pred_info]), gt_ids, 0)
            metric.update(torch.from_numpy(gt_ids), gt_info, torch.from_numpy(pred_ids), pred_info)
        result = metric.compute()
        assert (result.pq, result.sq, result.rq) == (100.0, 100.0, 100.0)
        assert sum(c.fp + c.fn for c in result.per_class) == 0


@pytest.mark.parametrize(("n", "matched"), [(501, True), (500, False), (499, False)])
def test_iou_must_exceed_one_half(n, matched):
    gt, gt_info, pred, pred_info = _single_segment_image(n)
    metric = PanopticMetric(CATEGORIES)
    metric.update(gt, gt_info, pred, pred_info)
    car = next(c for c in metric.compute().per_class if c.name == "car")
    assert (car.tp, car.fp, car.fn) == ((1, 0, 0) if matched else (0, 1, 1))
    if matched:
        assert car.sq == pytest.approx(100 * n / 1000)


def test_shifted_segment_just_below_half_iou_does_not_match():
    def image(shift: int, void_right: bool):
        gt = np.full((10, 30), 3, dtype=np.int64)  # road everywhere ...
        gt[:, 5:15] = 1  # ... but for a 100-pixel person
        if void_right:
            gt[:, 15:] = 0
        pred = np.full_like(gt, 4)
        pred[:, 5 + shift : 15 + shift] = 2
        gt_info = [{"id": 1, "category_id": 24, "iscrowd": 0}, {"id": 3, "category_id": 7, "iscrowd": 0}]
        pred_info = [{"id": 2, "category_id": 24}, {"id": 4, "category_id": 7}]
        metric = PanopticMetric(CATEGORIES)
        metric.update(gt, gt_info, pred, pred_info)
        return next(c for c in metric.compute().per_class if c.name == "person")

    assert image(3, void_right=False).tp == 1  # IoU 70/130 = 0.54
    assert (image(4, void_right=False).tp, image(4, void_right=False).fp) == (0, 1)  # IoU 60/140 = 0.43
    # The same shift onto void: void is taken out of the union (IoU 60/100), so it matches.
    person = image(4, void_right=True)
    assert (person.tp, person.sq) == (1, pytest.approx(60.0))


def test_only_the_last_crowd_segment_of_a_category_excuses_predictions(tmp_path, capsys):
    """A quirk of the COCO/Cityscapes code that we reproduce: one crowd region per category and image."""
    gt = np.full((10, 20), 9, dtype=np.int64)
    gt[:, :5], gt[:, 10:15] = 5, 6  # two car crowds
    gt_info = [
        {"id": 5, "category_id": 26, "iscrowd": 1, "area": 50},
        {"id": 6, "category_id": 26, "iscrowd": 1, "area": 50},
        {"id": 9, "category_id": 7, "iscrowd": 0, "area": 100},
    ]
    pred = np.where(gt == 9, 8, gt + 10)
    pred_info = [{"id": 15, "category_id": 26}, {"id": 16, "category_id": 26}, {"id": 8, "category_id": 7}]
    metric = PanopticMetric(CATEGORIES)
    metric.update(gt, gt_info, pred, pred_info)
    car = next(c for c in metric.compute().per_class if c.name == "car")
    assert car.fp == 1  # the car predicted on crowd 5: only crowd 6, listed last, is consulted
    stat, _ = reference_stats(tmp_path, [("quirk", gt, gt_info, pred, pred_info)])
    assert stat[26].fp == 1


def test_predictions_on_crowd_and_void_are_not_false_positives():
    gt = np.zeros((10, 10), dtype=np.int64)
    gt[:, :5] = 7  # a crowd of cars; the right half is void
    gt_info = [{"id": 7, "category_id": 26, "iscrowd": 1}]
    pred = np.zeros_like(gt)
    pred[:, 2:8] = 1  # half crowd, half void: ignored
    pred[0, :2] = 2  # a person on the car crowd: a false positive (crowd only excuses its own category)
    metric = PanopticMetric(CATEGORIES)
    metric.update(gt, gt_info, pred, [{"id": 1, "category_id": 26}, {"id": 2, "category_id": 24}])
    per_class = {c.name: c for c in metric.compute().per_class}
    assert (per_class["car"].fp, per_class["car"].fn) == (0, 0)
    assert per_class["person"].fp == 1
    assert math.isnan(per_class["car"].pq)


def test_rgb_encoding_round_trips_and_matches_the_reference():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 2**24, size=(5, 7))
    rgb = id2rgb(ids)
    assert rgb.dtype == np.uint8 and rgb.shape == (5, 7, 3)
    assert np.array_equal(rgb2id(rgb), ids)
    assert np.array_equal(reference.rgb2id(rgb), ids)
    assert rgb2id(id2rgb(123456)) == 123456 == reference.rgb2id(id2rgb(123456))
    with pytest.raises(SegmergeError, match="RGB"):
        id2rgb(np.array([[2**24]]))


def test_bad_inputs_name_what_is_wrong():
    gt, gt_info, pred, pred_info = _single_segment_image(600)
    metric = PanopticMetric(CATEGORIES)
    with pytest.raises(SegmergeError, match=r"\(20, 100\).*\(20, 99\)"):
        metric.update(gt[:, :99], gt_info, pred, pred_info)
    with pytest.raises(SegmergeError, match="rgb2id"):
        metric.update(id2rgb(gt), gt_info, id2rgb(pred), pred_info)
    with pytest.raises(SegmergeError, match=r"\[8\]"):
        metric.update(gt, gt_info, pred, pred_info[:1])
    with pytest.raises(SegmergeError, match=r"\[4\]"):
        metric.update(gt, gt_info, pred, [*pred_info, {"id": 4, "category_id": 7}])
    with pytest.raises(SegmergeError, match="category_id 99"):
        metric.update(gt, gt_info, pred, [pred_info[0], {"id": 8, "category_id": 99}])
    with pytest.raises(SegmergeError, match=r"\[9\]"):
        metric.update(gt, gt_info[:1], pred, pred_info)
    with pytest.raises(SegmergeError, match="not unique"):
        PanopticMetric([*CATEGORIES, CATEGORIES[0]])


def test_cityscapes_categories_follow_cityscapesscripts_labels():
    from cityscapesscripts.helpers.labels import trainId2label

    for ids in ("train_id", "label_id"):
        for train_id, cat in enumerate(cityscapes_categories(ids)):
            label = trainId2label[train_id]
            assert cat["name"] == label.name
            assert cat["id"] == (train_id if ids == "train_id" else label.id)
            assert cat["isthing"] == int(label.hasInstances)


def write_cityscapes_like(root: Path, images, seed: int):
    """The files as a Cityscapes evaluation has them: string image ids, other file names for the
    predictions, and the prediction JSON listing the images in another order than the ground truth."""
    rng = np.random.default_rng(seed)
    gt_anns, pred_anns = [], []
    for side in ("gt", "pred"):
        (root / side).mkdir()
    for k, (_, gt_ids, gt_info, pred_ids, pred_info) in enumerate(images):
        image_id = f"frankfurt_{seed:06d}_{k:06d}"
        Image.fromarray(id2rgb(gt_ids)).save(root / "gt" / f"{image_id}_gtFine_panoptic.png")
        Image.fromarray(id2rgb(pred_ids)).save(root / "pred" / f"{image_id}_leftImg8bit.png")
        gt_anns.append({"image_id": image_id, "file_name": f"{image_id}_gtFine_panoptic.png", "segments_info": gt_info})
        pred_anns.append({"image_id": image_id, "file_name": f"{image_id}_leftImg8bit.png", "segments_info": pred_info})
    rng.shuffle(pred_anns)
    (root / "gt.json").write_text(json.dumps({"annotations": gt_anns, "categories": CATEGORIES}))
    (root / "pred.json").write_text(json.dumps({"annotations": pred_anns, "categories": CATEGORIES}))
    return root / "gt.json", root / "gt", root / "pred.json", root / "pred"


def single_core_reference(gt_json: Path, gt_dir: Path, pred_json: Path, pred_dir: Path):
    """cityscapesscripts' per-category stats on one process, images in the ground truth's order."""
    gt_anns = json.loads(gt_json.read_text())["annotations"]
    pred_anns = {a["image_id"]: a for a in json.loads(pred_json.read_text())["annotations"]}
    pairs = [(a, pred_anns[a["image_id"]]) for a in gt_anns]
    return reference.pq_compute_single_core(0, pairs, str(gt_dir), str(pred_dir), {c["id"]: c for c in CATEGORIES})


def test_files_with_crowd_void_string_ids_and_shuffled_order_agree_with_cityscapesscripts(tmp_path, capsys):
    from typer.testing import CliRunner

    from segmerge.cli.app import app
    from segmerge.evaluation.scoring import score_panoptic_folders

    images = random_dataset(11, n_images=12)
    assert any(s["iscrowd"] for _, _, info, _, _ in images for s in info)  # crowd regions
    assert all((gt_ids == 0).any() for _, gt_ids, _, _, _ in images)  # void in every image
    files = write_cityscapes_like(tmp_path, images, seed=11)
    expected = reference.evaluatePanoptic(*(str(f) for f in files), str(tmp_path / "reference.json"))
    stat = single_core_reference(*files)

    by_workers = {n: score_panoptic_folders(*files, workers=n) for n in (1, 2, 3)}
    counts = by_workers[1]
    for other in by_workers.values():  # the same numbers, bit for bit, whatever the number of workers
        for name in ("tp", "fp", "fn", "iou_sum"):
            assert np.array_equal(getattr(other, name), getattr(counts, name)), name
    for k, category in enumerate(CATEGORIES):  # counts and IoU sums are the reference's, bit for bit
        ref = stat[category["id"]]
        assert (counts.tp[k], counts.fp[k], counts.fn[k]) == (ref.tp, ref.fp, ref.fn), category["name"]
        assert counts.iou_sum[k] == ref.iou, category["name"]

    result = counts.compute()
    assert sum(c.tp for c in result.per_class) > 0 and sum(c.fp for c in result.per_class) > 0
    for group, suffix in (("All", ""), ("Things", "_things"), ("Stuff", "_stuff")):
        assert getattr(result, "n" + suffix) == expected[group]["n"]
        for m in ("pq", "sq", "rq"):  # the reference sums its worker processes' shares: equal up to that order
            assert getattr(result, m + suffix) == pytest.approx(100 * expected[group][m], rel=1e-12, abs=1e-12)
    for cls in result.per_class:
        ref = expected["per_class"][cls.category_id]
        for m in ("pq", "sq", "rq"):
            if math.isnan(getattr(cls, m)):  # never seen: the reference prints 0 and leaves it out too
                assert ref[m] == 0.0 and cls.tp + cls.fp + cls.fn == 0
            else:
                assert getattr(cls, m) == pytest.approx(100 * ref[m], rel=1e-12, abs=1e-12), (cls.name, m)

    flags = ["--gt-json", files[0], "--gt-dir", files[1], "--pred-json", files[2], "--pred-dir", files[3]]
    out = CliRunner().invoke(app, ["score", "--panoptic", *map(str, flags), "--json", "--workers", "2"])
    assert out.exit_code == 0, out.output
    printed = json.loads(out.stdout)
    assert printed["pq"] == result.pq and printed["per_class"][0]["tp"] == result.per_class[0].tp


def test_more_segments_than_a_byte_can_index_agree_with_cityscapesscripts(tmp_path, capsys):
    """Over 253 segments in one image: the id -> index table is 16-bit then."""
    rng = np.random.default_rng(5)
    index = np.arange(H * W).reshape(H, W) // 7 + 1  # 320 segments of 7 pixels
    index[:2] = 0
    categories = {int(s): int(rng.choice(KNOWN)) for s in np.unique(index) if s}
    pred_index = np.roll(index, 2, axis=1)
    gt_ids, gt_info = _finish(rng, index, categories, crowd={5, 6})
    pred_ids, pred_info = _finish(rng, pred_index, categories, set())
    images = [("many", gt_ids, gt_info, pred_ids, pred_info)]
    assert len(gt_info) > 300
    files = write_cityscapes_like(tmp_path, images, seed=5)
    stat = single_core_reference(*files)
    metric = ours(images)
    for k, category in enumerate(CATEGORIES):
        ref = stat[category["id"]]
        assert (int(metric.tp[k]), int(metric.fp[k]), int(metric.fn[k])) == (ref.tp, ref.fp, ref.fn)
        assert float(metric.iou_sum[k]) == ref.iou
    assert int(metric.tp.sum()) > 0


def test_the_hotcoco_engine_counts_as_cityscapesscripts(tmp_path, capsys):
    """``--engine hotcoco`` (optional package): the reference's counts; IoU sums up to summation order."""
    from segmerge.evaluation.scoring import score_panoptic_folders

    images = random_dataset(12, n_images=6)
    files = write_cityscapes_like(tmp_path, images, seed=12)
    try:
        import hotcoco  # noqa: F401
    except ImportError:
        with pytest.raises(SegmergeError, match="pip install hotcoco"):
            score_panoptic_folders(*files, engine="hotcoco")
        pytest.skip("hotcoco is not installed (it is optional)")
    stat = single_core_reference(*files)
    counts = score_panoptic_folders(*files, engine="hotcoco")
    for k, category in enumerate(CATEGORIES):
        ref = stat[category["id"]]
        assert (counts.tp[k], counts.fp[k], counts.fn[k]) == (ref.tp, ref.fp, ref.fn), category["name"]
        assert counts.iou_sum[k] == pytest.approx(ref.iou, rel=1e-12, abs=1e-12)

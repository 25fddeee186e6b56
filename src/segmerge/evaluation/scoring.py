"""Scoring predictions already on disk, from any model: label PNGs and COCO panoptic files.

Semantic: a folder of prediction PNGs (trainIds) against a folder of label PNGs, matched by
file name (Cityscapes suffixes such as ``_leftImg8bit`` / ``_gtFine_labelTrainIds`` are
ignored when matching). Panoptic: COCO panoptic format (PNG with RGB-encoded segment ids
plus a JSON of ``segments_info``) for both predictions and ground truth.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from PIL import Image

from segmerge.errors import SegmergeError

SUFFIXES = re.compile(r"(_leftImg8bit|_gtFine_labelTrainIds|_gtFine_labelIds|_gtFine_color|_labelTrainIds|_pred)$")


def match_key(path: Path) -> str:
    """Matching is by file name alone, so flat prediction folders match per-city label folders."""
    return SUFFIXES.sub("", path.with_suffix("").name)


def _by_key(folder: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in sorted(folder.rglob("*.png")):
        key = match_key(p)
        if key in out:
            raise SegmergeError(f"{p} and {out[key]} have the same name; file names must be unique to pair them")
        out[key] = p
    return out


def paired_files(pred_dir: Path, gt_dir: Path) -> list[tuple[Path, Path]]:
    for d, what in ((pred_dir, "--pred"), (gt_dir, "--gt")):
        if not d.is_dir():
            raise SegmergeError(f"{what} {d}: not a folder")
    preds, gts = _by_key(pred_dir), _by_key(gt_dir)
    if not gts:
        raise SegmergeError(f"--gt {gt_dir}: no PNG label files found")
    missing = sorted(set(gts) - set(preds))
    extra = sorted(set(preds) - set(gts))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} labels have no prediction (e.g. {gts[missing[0]]})")
        if extra:
            parts.append(f"{len(extra)} predictions have no label (e.g. {preds[extra[0]]})")
        raise SegmergeError("prediction and label files do not match: " + "; ".join(parts))
    return [(preds[k], gts[k]) for k in sorted(gts)]


def read_label_png(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            if img.mode not in ("L", "P", "I", "I;16", "I;16B"):
                raise SegmergeError(f"{path}: a {img.mode} image; label/prediction PNGs hold one channel of class ids")
            return np.asarray(img, dtype=np.int64)
    except (OSError, ValueError) as exc:
        raise SegmergeError(f"{path}: cannot read the PNG: {exc}") from None


def score_semantic_folders(pred_dir: Path, gt_dir: Path, num_classes: int, class_names, ignore_index: int = 255):
    from segmerge.metrics import SemanticMetric

    metric = SemanticMetric(num_classes, ignore_index=ignore_index, class_names=class_names)
    for pred_path, gt_path in paired_files(pred_dir, gt_dir):
        pred, gt = read_label_png(pred_path), read_label_png(gt_path)
        if pred.shape != gt.shape:
            raise SegmergeError(f"{pred_path}: prediction is {pred.shape} but its label {gt_path} is {gt.shape}")
        bad = (pred < 0) | (pred >= num_classes)
        if bad.any():
            raise SegmergeError(
                f"{pred_path}: holds class id {int(pred[bad][0])}, outside 0..{num_classes - 1} "
                f"(--num-classes {num_classes})"
            )
        bad = ((gt < 0) | (gt >= num_classes)) & (gt != ignore_index)
        if bad.any():
            raise SegmergeError(
                f"{gt_path}: holds label {int(gt[bad][0])}, neither a class (0..{num_classes - 1}) "
                f"nor ignore ({ignore_index})"
            )
        metric.update(pred, gt)
    if not metric.confusion_matrix.sum():
        raise SegmergeError(f"--gt {gt_dir}: every label pixel is ignore ({ignore_index}); nothing to score")
    return metric


def read_panoptic_json(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise SegmergeError(f"{path}: cannot read the panoptic JSON: {exc}") from None
    if "annotations" not in data:
        raise SegmergeError(f"{path}: not COCO panoptic format (no 'annotations')")
    return data


def score_panoptic_folders(gt_json: Path, gt_dir: Path, pred_json: Path, pred_dir: Path):
    from segmerge.metrics.panoptic import PanopticMetric, rgb2id

    gt = read_panoptic_json(gt_json)
    pred = read_panoptic_json(pred_json)
    categories = gt.get("categories") or pred.get("categories")
    if not categories:
        raise SegmergeError(f"{gt_json}: has no 'categories' list")
    metric = PanopticMetric(categories)
    preds = {a["image_id"]: a for a in pred["annotations"]}
    for ann in gt["annotations"]:
        p = preds.get(ann["image_id"])
        if p is None:
            raise SegmergeError(f"{pred_json}: no prediction for image_id {ann['image_id']!r}")
        gt_ids = rgb2id(_read_rgb(gt_dir / ann["file_name"]))
        pred_ids = rgb2id(_read_rgb(pred_dir / p["file_name"]))
        if gt_ids.shape != pred_ids.shape:
            raise SegmergeError(f"{pred_dir / p['file_name']}: is {pred_ids.shape}, its ground truth {gt_ids.shape}")
        try:
            metric.update(gt_ids, ann["segments_info"], pred_ids, p["segments_info"])
        except SegmergeError as exc:
            raise SegmergeError(f"{pred_dir / p['file_name']} (vs {gt_dir / ann['file_name']}): {exc}") from None
    return metric


def _read_rgb(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint32)
    except OSError as exc:
        raise SegmergeError(f"{path}: cannot read the panoptic PNG: {exc}") from None

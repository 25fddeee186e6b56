"""Scoring predictions already on disk, from any model: label PNGs and COCO panoptic files.

Semantic: a folder of prediction PNGs (trainIds) against a folder of label PNGs, matched by
file name (Cityscapes suffixes such as ``_leftImg8bit`` / ``_gtFine_labelTrainIds`` are
ignored when matching). Panoptic: COCO panoptic format (PNG with RGB-encoded segment ids
plus a JSON of ``segments_info``) for both predictions and ground truth.

Image pairs are read and counted in worker processes (all cores by default), with numpy
alone: this module and what it imports never load torch. Each pair gives its own counts, and
the counts are added in a fixed order (the ground truth's), so the result does not depend on
the number of workers.
"""

from __future__ import annotations

import ctypes
import io
import json
import multiprocessing
import os
import re
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

from segmerge.errors import SegmergeError
from segmerge.metrics.panoptic_counts import ImageCounts, PanopticCounts, count_image, segments_by_id
from segmerge.metrics.semantic_counts import ConfusionCounts, LabelError, label_confusion

ID_BITS = 0xFFFFFF
"""The segment id in a pixel read as a 32-bit RGBX word (R + 256 G + 65536 B)."""
ENGINES = ("numpy", "hotcoco")
"""How ``score --panoptic`` reads and counts: segmerge's own numpy code, or the optional hotcoco package."""

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


def default_workers() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _context():
    # fork starts workers at once and shares the parent's imports; it is safe while this
    # process runs one thread (torch, when loaded, may run its own, unseen here).
    if sys.platform.startswith("linux") and threading.active_count() == 1 and "torch" not in sys.modules:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def keep_freed_memory() -> None:
    """Have glibc keep freed image buffers for the next image rather than hand them back to the system.

    Each image pair allocates tens of MB (decoded pixels, their copy); returned and re-faulted,
    they cost a fifth of the CPU time in page faults. Called in the worker processes and by the
    ``score`` command, which own their process; a no-op where malloc has no ``mallopt``.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 32 << 20)  # buffers up to 32 MiB come from the heap ...
    mallopt(m_trim_threshold, 256 << 20)  # ... which keeps up to 256 MiB of freed memory


def map_in_order(func: Callable, tasks: Sequence, workers: int | None = None) -> Iterator:
    """``func`` over ``tasks`` in up to ``workers`` processes (None: all cores), results in task order."""
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise SegmergeError(f"--workers must be at least 1, got {workers}")
    workers = min(workers, len(tasks))
    if workers <= 1:
        yield from map(func, tasks)
        return
    with _context().Pool(workers, initializer=keep_freed_memory) as pool:
        yield from pool.imap(func, tasks, chunksize=1)


def _pixels(img: Image.Image, rawmode: str) -> bytes:
    """``img.tobytes("raw", rawmode)`` in one piece: Pillow copies in ImageFile.MAXBLOCK (64 KiB)
    pieces and joins them, which costs more than the copy (4 against 11 ms for 1024x2048 RGB)."""
    block = ImageFile.MAXBLOCK
    ImageFile.MAXBLOCK = max(block, 4 * img.width * img.height)
    try:
        return img.tobytes("raw", rawmode)
    finally:
        ImageFile.MAXBLOCK = block


def read_label_png(path: Path) -> np.ndarray:
    """A one-channel label PNG as it is stored (uint8 for 8-bit files, uint16 for 16-bit ones)."""
    try:
        with Image.open(path) as img:
            if img.mode not in ("L", "P", "I", "I;16", "I;16B"):
                raise SegmergeError(f"{path}: a {img.mode} image; label/prediction PNGs hold one channel of class ids")
            if img.mode in ("L", "P"):
                return np.frombuffer(_pixels(img, img.mode), np.uint8).reshape(img.height, img.width)
            return np.asarray(img)
    except (OSError, ValueError) as exc:
        raise SegmergeError(f"{path}: cannot read the PNG: {exc}") from None


def _semantic_pair(task) -> np.ndarray:
    pred_path, gt_path, num_classes, ignore_index = task
    pred, gt = read_label_png(pred_path), read_label_png(gt_path)
    if pred.shape != gt.shape:
        raise SegmergeError(f"{pred_path}: prediction is {pred.shape} but its label {gt_path} is {gt.shape}")
    try:
        return label_confusion(pred, gt, num_classes, ignore_index)
    except LabelError as exc:
        if exc.which == "pred":
            raise SegmergeError(
                f"{pred_path}: holds class id {exc.value}, outside 0..{num_classes - 1} (--num-classes {num_classes})"
            ) from None
        raise SegmergeError(
            f"{gt_path}: holds label {exc.value}, neither a class (0..{num_classes - 1}) nor ignore ({ignore_index})"
        ) from None


def score_semantic_folders(
    pred_dir: Path, gt_dir: Path, num_classes: int, class_names, ignore_index: int = 255, workers: int | None = None
) -> ConfusionCounts:
    """The confusion matrix of every prediction PNG against its label (``workers`` processes; None: all cores)."""
    counts = ConfusionCounts(num_classes, ignore_index=ignore_index, class_names=class_names)
    tasks = [(pred, gt, num_classes, ignore_index) for pred, gt in paired_files(pred_dir, gt_dir)]
    for confusion in map_in_order(_semantic_pair, tasks, workers):
        counts.add(confusion)
    if not counts.confusion_matrix.sum():
        raise SegmergeError(f"--gt {gt_dir}: every label pixel is ignore ({ignore_index}); nothing to score")
    return counts


def read_panoptic_json(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise SegmergeError(f"{path}: cannot read the panoptic JSON: {exc}") from None
    if "annotations" not in data:
        raise SegmergeError(f"{path}: not COCO panoptic format (no 'annotations')")
    return data


def _pyspng():
    """The optional pyspng module (libspng: decodes these PNGs faster than Pillow), or None."""
    global _PYSPNG
    if _PYSPNG is False:
        try:
            import pyspng
        except ImportError:
            pyspng = None
        _PYSPNG = pyspng
    return _PYSPNG


_PYSPNG = False  # not looked for yet


def _is_8bit_rgb_png(data: bytes) -> bool:
    return data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and data[24] == 8 and data[25] in (2, 6)


def read_panoptic_png(path: Path, decoder: str | None = None) -> np.ndarray:
    """A COCO panoptic PNG as [H, W] 32-bit words whose low 24 bits are the segment id (``& ID_BITS``).

    The decoded RGB(A) pixels are read as they lie in memory, one 32-bit word each: no
    per-channel arithmetic, no 64-bit copy. ``decoder``: "pyspng" (the optional package, used
    by default when installed, for 8-bit RGB/RGBA files) or "pillow"; both decode the same pixels.
    Images in other modes are converted to RGB by Pillow.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SegmergeError(f"{path}: cannot read the panoptic PNG: {exc}") from None
    spng = _pyspng() if decoder in (None, "pyspng") else None
    if spng is not None and _is_8bit_rgb_png(data):
        try:
            return spng.load(data, format="RGBA").view("<u4")[..., 0]
        except Exception:  # a file libspng refuses gets Pillow's verdict and message below
            pass
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.mode not in ("RGB", "RGBA"):
                img = img.convert("RGB")
            pixels = _pixels(img, "RGBX" if img.mode == "RGB" else "RGBA")
            return np.frombuffer(pixels, dtype="<u4").reshape(img.height, img.width)
    except (OSError, ValueError) as exc:
        raise SegmergeError(f"{path}: cannot read the panoptic PNG: {exc}") from None


def _panoptic_pair(task) -> ImageCounts:
    gt_path, gt_segments, pred_path, pred_segments, category_index = task
    gt, pred = read_panoptic_png(gt_path), read_panoptic_png(pred_path)
    if gt.shape != pred.shape:
        raise SegmergeError(f"{pred_path}: is {pred.shape}, its ground truth {gt.shape}")
    try:
        return count_image(gt, gt_segments, pred, pred_segments, category_index, mask=ID_BITS)
    except SegmergeError as exc:
        raise SegmergeError(f"{pred_path} (vs {gt_path}): {exc}") from None


def panoptic_pairs(gt: dict, gt_dir: Path, pred: dict, pred_dir: Path, pred_json: Path) -> Iterable[tuple]:
    """(gt PNG, gt segments, pred PNG, pred segments) per ground-truth annotation, in its order."""
    preds = {a["image_id"]: a for a in pred["annotations"]}
    for ann in gt["annotations"]:
        p = preds.get(ann["image_id"])
        if p is None:
            raise SegmergeError(f"{pred_json}: no prediction for image_id {ann['image_id']!r}")
        yield gt_dir / ann["file_name"], ann["segments_info"], pred_dir / p["file_name"], p["segments_info"]


def score_panoptic_folders(
    gt_json: Path, gt_dir: Path, pred_json: Path, pred_dir: Path, workers: int | None = None, engine: str = "numpy"
) -> PanopticCounts:
    """Per-category PQ counts of COCO panoptic predictions (``workers`` processes; None: all cores).

    ``engine="hotcoco"`` hands the PNGs to the optional hotcoco package (Rust) instead; see
    :func:`_hotcoco_counts` for what that changes.
    """
    if engine not in ENGINES:
        raise SegmergeError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    gt = read_panoptic_json(gt_json)
    pred = read_panoptic_json(pred_json)
    categories = gt.get("categories") or pred.get("categories")
    if not categories:
        raise SegmergeError(f"{gt_json}: has no 'categories' list")
    counts = PanopticCounts(categories)
    pairs = list(panoptic_pairs(gt, Path(gt_dir), pred, Path(pred_dir), pred_json))
    if engine == "hotcoco":
        return _hotcoco_counts(pairs, Path(gt_dir), Path(pred_dir), counts)
    for image in map_in_order(_panoptic_pair, [(*pair, counts.index) for pair in pairs], workers):
        counts.add(image)
    return counts


def _hotcoco_counts(pairs: list[tuple], gt_dir: Path, pred_dir: Path, counts: PanopticCounts) -> PanopticCounts:
    """The counts as hotcoco (``pip install hotcoco``) computes them, with its own threads.

    Its tp/fp/fn are cityscapesscripts' (checked on the benchmark's set and the tests' random
    sets), but it sums the IoUs in another order (SQ and PQ can differ in the last digits of a
    double) and does not check that every ground-truth id in a PNG is listed in its
    segments_info. The JSON-side checks run here first; hotcoco checks the predicted PNGs.
    String image ids (Cityscapes') are numbered for it.
    """
    try:
        from hotcoco import panoptic
    except ImportError:
        raise SegmergeError("--engine hotcoco needs the hotcoco package: pip install hotcoco") from None
    images, gt_anns, pred_anns = [], [], []
    for number, (gt_png, gt_segments, pred_png, pred_segments) in enumerate(pairs, start=1):
        gt_segms = segments_by_id(gt_segments, f"{gt_png.name}: segments_info")
        for sid, info in segments_by_id(pred_segments, f"{pred_png.name}: segments_info").items():
            if int(info["category_id"]) not in counts.index:
                raise SegmergeError(
                    f"{pred_png}: predicted segment {sid} has category_id {info['category_id']}, not one of the "
                    f"categories {sorted(counts.index)}"
                )
        if any("area" not in info for info in gt_segms.values()):
            raise SegmergeError(f"{gt_png}: a ground-truth segment has no 'area'; hotcoco needs it (or use numpy)")
        images.append({"id": number, "file_name": gt_png.name})
        gt_anns.append({"image_id": number, "file_name": str(gt_png.relative_to(gt_dir)), "segments_info": gt_segments})
        pred_anns.append(
            {"image_id": number, "file_name": str(pred_png.relative_to(pred_dir)), "segments_info": pred_segments}
        )
    gt = {"images": images, "annotations": gt_anns, "categories": counts.categories}
    try:
        evaluation = panoptic.PanopticEval(
            gt, {"annotations": pred_anns}, gt_folder=str(gt_dir), pred_folder=str(pred_dir)
        )
        evaluation.evaluate()
        per_class = evaluation.results()["per_class"]
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise SegmergeError(f"hotcoco: {exc}") from None
    for category_id, k in counts.index.items():
        found = per_class.get(category_id)
        if found is not None:
            counts.tp[k], counts.fp[k], counts.fn[k] = found["tp"], found["fp"], found["fn"]
            counts.iou_sum[k] = found["iou"]
    return counts

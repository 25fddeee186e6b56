"""The counting core of panoptic quality, in numpy alone: one image pair -> per-category counts.

:class:`~segmerge.metrics.PanopticMetric` (torch state, for evaluation) and ``segmerge score
--panoptic`` (files, worker processes, no torch) both count with :func:`count_image`; the
rules are listed in :mod:`segmerge.metrics.panoptic`.

How an image pair is counted: every segment id listed in ``segments_info`` gets a dense index
(ids in ascending order), through a lookup table over all 2^24 RGB-encodable ids that each
process keeps and resets after use (only its touched pages cost memory). Void is index 1 and an
id missing from ``segments_info`` index 0. The two index maps are combined into
``gt_index * n_pred + pred_index`` and counted with one ``np.bincount``, a band of rows at a
time so that every temporary stays small. That gives the whole overlap matrix, from which the
segment areas, the checks and the matching follow; the matching itself runs on that small
matrix. The IoUs of the matched pairs are returned in the order the reference visits them and
added one at a time, so the sums are bit for bit those of the reference evaluator run on one
process, whatever the number of worker processes.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from segmerge.errors import SegmergeError

OFFSET = 256 * 256 * 256
"""One more than the largest segment id an RGB PNG can encode."""
VOID = 0
ROWS = 64
"""Rows counted per band: 64 x 2048 pixels keep each temporary within the CPU caches."""

_UNLISTED, _VOID_INDEX, _FIRST = 0, 1, 2


def rgb2id(color):
    """Segment ids from COCO panoptic RGB: ``R + 256 G + 256^2 B``, for an ``[H, W, 3]`` array or one colour.

    A uint8 array gives int32 ids, as cityscapesscripts' ``rgb2id`` does (every id fits: < 2^24).
    """
    if isinstance(color, np.ndarray) and color.ndim == 3:
        if color.dtype == np.uint8:
            ids = color[..., 2].astype(np.int32)
            ids <<= 8
            ids |= color[..., 1]
            ids <<= 8
            ids |= color[..., 0]
            return ids
        color = color.astype(np.int64)
        return color[..., 0] + 256 * color[..., 1] + 256 * 256 * color[..., 2]
    return int(color[0]) + 256 * int(color[1]) + 256 * 256 * int(color[2])


def id2rgb(id_map):
    """Inverse of :func:`rgb2id`: an ``[H, W, 3]`` uint8 array for an id map, an ``(r, g, b)`` list for one id."""
    if isinstance(id_map, np.ndarray):
        ids = id_map.astype(np.int64)
        if ids.min(initial=0) < 0 or ids.max(initial=0) >= OFFSET:
            raise SegmergeError(f"segment ids must lie in [0, {OFFSET}) to fit in RGB, got {ids.min()}..{ids.max()}")
        rgb = np.empty((*ids.shape, 3), dtype=np.uint8)
        for channel in range(3):
            rgb[..., channel] = ids % 256
            ids = ids // 256
        return rgb
    value = int(id_map)
    return [value % 256, (value // 256) % 256, value // (256 * 256) % 256]


@dataclass(frozen=True)
class PanopticClassResult:
    name: str
    category_id: int
    isthing: bool
    pq: float
    sq: float
    rq: float
    tp: int
    fp: int
    fn: int


@dataclass(frozen=True)
class PanopticResult:
    """PQ/SQ/RQ in percent over all, thing and stuff categories; ``n*`` = categories averaged."""

    pq: float
    sq: float
    rq: float
    pq_things: float
    sq_things: float
    rq_things: float
    pq_stuff: float
    sq_stuff: float
    rq_stuff: float
    n: int
    n_things: int
    n_stuff: int
    per_class: tuple[PanopticClassResult, ...]

    def as_dict(self) -> dict:
        return asdict(self)


def checked_categories(categories: Sequence[Mapping]) -> tuple[list[dict], dict[int, int]]:
    """The categories as plain dicts, and category id -> position; refuses empty, incomplete or repeated ones."""
    if not categories:
        raise SegmergeError("categories is empty; give COCO-style dicts with id, name and isthing")
    for cat in categories:
        missing = [k for k in ("id", "name", "isthing") if k not in cat]
        if missing:
            raise SegmergeError(f"category {dict(cat)} lacks {', '.join(missing)}")
    ids = [int(c["id"]) for c in categories]
    if len(set(ids)) != len(ids):
        raise SegmergeError(f"category ids {ids} are not unique")
    return [dict(c) for c in categories], {cid: i for i, cid in enumerate(ids)}


def segments_by_id(segments_info: Sequence[Mapping], what: str) -> dict[int, Mapping]:
    """``segments_info`` keyed by segment id, in order; refuses id 0, repeated ids, entries without a category."""
    segments: dict[int, Mapping] = {}
    for info in segments_info:
        if "id" not in info or "category_id" not in info:
            raise SegmergeError(f"{what} entry {dict(info)} needs an 'id' and a 'category_id'")
        sid = int(info["id"])
        if sid == VOID:
            raise SegmergeError(f"{what} lists segment id 0, which is reserved for void (unlabelled) pixels")
        if not 0 < sid < OFFSET:
            raise SegmergeError(f"{what} lists segment id {sid}, outside [1, {OFFSET}) (ids are RGB-encoded)")
        if sid in segments:
            raise SegmergeError(f"{what} lists segment id {sid} twice")
        segments[sid] = info
    return segments


@dataclass(frozen=True)
class ImageCounts:
    """One image's counts per category (positions in the category list), and its matched pairs'
    categories and IoUs in the order the reference adds them."""

    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    matched_category: np.ndarray
    matched_iou: np.ndarray


class _Tables(threading.local):
    def __init__(self) -> None:
        self.tables: dict[tuple[str, type], np.ndarray] = {}


_TABLES = _Tables()


def _table(side: str, n: int) -> np.ndarray:
    """This thread's lookup table for ``side``, wide enough for ``n`` dense indices."""
    dtype = np.uint8 if n <= 255 else np.uint16 if n <= 65535 else np.uint32
    table = _TABLES.tables.get((side, dtype))
    if table is None:
        table = np.zeros(OFFSET, dtype)  # untouched pages stay unallocated
        table[VOID] = _VOID_INDEX
        _TABLES.tables[(side, dtype)] = table
    return table


def _id_array(x, what: str) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise SegmergeError(f"{what} must be a numpy array or torch tensor of segment ids, got {type(x).__name__}")
    if x.ndim == 3 and x.shape[-1] == 3:
        raise SegmergeError(f"{what} has shape {x.shape}, an RGB-encoded panoptic PNG; decode it with rgb2id() first")
    if x.ndim != 2 or x.dtype.kind not in "iu":
        raise SegmergeError(f"{what} must be a 2-D integer map of segment ids, got shape {x.shape} dtype {x.dtype}")
    return x


def _check_range(ids: np.ndarray, what: str) -> None:
    if not ids.size or (ids.dtype.itemsize <= 2 and ids.dtype.kind == "u"):
        return
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= OFFSET:
        raise SegmergeError(f"{what} holds segment ids {low}..{high}, outside [0, {OFFSET})")


def overlap_matrix(gt_ids: np.ndarray, pred_ids: np.ndarray, gt_table, pred_table, shape, mask: int | None):
    """Pixel counts of every (gt index, pred index) pair, as an ``shape`` int64 matrix."""
    n_gt, n_pred = shape
    size = n_gt * n_pred
    wide = np.uint16 if size <= 65536 else np.int64
    counts = np.zeros(size, np.int64)
    height = gt_ids.shape[0]
    band_g = band_p = None
    for top in range(0, height, ROWS):
        g, p = gt_ids[top : top + ROWS], pred_ids[top : top + ROWS]
        if mask is not None:  # RGBX words: keep the 24 id bits
            if band_g is None or band_g.shape != g.shape:
                band_g, band_p = np.empty(g.shape, np.uint32), np.empty(g.shape, np.uint32)
            g, p = np.bitwise_and(g, mask, out=band_g), np.bitwise_and(p, mask, out=band_p)
        key = gt_table.take(g).astype(wide)
        key *= n_pred
        key += pred_table.take(p)
        counts += np.bincount(key.ravel(), minlength=size)
    return counts.reshape(shape)


def _unlisted(ids: np.ndarray, table: np.ndarray, mask: int | None) -> list[int]:
    values = ids & mask if mask is not None else ids
    return [int(v) for v in np.unique(values[table.take(values) == _UNLISTED])]


def count_image(
    gt_ids,
    gt_segments: Sequence[Mapping],
    pred_ids,
    pred_segments: Sequence[Mapping],
    category_index: Mapping[int, int],
    *,
    mask: int | None = None,
) -> ImageCounts:
    """Match one image's predicted segments against its ground truth (the rules of
    :mod:`segmerge.metrics.panoptic`) and count them per category.

    ``gt_ids`` and ``pred_ids`` are 2-D integer id maps of one shape. With ``mask``, they are
    words whose ``mask`` bits are the id (RGBX pixels read as 32-bit words: ``mask=0xFFFFFF``),
    and ids are not range-checked (they cannot exceed 2^24).
    """
    gt = _id_array(gt_ids, "gt_ids")
    pred = _id_array(pred_ids, "pred_ids")
    if gt.shape != pred.shape:
        raise SegmergeError(f"pred_ids shape {pred.shape} does not match gt_ids shape {gt.shape}")
    if mask is None:
        _check_range(gt, "gt_ids")
        _check_range(pred, "pred_ids")
    gt_segms = segments_by_id(gt_segments, "gt_segments")
    pred_segms = segments_by_id(pred_segments, "pred_segments")
    for sid, info in pred_segms.items():
        if int(info["category_id"]) not in category_index:
            raise SegmergeError(
                f"predicted segment {sid} has category_id {info['category_id']}, not one of the "
                f"categories {sorted(category_index)}"
            )
    gt_sorted, pred_sorted = sorted(gt_segms), sorted(pred_segms)
    shape = (_FIRST + len(gt_sorted), _FIRST + len(pred_sorted))
    gt_table, pred_table = _table("gt", shape[0]), _table("pred", shape[1])
    gt_keys = np.asarray(gt_sorted, dtype=np.int64)
    pred_keys = np.asarray(pred_sorted, dtype=np.int64)
    try:
        gt_table[gt_keys] = np.arange(_FIRST, shape[0])
        pred_table[pred_keys] = np.arange(_FIRST, shape[1])
        overlap = overlap_matrix(gt, pred, gt_table, pred_table, shape, mask)
        if overlap[_UNLISTED].any():
            raise SegmergeError(
                f"gt_ids holds segment ids {_unlisted(gt, gt_table, mask)[:5]} that gt_segments does not list; "
                "every non-zero id in the map needs a segments_info entry"
            )
        if overlap[:, _UNLISTED].any():
            raise SegmergeError(
                f"pred_ids holds segment ids {_unlisted(pred, pred_table, mask)[:5]} that pred_segments does not "
                "list; every non-zero id in the map needs a segments_info entry"
            )
    finally:
        gt_table[gt_keys] = _UNLISTED
        pred_table[pred_keys] = _UNLISTED
    return _match(overlap, gt_sorted, gt_segms, pred_sorted, pred_segms, category_index)


def _match(overlap, gt_sorted, gt_segms, pred_sorted, pred_segms, category_index) -> ImageCounts:
    k = len(category_index)
    tp, fp, fn = np.zeros(k, np.int64), np.zeros(k, np.int64), np.zeros(k, np.int64)
    pred_area = overlap.sum(axis=0)[_FIRST:]
    absent = [sid for sid, area in zip(pred_sorted, pred_area.tolist(), strict=True) if area == 0]
    if absent:
        raise SegmergeError(f"pred_segments lists segment ids {absent[:5]} that do not occur in pred_ids")
    gt_pixels = overlap.sum(axis=1)[_FIRST:].tolist()
    gt_area = np.array(
        [int(gt_segms[sid].get("area", pixels)) for sid, pixels in zip(gt_sorted, gt_pixels, strict=True)],
        dtype=np.int64,
    )
    gt_category = np.array([int(gt_segms[sid]["category_id"]) for sid in gt_sorted], dtype=np.int64)
    gt_crowd = np.array([gt_segms[sid].get("iscrowd", 0) == 1 for sid in gt_sorted], dtype=bool)
    pred_category = np.array([int(pred_segms[sid]["category_id"]) for sid in pred_sorted], dtype=np.int64)
    on_void = overlap[_VOID_INDEX, _FIRST:]

    # Candidate pairs in the reference's order (ascending gt id, then pred id): same category, gt not crowd.
    inner = overlap[_FIRST:, _FIRST:]
    gi, pj = np.nonzero(inner)
    keep = (gt_category[gi] == pred_category[pj]) & ~gt_crowd[gi]
    gi, pj = gi[keep], pj[keep]
    intersection = inner[gi, pj]
    union = pred_area[pj] + gt_area[gi] - intersection - on_void[pj]
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = intersection / union
    hit = iou > 0.5
    gi, pj, iou = gi[hit], pj[hit], iou[hit]
    matched_category = np.array([category_index[int(c)] for c in gt_category[gi]], dtype=np.int64)
    np.add.at(tp, matched_category, 1)
    gt_matched = {gt_sorted[i] for i in gi.tolist()}
    pred_matched = {pred_sorted[j] for j in pj.tolist()}

    crowd_by_category: dict[int, int] = {}
    for gid, g in gt_segms.items():
        if gid in gt_matched:
            continue
        category = int(g["category_id"])
        if g.get("iscrowd", 0) == 1:
            crowd_by_category[category] = gid  # last one wins, as in the reference
        elif category in category_index:
            fn[category_index[category]] += 1

    gt_position = {sid: _FIRST + i for i, sid in enumerate(gt_sorted)}
    pred_position = {sid: i for i, sid in enumerate(pred_sorted)}
    for pid, p in pred_segms.items():
        if pid in pred_matched:
            continue
        category = int(p["category_id"])
        j = pred_position[pid]
        ignored = int(on_void[j])
        if category in crowd_by_category:
            ignored += int(overlap[gt_position[crowd_by_category[category]], _FIRST + j])
        if ignored / int(pred_area[j]) > 0.5:
            continue
        fp[category_index[category]] += 1
    return ImageCounts(tp, fp, fn, matched_category, iou)


def panoptic_result(categories: Sequence[Mapping], tp, fp, fn, iou_sum) -> PanopticResult:
    """PQ, SQ and RQ (percent) from per-category counts and IoU sums (arrays in ``categories``' order)."""
    tp, fp, fn = (np.asarray(a, dtype=np.float64) for a in (tp, fp, fn))
    iou_sum = np.asarray(iou_sum, dtype=np.float64)
    seen = tp + fp + fn > 0
    if not seen.any():
        raise SegmergeError("no segments were accumulated (no update() yet, or only void); nothing to score")
    with np.errstate(divide="ignore", invalid="ignore"):
        denom = tp + 0.5 * fp + 0.5 * fn
        pq = np.where(seen, 100.0 * iou_sum / denom, np.nan)
        sq = np.where(seen, np.where(tp > 0, 100.0 * iou_sum / tp, 0.0), np.nan)
        rq = np.where(seen, 100.0 * tp / denom, np.nan)
    thing = np.array([bool(c["isthing"]) for c in categories])

    def mean(values: np.ndarray, keep: np.ndarray) -> float:
        return float(values[keep].mean()) if keep.any() else math.nan

    groups = {"": seen, "_things": seen & thing, "_stuff": seen & ~thing}
    measures = {"pq": pq, "sq": sq, "rq": rq}
    scores = {f"{m}{g}": mean(v, keep) for g, keep in groups.items() for m, v in measures.items()}
    per_class = tuple(
        PanopticClassResult(
            name=str(c["name"]),
            category_id=int(c["id"]),
            isthing=bool(c["isthing"]),
            pq=float(pq[k]),
            sq=float(sq[k]),
            rq=float(rq[k]),
            tp=int(tp[k]),
            fp=int(fp[k]),
            fn=int(fn[k]),
        )
        for k, c in enumerate(categories)
    )
    return PanopticResult(
        **scores,
        n=int(seen.sum()),
        n_things=int((seen & thing).sum()),
        n_stuff=int((seen & ~thing).sum()),
        per_class=per_class,
    )


class PanopticCounts:
    """Per-category tp/fp/fn/IoU sums in numpy arrays: :class:`~segmerge.metrics.PanopticMetric`'s
    counts without torch, for scoring files. ``add`` images in a fixed order for reproducible sums."""

    def __init__(self, categories: Sequence[Mapping]):
        self.categories, self.index = checked_categories(categories)
        k = len(self.categories)
        self.tp, self.fp, self.fn = np.zeros(k, np.int64), np.zeros(k, np.int64), np.zeros(k, np.int64)
        self.iou_sum = np.zeros(k, np.float64)

    def add(self, image: ImageCounts) -> None:
        self.tp += image.tp
        self.fp += image.fp
        self.fn += image.fn
        np.add.at(self.iou_sum, image.matched_category, image.matched_iou)  # one at a time, in order

    def update(self, gt_ids, gt_segments, pred_ids, pred_segments) -> None:
        self.add(count_image(gt_ids, gt_segments, pred_ids, pred_segments, self.index))

    def compute(self) -> PanopticResult:
        return panoptic_result(self.categories, self.tp, self.fp, self.fn, self.iou_sum)

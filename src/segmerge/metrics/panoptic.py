"""Panoptic quality (PQ = SQ x RQ, Kirillov et al. 2019), matching the COCO / Cityscapes evaluators.

Each image is matched on its own; only the per-category counts (tp, fp, fn, and the sum of
the IoUs of the matched pairs) are kept, so states from several processes add up exactly
and PQ is computed once from the dataset totals. The rules are those of the COCO panoptic
API, as copied into ``cityscapesscripts.evaluation.evalPanopticSemanticLabeling``:

* a ground-truth and a predicted segment of the same category match when IoU > 0.5 (which
  makes matches unique, so no assignment step is needed);
* void is the ground-truth segment id 0. The part of a predicted segment lying on void is
  removed from the union when computing its IoU;
* ground-truth segments with ``iscrowd`` are never matched and never false negatives; an
  unmatched prediction is not a false positive when more than half of its area lies on void
  plus the crowd region of its category. Like the reference, only one crowd segment per
  category and image is used for this: the last one listed in ``segments_info``;
* ground-truth segments whose category is not in ``categories`` are neither void nor scored:
  they never match and are not false negatives, and predictions over them can be false positives;
* the ground-truth area is the ``area`` in ``segments_info`` when given (the reference reads
  it from the JSON), otherwise its pixel count; predicted areas are always pixel counts;
* every non-zero id in either map must be listed in its ``segments_info`` (the reference
  checks this for predictions only, and silently skips unlisted ground-truth ids).

Scores are percentages. A category with no tp, fp or fn at all is left out of the means and
its per-class scores are NaN (the reference prints 0 for it, but also leaves it out).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from segmerge.errors import SegmergeError
from segmerge.metrics.base import SummableMetric

OFFSET = 256 * 256 * 256
"""One more than the largest segment id an RGB PNG can encode; packs (gt id, pred id) pairs."""
VOID = 0


def rgb2id(color):
    """Segment ids from COCO panoptic RGB: ``R + 256 G + 256^2 B``, for an ``[H, W, 3]`` array or one colour."""
    if isinstance(color, np.ndarray) and color.ndim == 3:
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


def _id_map(x, what: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if not isinstance(x, np.ndarray):
        raise SegmergeError(f"{what} must be a numpy array or torch tensor of segment ids, got {type(x).__name__}")
    if x.ndim == 3 and x.shape[-1] == 3:
        raise SegmergeError(f"{what} has shape {x.shape}, an RGB-encoded panoptic PNG; decode it with rgb2id() first")
    if x.ndim != 2 or x.dtype.kind not in "iu":
        raise SegmergeError(f"{what} must be a 2-D integer map of segment ids, got shape {x.shape} dtype {x.dtype}")
    ids = x.astype(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= OFFSET):
        raise SegmergeError(f"{what} holds segment ids {ids.min()}..{ids.max()}, outside [0, {OFFSET})")
    return ids


def _segments(segments_info: Sequence[Mapping], what: str) -> dict[int, Mapping]:
    segments: dict[int, Mapping] = {}
    for info in segments_info:
        if "id" not in info or "category_id" not in info:
            raise SegmergeError(f"{what} entry {dict(info)} needs an 'id' and a 'category_id'")
        sid = int(info["id"])
        if sid == VOID:
            raise SegmergeError(f"{what} lists segment id 0, which is reserved for void (unlabelled) pixels")
        if sid in segments:
            raise SegmergeError(f"{what} lists segment id {sid} twice")
        segments[sid] = info
    return segments


class PanopticMetric(SummableMetric):
    """Accumulates per-category tp/fp/fn/IoU-sum over images; ``compute()`` gives PQ, SQ, RQ.

    ``categories`` are COCO-style dicts with ``id``, ``name`` and ``isthing``. Call
    ``update`` once per image with decoded id maps (see :func:`rgb2id`) and their
    ``segments_info``. Under ``torchrun``, call ``sync()`` on every process after the last
    ``update`` and before ``compute``.
    """

    def __init__(self, categories: Sequence[Mapping]):
        if not categories:
            raise SegmergeError("categories is empty; give COCO-style dicts with id, name and isthing")
        for cat in categories:
            missing = [k for k in ("id", "name", "isthing") if k not in cat]
            if missing:
                raise SegmergeError(f"category {dict(cat)} lacks {', '.join(missing)}")
        ids = [int(c["id"]) for c in categories]
        if len(set(ids)) != len(ids):
            raise SegmergeError(f"category ids {ids} are not unique")
        super().__init__()
        self.categories = [dict(c) for c in categories]
        self._index = {cid: i for i, cid in enumerate(ids)}
        k = len(ids)
        self.add_state("tp", (k,), torch.int64)
        self.add_state("fp", (k,), torch.int64)
        self.add_state("fn", (k,), torch.int64)
        self.add_state("iou_sum", (k,), torch.float64)

    # -- accumulation ---------------------------------------------------------------

    def update(self, gt_ids, gt_segments: Sequence[Mapping], pred_ids, pred_segments: Sequence[Mapping]) -> None:
        """Match one image's predicted segments against its ground truth and add the counts."""
        self._check_not_synced()
        gt, pred = _id_map(gt_ids, "gt_ids"), _id_map(pred_ids, "pred_ids")
        if gt.shape != pred.shape:
            raise SegmergeError(f"pred_ids shape {pred.shape} does not match gt_ids shape {gt.shape}")
        gt_segms = _segments(gt_segments, "gt_segments")
        pred_segms = _segments(pred_segments, "pred_segments")
        for sid, info in pred_segms.items():
            if int(info["category_id"]) not in self._index:
                raise SegmergeError(
                    f"predicted segment {sid} has category_id {info['category_id']}, not one of the "
                    f"categories {sorted(self._index)}"
                )

        pred_area = self._areas(pred, pred_segms, "pred")
        gt_counts = self._areas(gt, gt_segms, "gt")
        gt_area = {sid: int(info.get("area", gt_counts.get(sid, 0))) for sid, info in gt_segms.items()}

        pairs, counts = np.unique(gt * OFFSET + pred, return_counts=True)
        overlap = {(int(p) // OFFSET, int(p) % OFFSET): int(c) for p, c in zip(pairs, counts, strict=True)}

        tp, fp, fn = np.zeros_like(self.tp.numpy()), np.zeros_like(self.fp.numpy()), np.zeros_like(self.fn.numpy())
        iou_sum = np.zeros_like(self.iou_sum.numpy())
        gt_matched, pred_matched = set(), set()
        for (gid, pid), inter in overlap.items():
            if gid not in gt_segms or pid not in pred_segms:
                continue
            g, p = gt_segms[gid], pred_segms[pid]
            if g.get("iscrowd", 0) == 1 or int(g["category_id"]) != int(p["category_id"]):
                continue
            union = pred_area[pid] + gt_area[gid] - inter - overlap.get((VOID, pid), 0)
            iou = inter / union
            if iou > 0.5:
                k = self._index[int(g["category_id"])]
                tp[k] += 1
                iou_sum[k] += iou
                gt_matched.add(gid)
                pred_matched.add(pid)

        crowd_by_category: dict[int, int] = {}
        for gid, g in gt_segms.items():
            if gid in gt_matched:
                continue
            category = int(g["category_id"])
            if g.get("iscrowd", 0) == 1:
                crowd_by_category[category] = gid  # last one wins, as in the reference
            elif category in self._index:
                fn[self._index[category]] += 1

        for pid, p in pred_segms.items():
            if pid in pred_matched:
                continue
            category = int(p["category_id"])
            ignored = overlap.get((VOID, pid), 0)
            if category in crowd_by_category:
                ignored += overlap.get((crowd_by_category[category], pid), 0)
            if ignored / pred_area[pid] > 0.5:
                continue
            fp[self._index[category]] += 1

        self.tp += torch.from_numpy(tp)
        self.fp += torch.from_numpy(fp)
        self.fn += torch.from_numpy(fn)
        self.iou_sum += torch.from_numpy(iou_sum)

    @staticmethod
    def _areas(ids: np.ndarray, segments: Mapping[int, Mapping], what: str) -> dict[int, int]:
        """Pixel count per segment, checking that the map and ``segments_info`` list the same segments."""
        labels, counts = np.unique(ids, return_counts=True)
        areas = {int(label): int(count) for label, count in zip(labels, counts, strict=True) if label != VOID}
        unlisted = sorted(set(areas) - set(segments))
        if unlisted:
            raise SegmergeError(
                f"{what}_ids holds segment ids {unlisted[:5]} that {what}_segments does not list; "
                "every non-zero id in the map needs a segments_info entry"
            )
        if what == "pred":
            absent = sorted(set(segments) - set(areas))
            if absent:
                raise SegmergeError(f"pred_segments lists segment ids {absent[:5]} that do not occur in pred_ids")
        return areas

    # -- state -------------------------------------------------------------------

    def _twin(self) -> PanopticMetric:
        return PanopticMetric(self.categories)

    def _settings(self) -> dict:
        return {"categories": self.categories}

    # -- scores ------------------------------------------------------------------

    def compute(self) -> PanopticResult:
        tp, fp, fn = self.tp.double().numpy(), self.fp.double().numpy(), self.fn.double().numpy()
        iou_sum = self.iou_sum.numpy()
        seen = tp + fp + fn > 0
        if not seen.any():
            raise SegmergeError("no segments were accumulated (no update() yet, or only void); nothing to score")
        with np.errstate(divide="ignore", invalid="ignore"):
            denom = tp + 0.5 * fp + 0.5 * fn
            pq = np.where(seen, 100.0 * iou_sum / denom, np.nan)
            sq = np.where(seen, np.where(tp > 0, 100.0 * iou_sum / tp, 0.0), np.nan)
            rq = np.where(seen, 100.0 * tp / denom, np.nan)
        thing = np.array([bool(c["isthing"]) for c in self.categories])

        def mean(values: np.ndarray, mask: np.ndarray) -> float:
            return float(values[mask].mean()) if mask.any() else math.nan

        groups = {"": seen, "_things": seen & thing, "_stuff": seen & ~thing}
        measures = {"pq": pq, "sq": sq, "rq": rq}
        scores = {f"{m}{g}": mean(v, mask) for g, mask in groups.items() for m, v in measures.items()}
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
            for k, c in enumerate(self.categories)
        )
        return PanopticResult(
            **scores,
            n=int(seen.sum()),
            n_things=int((seen & thing).sum()),
            n_stuff=int((seen & ~thing).sum()),
            per_class=per_class,
        )

"""The counting core of the semantic scores, in numpy alone: a confusion matrix and what follows from it.

:class:`~segmerge.metrics.SemanticMetric` (torch state, for evaluation) computes its scores
here, and ``segmerge score`` counts label PNGs here without importing torch. The conventions
are listed in :mod:`segmerge.metrics.semantic`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from segmerge.errors import SegmergeError
from segmerge.labels import PROTOCOLS, ClassSubset


def protocol(name: str) -> ClassSubset:
    """The class subset called ``name`` (``cityscapes19``, ``synthia16``, ``synthia13``)."""
    try:
        return PROTOCOLS[name]
    except KeyError:
        valid = ", ".join(sorted(PROTOCOLS))
        raise SegmergeError(f"unknown evaluation protocol {name!r}; valid protocols: {valid}") from None


def nanmean(values: np.ndarray) -> float:
    kept = values[~np.isnan(values)]
    return float(kept.mean()) if kept.size else math.nan


def class_iou_of(confusion: np.ndarray) -> np.ndarray:
    """Per-class IoU (%) of a [C, C] confusion matrix; NaN for a class in neither the rows nor the columns."""
    cm = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(cm)
    union = cm.sum(axis=1) + cm.sum(axis=0) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, 100.0 * tp / union, np.nan)


@dataclass(frozen=True)
class SemanticResult:
    """Scores in percent. ``class_ids``/``class_names``/``iou``/``accuracy`` cover the evaluated subset.

    ``pixel_accuracy`` always counts every labelled pixel, whatever the subset: a subset
    chooses which per-class scores are averaged, it does not re-label pixels.
    """

    class_ids: tuple[int, ...]
    class_names: tuple[str, ...]
    iou: tuple[float, ...]
    accuracy: tuple[float, ...]
    miou: float
    mean_accuracy: float
    pixel_accuracy: float
    subset: str | None = None

    def per_class_iou(self) -> dict[str, float]:
        return dict(zip(self.class_names, self.iou, strict=True))

    def as_dict(self) -> dict:
        return asdict(self)


def subset_ids(subset, num_classes: int) -> tuple[tuple[int, ...], str | None]:
    """The class ids (and name) of ``subset``: None (all), a protocol name, a :class:`ClassSubset` or ids."""
    if subset is None:
        return tuple(range(num_classes)), None
    if isinstance(subset, str):
        subset = protocol(subset)
    if isinstance(subset, ClassSubset):
        ids, name = subset.class_ids, subset.name
    elif isinstance(subset, Iterable):
        ids, name = tuple(subset), None
    else:
        raise SegmergeError(f"subset must be a protocol name or a list of class ids, got {subset!r}")
    for i in ids:
        if not isinstance(i, (int, np.integer)) or not 0 <= i < num_classes:
            raise SegmergeError(f"subset class id {i!r} is not in [0, {num_classes})")
    if len(set(ids)) != len(ids) or not ids:
        raise SegmergeError(f"subset {list(ids)} must list distinct class ids, at least one")
    return tuple(int(i) for i in ids), name


def semantic_result(confusion, class_names: Sequence[str], subset=None, ignore_index: int | None = 255):
    """:class:`SemanticResult` of a [C, C] confusion matrix (rows ground truth, columns prediction)."""
    cm = np.asarray(confusion, dtype=np.float64)
    ids, name = subset_ids(subset, cm.shape[0])
    total = cm.sum()
    if total == 0:
        raise SegmergeError(
            "no labelled pixels were accumulated (no update() yet, or every target pixel was "
            f"ignore_index={ignore_index}); nothing to score"
        )
    tp, gt_area = np.diag(cm), cm.sum(axis=1)
    iou = class_iou_of(cm)
    with np.errstate(divide="ignore", invalid="ignore"):
        acc = np.where(gt_area > 0, 100.0 * tp / gt_area, np.nan)
    sel = list(ids)
    return SemanticResult(
        class_ids=ids,
        class_names=tuple(class_names[i] for i in ids),
        iou=tuple(float(v) for v in iou[sel]),
        accuracy=tuple(float(v) for v in acc[sel]),
        miou=nanmean(iou[sel]),
        mean_accuracy=nanmean(acc[sel]),
        pixel_accuracy=float(100.0 * tp.sum() / total),
        subset=name,
    )


class LabelError(SegmergeError):
    """A label or prediction map holds a value outside the classes (``which``: 'pred' or 'target')."""

    def __init__(self, which: str, value: int, message: str):
        super().__init__(message)
        self.which, self.value = which, value


def label_confusion(pred: np.ndarray, target: np.ndarray, num_classes: int, ignore_index: int | None) -> np.ndarray:
    """The [C, C] int64 confusion matrix of two integer label maps of one shape, in one counting pass.

    Pixels whose target is ``ignore_index`` are skipped. A predicted id outside ``[0, C)`` or a
    target neither in it nor ``ignore_index`` raises :class:`LabelError` naming the smallest such value.
    """
    c = num_classes
    small = pred.dtype == np.uint8 and target.dtype == np.uint8
    if small:  # one histogram over every (target, pred) byte pair, which also finds bad values
        key = target.astype(np.uint16)
        key <<= 8
        key |= pred
        counts = np.bincount(key.ravel(), minlength=65536).reshape(256, 256)
        bad_pred = np.flatnonzero(counts[:, c:].any(axis=0))  # on every pixel, ignored ones too
        if ignore_index is not None and 0 <= ignore_index < 256:
            counts[ignore_index] = 0
        bad_target = np.flatnonzero(counts[c:].any(axis=1))
        if bad_pred.size:
            value = c + int(bad_pred[0])
            raise LabelError("pred", value, f"pred holds class id {value}, outside [0, {c})")
        if bad_target.size:
            value = c + int(bad_target[0])
            raise LabelError(
                "target", value, f"target holds class id {value}, neither ignore_index={ignore_index} nor in [0, {c})"
            )
        return counts[:c, :c].copy()
    pred = pred.astype(np.int64, copy=False)
    target = target.astype(np.int64, copy=False)
    if pred.size:
        low, high = int(pred.min()), int(pred.max())
        if low < 0 or high >= c:
            value = low if low < 0 else int(pred[pred >= c].min())
            raise LabelError("pred", value, f"pred holds class id {value}, outside [0, {c})")
    keep = target != ignore_index if ignore_index is not None else np.ones(target.shape, bool)
    kept = target[keep]
    bad = (kept < 0) | (kept >= c)
    if bad.any():
        value = int(kept[bad].min())
        raise LabelError(
            "target", value, f"target holds class id {value}, neither ignore_index={ignore_index} nor in [0, {c})"
        )
    return np.bincount(kept * c + pred[keep], minlength=c * c).reshape(c, c)


class ConfusionCounts:
    """A [C, C] int64 confusion matrix in numpy: :class:`~segmerge.metrics.SemanticMetric`'s counts
    without torch, for scoring files."""

    def __init__(self, num_classes: int, ignore_index: int | None = 255, class_names: Sequence[str] | None = None):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = tuple(class_names) if class_names is not None else tuple(str(i) for i in range(num_classes))
        self.confusion_matrix = np.zeros((num_classes, num_classes), np.int64)

    def add(self, confusion: np.ndarray) -> None:
        self.confusion_matrix += confusion

    def compute(self, subset=None) -> SemanticResult:
        return semantic_result(self.confusion_matrix, self.class_names, subset, self.ignore_index)

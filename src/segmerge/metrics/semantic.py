"""Semantic segmentation scores (IoU, mIoU, accuracies) from one dataset-wide confusion matrix.

The only state is an int64 ``[num_classes, num_classes]`` confusion matrix (rows = ground
truth, columns = prediction) summed over every pixel of every image. Scores are computed
once, at the end, from that matrix: averaging per-image IoUs instead would weight small
images and rare classes differently from every published number. Because the state is a
count, matrices from several processes (or several metric objects) add up exactly.

Conventions follow mmseg, which produced most reported Cityscapes/UDA numbers:

* a class that appears neither in the ground truth nor in the prediction has IoU NaN and
  is left out of mIoU (a class that is predicted but absent from the ground truth has IoU 0
  and does count);
* a class absent from the ground truth has accuracy NaN and is left out of the mean
  class accuracy;
* all scores are percentages (0-100).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

from segmerge.errors import SegmergeError
from segmerge.labels import ClassSubset
from segmerge.metrics.base import SummableMetric
from segmerge.metrics.semantic_counts import (
    SemanticResult,
    class_iou_of,
    nanmean,
    protocol,
    semantic_result,
    subset_ids,
)

__all__ = ["SemanticMetric", "SemanticResult", "class_iou", "confusion_miou", "protocol"]


def _as_tensor(x, what: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        # torch has no uint16/uint32 kernels for most ops; label PNGs are often uint16.
        if x.dtype.kind == "u" and x.dtype != np.uint8:
            x = x.astype(np.int64)
        return torch.from_numpy(np.ascontiguousarray(x))
    raise SegmergeError(f"{what} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def _is_integer(t: torch.Tensor) -> bool:
    return not (t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool)


def class_iou(confusion: torch.Tensor) -> np.ndarray:
    """Per-class IoU (%) of a [C, C] confusion matrix; NaN for a class in neither the rows nor the columns."""
    if isinstance(confusion, torch.Tensor):
        confusion = confusion.detach().cpu().double().numpy()
    return class_iou_of(confusion)


def confusion_miou(confusion: torch.Tensor) -> float:
    """mIoU (%) of a [C, C] confusion matrix over the classes present in either map (NaN if none is).

    The one definition of mIoU in segmerge: :meth:`SemanticMetric.compute` and the label-free
    tuning criteria both use it, so an agreement score is comparable to a reported mIoU.
    """
    return nanmean(class_iou(confusion))


class SemanticMetric(SummableMetric):
    """Accumulates a confusion matrix over a dataset; ``compute()`` turns it into IoU/mIoU/accuracy.

    ``update(pred, target)`` takes integer label maps of the same shape, or logits with a
    class dimension (``[N, C, H, W]`` or ``[C, H, W]``) that are argmax'd. Pixels whose target
    is ``ignore_index`` are skipped. Under ``torchrun``, call ``sync()`` on every process once
    after the last ``update`` and before ``compute``.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255, class_names: Sequence[str] | None = None):
        if not isinstance(num_classes, int) or num_classes < 1:
            raise SegmergeError(f"num_classes must be a positive integer, got {num_classes!r}")
        if ignore_index is not None and 0 <= ignore_index < num_classes:
            raise SegmergeError(
                f"ignore_index={ignore_index} is a real class id (0..{num_classes - 1}); "
                "use a value outside that range such as 255, or None to ignore nothing"
            )
        if class_names is None:
            class_names = [str(i) for i in range(num_classes)]
        if len(class_names) != num_classes:
            raise SegmergeError(
                f"{len(class_names)} class_names given for num_classes={num_classes}; give one name per class"
            )
        super().__init__()
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = tuple(class_names)
        self.add_state("confusion_matrix", (num_classes, num_classes), torch.int64)

    # -- accumulation ---------------------------------------------------------------

    def update(self, pred, target) -> None:
        """Add one batch (or one image) to the confusion matrix."""
        self._check_not_synced()
        pred_t, target_t = _as_tensor(pred, "pred"), _as_tensor(target, "target")
        if not _is_integer(target_t):
            raise SegmergeError(f"target must hold integer class ids, got dtype {target_t.dtype}")
        labels = self._labels(pred_t, target_t)
        target_t = target_t.to(labels.device).long()

        keep = target_t != self.ignore_index if self.ignore_index is not None else torch.ones_like(target_t, dtype=bool)
        bad = keep & ((target_t < 0) | (target_t >= self.num_classes))
        if bool(bad.any()):
            value = int(target_t[bad][0])
            raise SegmergeError(
                f"target holds class id {value} ({int(bad.sum())} pixels), which is neither ignore_index="
                f"{self.ignore_index} nor in [0, {self.num_classes}); map such labels to ignore_index first"
            )
        index = target_t[keep] * self.num_classes + labels[keep]
        counts = torch.bincount(index, minlength=self.num_classes**2).reshape(self.num_classes, self.num_classes)
        self.confusion_matrix += counts.to(self.confusion_matrix.device)

    def _labels(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Predicted class ids with the shape of ``target``: argmax of logits, or the labels as given."""
        if pred.dtype.is_floating_point and pred.dim() == target.dim() + 1 and pred.dim() in (3, 4):
            if pred.shape[-3] != self.num_classes:
                raise SegmergeError(
                    f"logits of shape {tuple(pred.shape)} have {pred.shape[-3]} classes in dim {pred.dim() - 3}, "
                    f"but the metric has num_classes={self.num_classes}"
                )
            labels = pred.argmax(dim=-3)
        elif pred.dtype.is_floating_point:
            raise SegmergeError(
                f"pred has floating dtype {pred.dtype} and shape {tuple(pred.shape)} for target shape "
                f"{tuple(target.shape)}: pass integer class ids of the target's shape, or logits with a class "
                "dimension ([N, C, H, W] for [N, H, W] targets, [C, H, W] for [H, W])"
            )
        elif not _is_integer(pred):
            raise SegmergeError(f"pred must hold integer class ids or floating logits, got dtype {pred.dtype}")
        else:
            labels = pred.long()
        if labels.shape != target.shape:
            raise SegmergeError(
                f"pred shape {tuple(pred.shape)} does not match target shape {tuple(target.shape)}; "
                "resize the prediction to the label resolution before update()"
            )
        if not pred.dtype.is_floating_point and labels.numel():
            low, high = (int(v) for v in torch.aminmax(labels))
            if low < 0 or high >= self.num_classes:
                value = low if low < 0 else high
                raise SegmergeError(
                    f"pred holds class id {value}, outside [0, {self.num_classes}); "
                    "predictions must be trainIds of the evaluated classes"
                )
        return labels

    # -- state -------------------------------------------------------------------

    def _twin(self) -> SemanticMetric:
        return SemanticMetric(self.num_classes, self.ignore_index, self.class_names)

    def _settings(self) -> dict:
        # Class names are labels for the report, not part of the counts: they need not agree.
        return {"num_classes": self.num_classes, "ignore_index": self.ignore_index}

    # -- scores ------------------------------------------------------------------

    def _subset_ids(self, subset) -> tuple[tuple[int, ...], str | None]:
        return subset_ids(subset, self.num_classes)

    def compute(self, subset: str | ClassSubset | Iterable[int] | None = None) -> SemanticResult:
        """Scores from the accumulated matrix; ``subset`` restricts the per-class list and the means.

        ``subset`` is a protocol name (``"synthia16"``), a :class:`ClassSubset` or a list of
        class ids. The matrix is not sliced: predictions of classes outside the subset still
        count as errors, exactly as Synthia->Cityscapes mIoU16/mIoU13 are reported.
        """
        return semantic_result(self.confusion_matrix.cpu().numpy(), self.class_names, subset, self.ignore_index)

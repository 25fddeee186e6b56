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

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from segmerge.metrics.base import SummableMetric
from segmerge.metrics.panoptic_counts import (
    OFFSET,
    VOID,
    ImageCounts,
    PanopticClassResult,
    PanopticResult,
    checked_categories,
    count_image,
    id2rgb,
    panoptic_result,
    rgb2id,
)

__all__ = [
    "OFFSET",
    "VOID",
    "PanopticClassResult",
    "PanopticMetric",
    "PanopticResult",
    "id2rgb",
    "rgb2id",
]


def _id_map(x):
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return x


class PanopticMetric(SummableMetric):
    """Accumulates per-category tp/fp/fn/IoU-sum over images; ``compute()`` gives PQ, SQ, RQ.

    ``categories`` are COCO-style dicts with ``id``, ``name`` and ``isthing``. Call
    ``update`` once per image with decoded id maps (see :func:`rgb2id`) and their
    ``segments_info``. Under ``torchrun``, call ``sync()`` on every process after the last
    ``update`` and before ``compute``. The counting is
    :func:`segmerge.metrics.panoptic_counts.count_image`, shared with ``segmerge score``.
    """

    def __init__(self, categories: Sequence[Mapping]):
        categories, index = checked_categories(categories)
        super().__init__()
        self.categories = categories
        self._index = index
        k = len(categories)
        self.add_state("tp", (k,), torch.int64)
        self.add_state("fp", (k,), torch.int64)
        self.add_state("fn", (k,), torch.int64)
        self.add_state("iou_sum", (k,), torch.float64)

    # -- accumulation ---------------------------------------------------------------

    def update(self, gt_ids, gt_segments: Sequence[Mapping], pred_ids, pred_segments: Sequence[Mapping]) -> None:
        """Match one image's predicted segments against its ground truth and add the counts."""
        self._check_not_synced()
        self.add_counts(count_image(_id_map(gt_ids), gt_segments, _id_map(pred_ids), pred_segments, self._index))

    def add_counts(self, image: ImageCounts) -> None:
        """Add one image's counts (from :func:`~segmerge.metrics.panoptic_counts.count_image`)."""
        self._check_not_synced()
        for name in ("tp", "fp", "fn"):
            getattr(self, name).add_(torch.from_numpy(getattr(image, name)).to(getattr(self, name).device))
        if self.iou_sum.device.type == "cpu":
            np.add.at(self.iou_sum.numpy(), image.matched_category, image.matched_iou)  # in order, as the reference
        else:
            sums = self.iou_sum.cpu().numpy()
            np.add.at(sums, image.matched_category, image.matched_iou)
            self.iou_sum.copy_(torch.from_numpy(sums))

    # -- state -------------------------------------------------------------------

    def _twin(self) -> PanopticMetric:
        return PanopticMetric(self.categories)

    def _settings(self) -> dict:
        return {"categories": self.categories}

    # -- scores ------------------------------------------------------------------

    def compute(self) -> PanopticResult:
        state = {name: getattr(self, name).cpu().numpy() for name in ("tp", "fp", "fn", "iou_sum")}
        return panoptic_result(self.categories, **state)

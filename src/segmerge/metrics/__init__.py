"""Segmentation metrics with summable state: mIoU (with UDA class subsets) and panoptic quality.

Each metric follows the torchmetrics pattern: ``update()`` per batch or image, ``compute()``
at the end, ``reset()`` to start over. The state is plain counts, so ``sync()`` (an
all-reduce under torch.distributed), ``merge_state()`` or ``a + b`` combine shards exactly;
that machinery lives once, in :class:`SummableMetric` (:mod:`segmerge.metrics.base`).
"""

from segmerge.metrics.base import SummableMetric, sync_state
from segmerge.metrics.panoptic import PanopticClassResult, PanopticMetric, PanopticResult, id2rgb, rgb2id
from segmerge.metrics.semantic import SemanticMetric, SemanticResult, confusion_miou, protocol

__all__ = [
    "PanopticClassResult",
    "PanopticMetric",
    "PanopticResult",
    "SemanticMetric",
    "SemanticResult",
    "SummableMetric",
    "confusion_miou",
    "id2rgb",
    "protocol",
    "rgb2id",
    "sync_state",
]

"""Segmentation metrics with summable state: mIoU (with UDA class subsets) and panoptic quality.

Each metric follows the torchmetrics pattern: ``update()`` per batch or image, ``compute()``
at the end, ``reset()`` to start over. The state is plain counts, so ``sync()`` (an
all-reduce under torch.distributed), ``merge_state()`` or ``a + b`` combine shards exactly.
"""

from segmerge.metrics.panoptic import PanopticClassResult, PanopticMetric, PanopticResult, id2rgb, rgb2id
from segmerge.metrics.protocols import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_LABEL_IDS,
    CITYSCAPES_THING_TRAIN_IDS,
    PROTOCOLS,
    ClassSubset,
    cityscapes_categories,
    protocol,
)
from segmerge.metrics.semantic import SemanticMetric, SemanticResult, sync_state

__all__ = [
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_LABEL_IDS",
    "CITYSCAPES_THING_TRAIN_IDS",
    "PROTOCOLS",
    "ClassSubset",
    "PanopticClassResult",
    "PanopticMetric",
    "PanopticResult",
    "SemanticMetric",
    "SemanticResult",
    "cityscapes_categories",
    "id2rgb",
    "protocol",
    "rgb2id",
    "sync_state",
]

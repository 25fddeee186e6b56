"""Segmentation metrics with summable state: mIoU (with UDA class subsets) and panoptic quality.

Each metric follows the torchmetrics pattern: ``update()`` per batch or image, ``compute()``
at the end, ``reset()`` to start over. The state is plain counts, so ``sync()`` (an
all-reduce under torch.distributed), ``merge_state()`` or ``a + b`` combine shards exactly.
"""

from segmerge.metrics.panoptic import PanopticClassResult, PanopticMetric, PanopticResult, id2rgb, rgb2id
from segmerge.metrics.semantic import SemanticMetric, SemanticResult, protocol, sync_state

__all__ = [
    "PanopticClassResult",
    "PanopticMetric",
    "PanopticResult",
    "SemanticMetric",
    "SemanticResult",
    "id2rgb",
    "protocol",
    "rgb2id",
    "sync_state",
]

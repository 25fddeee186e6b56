"""Segmentation metrics with summable state: mIoU (with UDA class subsets) and panoptic quality.

Each metric follows the torchmetrics pattern: ``update()`` per batch or image, ``compute()``
at the end, ``reset()`` to start over. The state is plain counts, so ``sync()`` (an
all-reduce under torch.distributed), ``merge_state()`` or ``a + b`` combine shards exactly;
that machinery lives once, in :class:`SummableMetric` (:mod:`segmerge.metrics.base`).

The counting itself is numpy alone (:mod:`~segmerge.metrics.panoptic_counts`,
:mod:`~segmerge.metrics.semantic_counts`), which is what ``segmerge score`` uses without
torch. The names below are imported on first use, so importing one of those modules does
not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from segmerge.metrics.base import SummableMetric, sync_state
    from segmerge.metrics.panoptic import PanopticClassResult, PanopticMetric, PanopticResult, id2rgb, rgb2id
    from segmerge.metrics.semantic import SemanticMetric, SemanticResult, confusion_miou, protocol

_LAZY = {
    "SummableMetric": "segmerge.metrics.base",
    "sync_state": "segmerge.metrics.base",
    "PanopticClassResult": "segmerge.metrics.panoptic_counts",
    "PanopticResult": "segmerge.metrics.panoptic_counts",
    "id2rgb": "segmerge.metrics.panoptic_counts",
    "rgb2id": "segmerge.metrics.panoptic_counts",
    "PanopticMetric": "segmerge.metrics.panoptic",
    "SemanticResult": "segmerge.metrics.semantic_counts",
    "protocol": "segmerge.metrics.semantic_counts",
    "SemanticMetric": "segmerge.metrics.semantic",
    "confusion_miou": "segmerge.metrics.semantic",
}

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


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'segmerge.metrics' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

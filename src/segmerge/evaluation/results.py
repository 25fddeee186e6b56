"""What an evaluation produces: one row per evaluated model (and the ensemble), as data.

Reports (JSON, Markdown, plots) are rendered from these objects by :mod:`segmerge.reports`;
nothing here draws or writes files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass
class ModelScores:
    name: str
    #: "model" for a single network, "ensemble" for the average of the models' softmax.
    kind: str
    parameters: int
    #: Measured inference time; for the ensemble, the sum of its members' (it runs them all).
    ms_per_image: float
    #: {"miou", "pixel_accuracy", "mean_accuracy", "per_class": [{"name", "iou"}], "subsets": {name: miou}}
    semantic: dict | None = None
    #: {"pq", "sq", "rq", "pq_things", ..., "per_class": [{"name", "pq", "sq", "rq", "tp", "fp", "fn"}]}
    panoptic: dict | None = None
    #: Semantic confusion matrix (rows: ground truth, columns: prediction), int64 counts.
    confusion: np.ndarray | None = None
    #: Relative inference cost (1 for one model, M for an ensemble of M).
    cost: float = 1.0


@dataclass
class QualitativeSample:
    name: str
    image: np.ndarray  # uint8 HxWx3
    label: np.ndarray | None  # int HxW trainIds, 255 = ignore
    predictions: dict[str, np.ndarray] = field(default_factory=dict)  # model name -> HxW trainIds
    #: Optional panoptic id maps (model name or "ground truth" -> HxW int ids) for instance colouring.
    panoptic: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class EvaluationResult:
    dataset: str
    split: str
    num_images: int
    class_names: list[str]
    ignore_index: int
    rows: list[ModelScores]
    protocol: str = ""
    qualitative: list[QualitativeSample] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready summary (no images; confusion matrices as nested lists)."""

        def row(r: ModelScores) -> dict:
            d = asdict(r)
            d["confusion"] = r.confusion.tolist() if r.confusion is not None else None
            return d

        return {
            "dataset": self.dataset,
            "split": self.split,
            "protocol": self.protocol,
            "num_images": self.num_images,
            "class_names": self.class_names,
            "ignore_index": self.ignore_index,
            "models": [row(r) for r in self.rows],
        }


def semantic_summary(metric, subsets: Sequence[str]) -> dict:
    """mIoU, accuracies, per-class IoU and the mIoU of each class subset, of a metric with ``compute(subset=)``."""
    result = metric.compute()
    summary = {
        "miou": float(result.miou),
        "pixel_accuracy": float(result.pixel_accuracy),
        "mean_accuracy": float(result.mean_accuracy),
        "per_class": [{"name": n, "iou": float(v)} for n, v in zip(result.class_names, result.iou, strict=True)],
        "subsets": {},
    }
    for subset in subsets:
        summary["subsets"][subset] = float(metric.compute(subset=subset).miou)
    return summary

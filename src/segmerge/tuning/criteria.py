"""Label-free scores of a segmenter on unlabelled target images.

Each criterion reads class probabilities [N,C,h,w] only - never a target label:

* ``entropy``: mean per-pixel prediction entropy in nats (lower = more confident);
* ``agreement``: mIoU (%) of the prediction against the output ensemble's pseudo-labels
  (its argmax), the merge's distance from the M-times-as-costly model it approximates;
* ``consistency``: mIoU (%) of the prediction on the images against the prediction on
  photometrically augmented copies (same geometry, so pixel for pixel).

The scores accumulate batch by batch (:class:`CriteriaMeter`), a summable metric like those in
:mod:`segmerge.metrics`: two confusion matrices and an entropy sum. Both mIoUs are
:func:`segmerge.metrics.semantic.confusion_miou`, the rule every reported mIoU follows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from segmerge.metrics.base import SummableMetric
from segmerge.metrics.semantic import confusion_miou

#: Criterion name -> whether a higher value is better.
CRITERIA: dict[str, bool] = {"entropy": False, "agreement": True, "consistency": True}
#: The rule that picks a candidate: one criterion, or the mean of the candidates' ranks under all three.
SELECTION_RULES = (*CRITERIA, "rank")


def pixel_entropy(probabilities: torch.Tensor) -> torch.Tensor:
    """Per-pixel entropy -sum_c p log p of probabilities [N,C,h,w] -> [N,h,w] (nats; 0 log 0 = 0)."""
    p = probabilities.float()
    return -(p * p.clamp_min(1e-12).log()).sum(dim=1)


def mean_entropy(probabilities: torch.Tensor) -> float:
    """Mean per-pixel entropy: log C for uniform predictions, 0 for one-hot ones."""
    return float(pixel_entropy(probabilities).mean())


def label_confusion(prediction: torch.Tensor, reference: torch.Tensor, num_classes: int) -> torch.Tensor:
    """int64 [C,C] counts of (reference class, predicted class) over all pixels of two label maps."""
    index = reference.reshape(-1).long().cpu() * num_classes + prediction.reshape(-1).long().cpu()
    return torch.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def agreement(probabilities: torch.Tensor, reference: torch.Tensor) -> float:
    """mIoU (%) of the argmax of ``probabilities`` against the argmax of ``reference`` (both [N,C,h,w])."""
    num_classes = probabilities.shape[1]
    return confusion_miou(label_confusion(probabilities.argmax(1), reference.argmax(1), num_classes))


def photometric_augment(images: torch.Tensor, seed: int, strength: float = 0.3) -> torch.Tensor:
    """uint8 images [N,H,W,3] -> the same images with seeded brightness, contrast, saturation and
    gamma changes (one draw per image; the same seed and images give the same output)."""
    g = torch.Generator().manual_seed(seed)
    n = images.shape[0]

    def draw() -> torch.Tensor:
        return (1.0 + strength * (2.0 * torch.rand(n, generator=g) - 1.0)).view(n, 1, 1, 1)

    brightness, contrast, saturation, gamma = draw(), draw(), draw(), draw()
    x = images.float().cpu() / 255.0
    x = x * brightness
    grey = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - grey) * contrast + grey
    luma = (x * torch.tensor([0.299, 0.587, 0.114])).sum(-1, keepdim=True)
    x = (x - luma) * saturation + luma
    x = x.clamp(0.0, 1.0) ** gamma
    return (x * 255.0).round().to(torch.uint8)


@dataclass
class CriteriaScores:
    entropy: float
    agreement: float
    consistency: float

    def as_dict(self) -> dict[str, float]:
        return {"entropy": self.entropy, "agreement": self.agreement, "consistency": self.consistency}


class CriteriaMeter(SummableMetric):
    """Accumulates the three criteria over batches; ``compute()`` gives :class:`CriteriaScores`.

    State: ``entropy_sum`` (float64) over ``pixels`` (int64), and the confusion matrices
    ``to_ensemble`` (ensemble class x predicted class) and ``to_augmented`` (predicted class
    x class predicted on the augmented images), int64 [C, C].
    """

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.add_state("entropy_sum", (), torch.float64)
        self.add_state("pixels", (), torch.int64)
        self.add_state("to_ensemble", (num_classes, num_classes), torch.int64)
        self.add_state("to_augmented", (num_classes, num_classes), torch.int64)

    def _twin(self) -> CriteriaMeter:
        return CriteriaMeter(self.num_classes)

    def _settings(self) -> dict:
        return {"num_classes": self.num_classes}

    def update(
        self, probabilities: torch.Tensor, ensemble: torch.Tensor | None, augmented: torch.Tensor | None
    ) -> None:
        """Probabilities [N,C,h,w] on the images, the ensemble's on the same images, and the
        model's own on the augmented images (either may be None: that score is then NaN)."""
        self._check_not_synced()
        entropy = pixel_entropy(probabilities)
        self.entropy_sum += float(entropy.double().sum())
        self.pixels += entropy.numel()
        labels = probabilities.argmax(1)
        if ensemble is not None:
            self.to_ensemble += label_confusion(labels, ensemble.argmax(1), self.num_classes)
        if augmented is not None:
            self.to_augmented += label_confusion(augmented.argmax(1), labels, self.num_classes)

    def compute(self) -> CriteriaScores:
        return CriteriaScores(
            entropy=float(self.entropy_sum) / int(self.pixels) if self.pixels else math.nan,
            agreement=confusion_miou(self.to_ensemble),
            consistency=confusion_miou(self.to_augmented),
        )


def rank_average(rows: list[dict[str, float]]) -> list[float]:
    """Each row's mean rank (1 = best) over the three criteria; ties share their mean rank, NaN ranks last."""
    from scipy.stats import rankdata  # only the tuning search needs it: keep it off the CLI's start-up

    totals = np.zeros(len(rows))
    for name, higher_better in CRITERIA.items():
        values = np.array([row[name] for row in rows], dtype=np.float64)
        keyed = np.where(np.isnan(values), np.inf, -values if higher_better else values)
        totals += rankdata(keyed, method="average")
    return [float(t) / len(CRITERIA) for t in totals]


def best_index(rows: list[dict[str, float]], rule: str) -> int:
    """The row the selection rule picks; ties go to the earlier row (the candidate grid lists simpler recipes first)."""
    if rule == "rank":
        scores = rank_average(rows)
        return min(range(len(rows)), key=lambda i: (scores[i], i))
    higher_better = CRITERIA[rule]

    def key(i: int) -> tuple[float, int]:
        v = rows[i][rule]
        if math.isnan(v):
            return (math.inf, i)
        return (-v if higher_better else v, i)

    return min(range(len(rows)), key=key)

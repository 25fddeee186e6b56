"""The EMA teacher of self-training and the pseudo-labels it gives on unlabelled target images.

The teacher's weights are an exponential moving average of the student's (Mean Teacher,
as DACS and DAFormer use): predictions that change slowly give stable pseudo-labels. Its
quality estimate is DAFormer's: the share of pixels whose top softmax probability exceeds
a threshold (0.968) becomes the weight of every pseudo-labelled pixel of the batch, so a
batch the teacher is unsure of counts less.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from segmerge_bench.training.loss import upsample
from segmerge_bench.zoo.models import segment


@dataclass
class PseudoLabels:
    labels: torch.Tensor  # int64 [B,H,W]: the teacher's argmax
    confident: torch.Tensor  # bool [B,H,W]: the pixels with max probability > threshold

    @property
    def weight(self) -> float:
        """The share of confident pixels: DAFormer's weight of every pseudo-label of the batch."""
        return float(self.confident.float().mean())

    def pixel_weights(self, weighting: str) -> float | torch.Tensor:
        """The pseudo-labels' loss weight: DAFormer's one share per batch (``"batch"``), or 1 on
        confident pixels and 0 elsewhere (``"pixel"``, as FixMatch-style self-training does)."""
        return self.confident.float() if weighting == "pixel" else self.weight


class EMATeacher:
    def __init__(self, student: nn.Module, alpha: float):
        self.alpha = alpha
        self.model = copy.deepcopy(student).eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)

    @torch.no_grad()
    def update(self, student: nn.Module, step: int) -> None:
        """teacher = a * teacher + (1 - a) * student, a = min(1 - 1/(step + 1), alpha) as in DAFormer:
        early on the teacher follows the student closely, then averages over ~1/(1 - alpha) steps."""
        alpha = min(1.0 - 1.0 / (step + 1), self.alpha)
        for mine, theirs in zip(self.model.parameters(), student.parameters(), strict=True):
            mine.mul_(alpha).add_(theirs.detach(), alpha=1.0 - alpha)
        for mine, theirs in zip(self.model.buffers(), student.buffers(), strict=True):
            if mine.is_floating_point():
                mine.mul_(alpha).add_(theirs, alpha=1.0 - alpha)
            else:
                mine.copy_(theirs)

    @torch.no_grad()
    def pseudo_labels(self, pixels: torch.Tensor, threshold: float) -> PseudoLabels:
        probabilities = upsample(segment(self.model, pixels), pixels.shape[-2:]).softmax(dim=1)
        confidence, labels = probabilities.max(dim=1)
        return PseudoLabels(labels, confidence > threshold)

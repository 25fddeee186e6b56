"""Pixel-wise cross-entropy on logits upsampled to the labels' size, optionally weighted per pixel.

Models predict at stride 4; like mmseg, the loss is taken at full resolution so thin
classes (poles, signs) count by their true area. The weighted form is the pseudo-label
loss of self-training: each pixel's term is scaled by its confidence weight.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from segmerge.labels import IGNORE_INDEX


def upsample(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over labelled pixels of CE (times ``weight`` [B,H,W] when given); ignored pixels count zero."""
    logits = upsample(logits, labels.shape[-2:])
    if weight is None:
        return F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)
    per_pixel = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="none")
    return (per_pixel * weight).mean()

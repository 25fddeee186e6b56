"""Masked image consistency (MIC, Hoyer et al., CVPR 2023), the second UDA method of the benchmark.

On top of self-training, the student also sees each target image with most of it hidden:
random square blocks (a share ``ratio`` of them) are set to zero, and the student must
still predict the teacher's pseudo-labels of the whole image there, weighted by the
teacher's confidence. It learns to use context, which is what adapts a model beyond its
source's look. MIC masks 64-pixel blocks of 512-pixel crops at ratio 0.7; the benchmark's
images are 96 pixels high, so its blocks are 12 pixels: the same eighth of the crop side.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MASK_BLOCK = 12
MASK_RATIO = 0.7


def block_mask(batch: int, height: int, width: int, block: int, ratio: float, generator: torch.Generator):
    """float [B,1,H,W]: 1 where pixels stay visible, 0 in the hidden blocks (each block hidden with
    probability ``ratio``), on the CPU, where ``generator`` draws."""
    rows, columns = -(-height // block), -(-width // block)
    visible = (torch.rand(batch, 1, rows, columns, generator=generator, device="cpu") >= ratio).float()
    return F.interpolate(visible, scale_factor=block, mode="nearest")[..., :height, :width]


def masked(pixels: torch.Tensor, generator: torch.Generator, block: int = MASK_BLOCK, ratio: float = MASK_RATIO):
    """``pixels`` (normalised, [B,3,H,W]) with random blocks hidden (set to 0, the mean colour)."""
    b, _, h, w = pixels.shape
    return pixels * block_mask(b, h, w, block, ratio, generator).to(pixels.device)

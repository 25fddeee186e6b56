"""ClassMix (Olsson et al., WACV 2021), the cross-domain mixing of DACS and DAFormer.

Half of the classes present in a source image are cut out with their pixels and pasted
onto a target image; the mixed label is the source label where pasted and the teacher's
pseudo-label elsewhere. The student thus sees target context with source objects of
known class, and target pixels it must label like the teacher does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from segmerge.labels import IGNORE_INDEX


@dataclass
class Mixed:
    pixels: torch.Tensor  # [B,3,H,W]
    labels: torch.Tensor  # int64 [B,H,W]
    weight: torch.Tensor  # float [B,H,W]: 1 on pasted source pixels, the pseudo-labels' weight elsewhere
    mask: torch.Tensor  # bool [B,H,W]: the pasted source pixels


def class_masks(source_labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """bool [B,H,W]: per image, the pixels of a random half (rounded up) of its labelled classes."""
    masks = torch.zeros_like(source_labels, dtype=torch.bool)
    for i, labels in enumerate(source_labels):
        classes = labels.unique()
        classes = classes[classes != IGNORE_INDEX]
        if len(classes) == 0:
            continue
        drawn = torch.randperm(len(classes), generator=generator, device="cpu")[: (len(classes) + 1) // 2]
        chosen = classes[drawn.to(classes.device)]
        masks[i] = torch.isin(labels, chosen)
    return masks


def class_mix(
    source_pixels: torch.Tensor,
    source_labels: torch.Tensor,
    target_pixels: torch.Tensor,
    pseudo_labels: torch.Tensor,
    pseudo_weight: float | torch.Tensor,
    generator: torch.Generator,
) -> Mixed:
    """Paste half of each source image's classes onto the paired target image. ``pseudo_weight``:
    the pseudo-labels' weight, one for the batch or per pixel [B,H,W]."""
    mask = class_masks(source_labels, generator)
    pixels = torch.where(mask.unsqueeze(1), source_pixels, target_pixels)
    labels = torch.where(mask, source_labels, pseudo_labels)
    weight = torch.where(mask, 1.0, pseudo_weight)
    return Mixed(pixels, labels, weight, mask)

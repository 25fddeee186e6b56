"""HRDA's multi-resolution network (HRDA, MIC-HRDA): two scales fused by a learned scale attention.

Follows lhoyer/HRDA (commit c370b5b):

* ``mmseg/models/segmentors/hrda_encoder_decoder.py`` ``HRDAEncoderDecoder.encode_decode``
  (l. 162-185): for each scale (sorted, e.g. 0.5 then 1) the image is resized by
  ``scale_factor`` (bilinear, ``align_corners=False``, l. 134-143); the low-resolution context
  image runs the backbone whole, the high-resolution detail image runs it on overlapping
  ``hr_crop_size`` crops (stride half a crop, the last crop flush with the border;
  ``extract_slide_feat``, l. 94-119); the head's output is resized to the image's size;
* ``mmseg/models/decode_heads/hrda_head.py`` ``HRDAHead`` (l. 33-232): ``head`` (a DAFormer head)
  decodes the context features (``lr_seg``) and each detail crop, whose logits are placed at
  their box / 4 and averaged where crops overlap (``decode_hr``, l. 106-137);
  ``scale_attention`` (a second DAFormer head, classwise or one channel) gives
  ``att = sigmoid(scale_attention(context features))`` (l. 139-144); the fused logits are
  ``att * hr_seg + resize((1 - att) * lr_seg, hr/lr)`` with ``att`` resized likewise
  (``forward``, l. 146-210; no crop mask at test time).

The test-time outer sliding window (``test_cfg`` mode ``slide``, 1024x1024 crops every 512x512 on
the full 2048x1024 image, HRDA's ``configs/hrda/*`` and ``configs/_base_/datasets/
uda_gtaHR_to_cityscapesHR_1024x1024.py``) is segmerge's own sliding window, whose windows this
module receives as images.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

#: HRDA's defaults (``configs/hrda/gtaHR2csHR_hrda.py``-style configs: ``scales=[1, 0.5]``,
#: ``hr_crop_size=[512, 512]``, overlapping detail crops) and its Cityscapes test setting.
HRDA_SCALES = (0.5, 1.0)
HRDA_CROP = (512, 512)
HRDA_TEST = {"mode": "slide", "crop": (1024, 1024), "stride": (512, 512), "scale": (2048, 1024)}


def _scaled(x: torch.Tensor, s: float) -> torch.Tensor:
    return x if s == 1 else F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)


def detail_boxes(height: int, width: int, crop: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """(y1, y2, x1, x2) of the overlapping detail crops (stride half a crop)."""
    (ch, cw), (sh, sw) = crop, (crop[0] // 2, crop[1] // 2)
    rows = max(height - ch + sh - 1, 0) // sh + 1
    cols = max(width - cw + sw - 1, 0) // sw + 1
    boxes = []
    for r in range(rows):
        for c in range(cols):
            y2, x2 = min(r * sh + ch, height), min(c * sw + cw, width)
            boxes.append((max(y2 - ch, 0), y2, max(x2 - cw, 0), x2))
    return boxes


class HRDAEncoderDecoder(nn.Module):
    """Images -> fused logits at the images' size. Module names match HRDA's state dict keys
    (``backbone.``, ``decode_head.head.``, ``decode_head.scale_attention.``)."""

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        attention: nn.Module,
        num_classes: int,
        scales: Sequence[float] = HRDA_SCALES,
        hr_crop: tuple[int, int] = HRDA_CROP,
        output_stride: int = 4,
    ):
        super().__init__()
        self.backbone = backbone
        self.decode_head = nn.Module()
        self.decode_head.head = head
        self.decode_head.scale_attention = attention
        self.num_classes = num_classes
        self.scales = tuple(sorted(scales))
        self.hr_crop = tuple(hr_crop)
        self.os = output_stride

    def _detail(self, image: torch.Tensor) -> torch.Tensor:
        n, _, height, width = image.shape
        boxes = detail_boxes(height, width, self.hr_crop)
        crops = torch.cat([image[:, :, y1:y2, x1:x2] for y1, y2, x1, x2 in boxes])
        logits = self.decode_head.head(self.backbone(crops))
        boxes = [tuple(int(v / self.os) for v in box) for box in boxes]
        h, w = max(b[1] for b in boxes), max(b[3] for b in boxes)
        total = logits.new_zeros(n, logits.shape[1], h, w)
        count = logits.new_zeros(n, 1, h, w)
        for i, (y1, y2, x1, x2) in enumerate(boxes):
            total[:, :, y1:y2, x1:x2] += logits[i * n : (i + 1) * n]
            count[:, :, y1:y2, x1:x2] += 1
        return total / count

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lr_scale, hr_scale = self.scales
        context = self.backbone(_scaled(x, lr_scale))
        lr_seg = self.decode_head.head(context)
        hr_seg = self._detail(_scaled(x, hr_scale))
        att = torch.sigmoid(self.decode_head.scale_attention(context))
        up_lr = _scaled((1 - att) * lr_seg, hr_scale / lr_scale)
        fused = _scaled(att, hr_scale / lr_scale) * hr_seg + up_lr
        return F.interpolate(fused, size=x.shape[2:], mode="bilinear", align_corners=False)

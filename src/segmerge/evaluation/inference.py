"""Running a segmenter over an image: whole-image or sliding-window, batched, on any device.

Sliding-window inference follows mmsegmentation's ``slide_inference``: windows of
``crop`` every ``stride``, the last window flush with the border, each window's scores
resized to the crop and averaged where windows overlap. Scores are then resized to the
label's size (bilinear, as mmseg does) before the argmax.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from segmerge.segmenters.base import Segmenter


@dataclass(frozen=True)
class InferenceConfig:
    mode: str = "whole"  # whole | slide
    crop: tuple[int, int] = (512, 1024)
    stride: tuple[int, int] = (341, 683)
    batch_size: int = 4
    device: str = "cpu"
    amp: bool = False

    def autocast(self):
        if not self.amp:
            return nullcontext()
        device_type = torch.device(self.device).type
        dtype = torch.float16 if device_type == "cuda" else torch.bfloat16
        return torch.autocast(device_type=device_type, dtype=dtype)


@dataclass
class Timer:
    seconds: float = 0.0
    images: int = 0

    @property
    def ms_per_image(self) -> float:
        return 1000.0 * self.seconds / self.images if self.images else float("nan")


def window_origins(size: int, crop: int, stride: int) -> list[int]:
    """Start offsets of the windows along one axis (the last one flush with the border)."""
    grids = max(size - crop + stride - 1, 0) // stride + 1
    return [max(min(g * stride, size - crop), 0) for g in range(grids)]


@torch.no_grad()
def predict_probabilities(
    segmenter: Segmenter, images: torch.Tensor, config: InferenceConfig, timer: Timer | None = None
) -> torch.Tensor:
    """uint8 images [N,H,W,3] -> class probabilities [N,C,H,W] (float32, on the CPU)."""
    start = time.perf_counter()
    pixels = segmenter.normalise(images.to(config.device))
    if config.mode == "slide":
        scores = torch.cat([_slide(segmenter, pixels[i : i + 1], config) for i in range(len(pixels))])
    else:
        with config.autocast():
            scores = segmenter.scores(pixels).float()
        scores = F.interpolate(scores, size=pixels.shape[-2:], mode="bilinear", align_corners=False)
    probs = segmenter.probabilities(scores)
    if probs.is_cuda:
        torch.cuda.synchronize()
    if timer is not None:
        timer.seconds += time.perf_counter() - start
        timer.images += len(images)
    return probs.cpu()


def _slide(segmenter: Segmenter, pixels: torch.Tensor, config: InferenceConfig) -> torch.Tensor:
    _, _, height, width = pixels.shape
    crop_h, crop_w = min(config.crop[0], height), min(config.crop[1], width)
    boxes = [
        (y, x)
        for y in window_origins(height, crop_h, config.stride[0])
        for x in window_origins(width, crop_w, config.stride[1])
    ]
    total = None
    count = torch.zeros(1, 1, height, width, device=pixels.device)
    for i in range(0, len(boxes), config.batch_size):
        chunk = boxes[i : i + config.batch_size]
        crops = torch.cat([pixels[:, :, y : y + crop_h, x : x + crop_w] for y, x in chunk])
        with config.autocast():
            scores = segmenter.scores(crops).float()
        scores = F.interpolate(scores, size=(crop_h, crop_w), mode="bilinear", align_corners=False)
        if total is None:
            total = torch.zeros(1, scores.shape[1], height, width, device=pixels.device)
        for (y, x), window in zip(chunk, scores, strict=True):
            total[:, :, y : y + crop_h, x : x + crop_w] += window
            count[:, :, y : y + crop_h, x : x + crop_w] += 1
    return total / count


def ensemble_probabilities(per_model: list[torch.Tensor]) -> torch.Tensor:
    """The output ensemble: the mean of the models' class probabilities (M times the cost)."""
    return torch.stack(per_model).mean(0)

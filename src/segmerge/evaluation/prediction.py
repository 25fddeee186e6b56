"""The one prediction path: segmenters + images -> class probabilities and panoptic outputs.

Evaluation (``segmerge eval``), the benchmark's scoring and ``segmerge tune``'s label-free
criteria all predict through :func:`predict`: each network runs once per image, under one
:class:`InferenceConfig` (whole image or sliding window, device, one mixed-precision
policy), and every consumer takes what it needs from the same :class:`BatchPrediction` -
each model's class probabilities, their output ensemble, each model's panoptic
segmentation (from the same forward pass).

Sliding-window inference follows mmsegmentation's ``slide_inference``: windows of ``crop``
every ``stride``, the last window flush with the border, each window's scores resized to
the crop and averaged where windows overlap. Scores are then resized to the label's size
(bilinear, as mmseg does) before the argmax.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from segmerge.errors import SegmergeError
from segmerge.segmenters.base import Segmenter

MODES = ("whole", "slide")


def check_device(device: str) -> None:
    """Refuse, before any work, a device this torch cannot use (one line that says what to do)."""
    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise SegmergeError(f"--device {device!r}: not a device; use cpu, cuda, cuda:N or mps") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise SegmergeError(
            f"--device {device}: this PyTorch ({torch.__version__}) sees no CUDA GPU; use --device cpu, "
            "or install a CUDA build of PyTorch on a machine with a GPU"
        )
    if kind == "mps" and not torch.backends.mps.is_available():
        raise SegmergeError(f"--device {device}: MPS is not available here; use --device cpu")


def amp_dtype(device: str | torch.device) -> torch.dtype:
    """The one mixed-precision policy: bfloat16 wherever the device has it (CPUs, recent GPUs) -
    it needs no loss scaling, so the same autocast serves inference and ``segmerge tune --learn`` -
    and float16 on GPUs without it."""
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


@dataclass(frozen=True)
class InferenceConfig:
    """How networks run. ``batch_size``: images per forward pass (whole) or windows per forward
    pass (slide)."""

    mode: str = "whole"  # whole | slide
    crop: tuple[int, int] = (512, 1024)
    stride: tuple[int, int] = (341, 683)
    batch_size: int = 4
    device: str = "cpu"
    amp: bool = False
    #: Rescale each image to fit (long edge, short edge) keeping its aspect ratio before inference,
    #: as mmseg's test ``Resize(img_scale=..., keep_ratio=True)`` does; scores go back to the label's size.
    scale: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise SegmergeError(f"--mode {self.mode!r}: choose {' or '.join(MODES)}")
        for name, (height, width) in (("--crop", self.crop), ("--stride", self.stride)):
            if height < 1 or width < 1:
                raise SegmergeError(f"{name} {height}x{width}: both sides must be at least 1 pixel")
        if self.scale is not None and min(self.scale) < 1:
            raise SegmergeError(f"--scale {self.scale[0]}x{self.scale[1]}: both edges must be at least 1 pixel")
        if self.batch_size < 1:
            raise SegmergeError(f"--batch-size {self.batch_size}: must be at least 1")
        check_device(self.device)

    def autocast(self):
        if not self.amp:
            return nullcontext()
        return torch.autocast(device_type=torch.device(self.device).type, dtype=amp_dtype(self.device))


#: The settings a segmenter's family may set as defaults (``Segmenter.extra["inference"]``).
DEFAULTABLE = ("mode", "crop", "stride", "scale")


def with_model_defaults(config: InferenceConfig, segmenters: Sequence[Segmenter], unset: Collection[str]):
    """``config`` with the settings the user left ``unset`` taken from the models' families'
    test-time defaults (built-in networks carry them), when all models agree on them."""
    chosen = {}
    for name in DEFAULTABLE:
        if name not in unset:
            continue
        values = {
            tuple(v) if isinstance(v, list) else v
            for s in segmenters
            if (v := s.extra.get("inference", {}).get(name)) is not None
        }
        has = [name in s.extra.get("inference", {}) for s in segmenters]
        if len(values) == 1 and all(has):
            chosen[name] = values.pop()
    return replace(config, **chosen) if chosen else config


def rescaled_size(height: int, width: int, scale: tuple[int, int]) -> tuple[int, int]:
    """mmcv's ``rescale_size`` for keep_ratio: the largest size with long edge <= max(scale) and
    short edge <= min(scale), rounded to the nearest pixel."""
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def rescale_images(images: torch.Tensor, scale: tuple[int, int] | None) -> torch.Tensor:
    """uint8 [N,H,W,3] rescaled to fit ``scale`` (bilinear, like mmcv's cv2 resize), still uint8."""
    if scale is None:
        return images
    size = rescaled_size(images.shape[1], images.shape[2], scale)
    if size == tuple(images.shape[1:3]):
        return images
    x = F.interpolate(images.permute(0, 3, 1, 2).float(), size=size, mode="bilinear", align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


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


def class_map(probabilities: torch.Tensor) -> torch.Tensor:
    """[N,C,H,W] -> the most probable class [N,H,W]: ``argmax(1)``, ties to the lowest class
    alike, but several times faster on CPU for this layout."""
    return probabilities.max(1).indices


def ensemble_probabilities(per_model: Sequence[torch.Tensor]) -> torch.Tensor:
    """The output ensemble: the mean of the models' class probabilities (M times the cost)."""
    return torch.stack(list(per_model)).mean(0)


def _resized(scores: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    if size is None or tuple(scores.shape[-2:]) == tuple(size):
        return scores
    return F.interpolate(scores, size=tuple(size), mode="bilinear", align_corners=False)


def class_scores(
    segmenter: Segmenter,
    images: torch.Tensor,
    config: InferenceConfig,
    size: tuple[int, int] | None = None,
    keep_outputs: bool = False,
) -> tuple[torch.Tensor, Any]:
    """uint8 images [N,H,W,3] -> (float32 class scores [N,C,h,w] of one whole-image forward pass,
    resized to ``size`` when given; the network's raw outputs, or ``None`` unless ``keep_outputs``).
    Gradients flow (tuning learns through it); :func:`predict` is the inference entry point."""
    pixels = segmenter.normalise(images.to(config.device))
    outputs = None
    with config.autocast():
        if keep_outputs:
            outputs = segmenter.run(pixels)
            scores = segmenter.head(outputs)
        else:
            scores = segmenter.scores(pixels)
    return _resized(scores.float(), size), outputs


def _slide_scores(segmenter: Segmenter, image: torch.Tensor, config: InferenceConfig) -> torch.Tensor:
    pixels = segmenter.normalise(image.to(config.device))
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
            scores = segmenter.head(segmenter.run(crops)).float()
        scores = F.interpolate(scores, size=(crop_h, crop_w), mode="bilinear", align_corners=False)
        if total is None:
            total = torch.zeros(1, scores.shape[1], height, width, device=pixels.device)
        for (y, x), window in zip(chunk, scores, strict=True):
            total[:, :, y : y + crop_h, x : x + crop_w] += window
            count[:, :, y : y + crop_h, x : x + crop_w] += 1
    return total / count


@dataclass
class BatchPrediction:
    """What every consumer needs from one batch of images, every network having run once.

    ``indices``: the batch's images among those given to :func:`predict`; ``probabilities``:
    per segmenter, float32 [n,C,H,W] on the CPU at ``size``; ``outputs``: per segmenter, the
    network's raw outputs on the device (``None`` unless :func:`predict` was asked to keep them,
    and in sliding-window mode).
    """

    indices: slice
    segmenters: Sequence[Segmenter]
    probabilities: list[torch.Tensor]
    outputs: list[Any]
    size: tuple[int, int]

    def ensemble(self) -> torch.Tensor:
        """The output ensemble's probabilities (a single model's own when there is one)."""
        if len(self.probabilities) == 1:
            return self.probabilities[0]
        return ensemble_probabilities(self.probabilities)

    def panoptic(
        self, model: int, thing_ids: Collection[int], classes: torch.Tensor | None = None
    ) -> list[tuple[np.ndarray, list[dict]]]:
        """Model ``model``'s panoptic segmentation of each image: (int64 ids [H,W] on the CPU,
        segments_info). ``classes`` ([n,H,W], e.g. the ensemble's class map) replaces the model's own
        semantic prediction where its post-processing can group another's classes (centre/offset
        models can; Mask2Former cannot)."""
        segmenter = self.segmenters[model]
        if segmenter.panoptic_head is None:
            raise SegmergeError(f"{segmenter.source or segmenter.name}: has no panoptic output")
        outputs = self.outputs[model]
        if outputs is None:
            raise SegmergeError(
                "panoptic outputs need whole-image inference (--mode whole) and predict(..., keep_outputs=True)"
            )
        results = []
        for i in range(self.indices.stop - self.indices.start):
            ids, segments = segmenter.panoptic_head(
                outputs, i, self.size, thing_ids, None if classes is None else classes[i]
            )
            results.append((ids.cpu().numpy() if isinstance(ids, torch.Tensor) else np.asarray(ids), segments))
        return results


@torch.no_grad()
def predict(
    segmenters: Sequence[Segmenter],
    images: torch.Tensor,
    config: InferenceConfig = InferenceConfig(),
    size: tuple[int, int] | None = None,
    timers: Sequence[Timer] | None = None,
    keep_outputs: bool = False,
) -> Iterator[BatchPrediction]:
    """uint8 images [N,H,W,3] -> one :class:`BatchPrediction` per ``config.batch_size`` images (per
    image in sliding-window mode). Probabilities are resized to ``size`` (default: the images').
    ``keep_outputs``: keep each network's raw outputs (what panoptic post-processing reads)."""
    if keep_outputs and config.mode == "slide":
        raise SegmergeError("panoptic outputs need whole-image inference: pass --mode whole")
    size = tuple(size) if size is not None else tuple(images.shape[1:3])
    images = rescale_images(images, config.scale)
    step = 1 if config.mode == "slide" else config.batch_size
    for start in range(0, len(images), step):
        part = slice(start, min(start + step, len(images)))
        probabilities, outputs = [], []
        for k, segmenter in enumerate(segmenters):
            began = time.perf_counter()
            if config.mode == "slide":
                scores, raw = _resized(_slide_scores(segmenter, images[part], config), size), None
            else:
                scores, raw = class_scores(segmenter, images[part], config, size, keep_outputs)
            probs = segmenter.probabilities(scores)
            if probs.is_cuda:
                torch.cuda.synchronize()
            if timers is not None:
                timers[k].seconds += time.perf_counter() - began
                timers[k].images += part.stop - part.start
            probabilities.append(probs.cpu())
            outputs.append(raw)
        yield BatchPrediction(part, segmenters, probabilities, outputs, size)

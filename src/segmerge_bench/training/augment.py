"""The strong augmentation DACS and DAFormer apply to the mixed images of self-training.

Per image: with probability 1 - ``JITTER_SKIP`` (DAFormer: ``color_jitter_probability=0.2``
is the chance to skip) brightness, contrast and saturation are each scaled by a factor
drawn from [1 - s, 1 + s] with strength s = 0.2 (``color_jitter_strength``); with
probability 0.5 the image is blurred by a Gaussian of sigma drawn from [0.15, 1.15]
pixels (DACS's ``gaussian_blur``). Hue is not jittered. The student learns from the
teacher's pseudo-labels on images whose look varies, which is what makes self-training
adapt rather than copy the teacher.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from segmerge.segmenters.base import IMAGENET_MEAN, IMAGENET_STD

JITTER_STRENGTH = 0.2
JITTER_SKIP = 0.2
BLUR_PROBABILITY = 0.5
BLUR_SIGMA = (0.15, 1.15)


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, device="cpu")


def strong_augment(pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Normalised images [B,3,H,W] -> the same, colour-jittered and blurred per image (a new tensor)."""
    b = pixels.shape[0]
    device = pixels.device
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    rgb = pixels * std + mean
    jitter = (torch.rand(b, generator=generator, device="cpu") >= JITTER_SKIP).to(device).view(b, 1, 1, 1)
    s = JITTER_STRENGTH
    brightness, contrast, saturation = (
        _uniform(b, 1 - s, 1 + s, generator).to(device).view(b, 1, 1, 1) for _ in range(3)
    )
    jittered = (rgb * brightness).clamp(0, 1)
    grey = (0.299 * jittered[:, 0] + 0.587 * jittered[:, 1] + 0.114 * jittered[:, 2]).unsqueeze(1)
    jittered = ((jittered - grey.mean((2, 3), keepdim=True)) * contrast + grey.mean((2, 3), keepdim=True)).clamp(0, 1)
    grey = (0.299 * jittered[:, 0] + 0.587 * jittered[:, 1] + 0.114 * jittered[:, 2]).unsqueeze(1)
    jittered = ((jittered - grey) * saturation + grey).clamp(0, 1)
    rgb = torch.where(jitter, jittered, rgb)
    blur = torch.rand(b, generator=generator, device="cpu") < BLUR_PROBABILITY
    sigmas = _uniform(b, *BLUR_SIGMA, generator)
    out = rgb.clone()
    for i in torch.nonzero(blur).flatten().tolist():
        out[i] = gaussian_blur(rgb[i : i + 1], float(sigmas[i]))[0]
    return (out - mean) / std


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """[N,C,H,W] blurred by a separable Gaussian of ``sigma`` pixels (radius 3 sigma, reflected edges)."""
    radius = max(1, int(3 * sigma + 0.5))
    x = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    c = images.shape[1]
    padded = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    horizontal = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(horizontal, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)

"""One entry point for the benchmark's two architectures: build, run, save and load by name.

Training and the benchmark handle SegFormer and DAFormer-style networks alike through
these functions, so neither needs to know which of the two it holds.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from segmerge.errors import SegmergeError
from segmerge.zoo import daformer, segformer

ARCHITECTURES = (segformer.ARCHITECTURE, daformer.ARCHITECTURE)


def build_model(architecture: str, num_classes: int = 19, seed: int = 0, **settings) -> nn.Module:
    """A randomly initialised network of ``architecture`` ("segformer" or "daformer")."""
    if architecture == segformer.ARCHITECTURE:
        return segformer.build_segformer(num_classes, seed, **settings)
    if architecture == daformer.ARCHITECTURE:
        return daformer.build_daformer(num_classes, seed, **settings)
    raise SegmergeError(f"unknown architecture {architecture!r}; choose one of {', '.join(ARCHITECTURES)}")


def architecture_of(model: nn.Module) -> str:
    if isinstance(model, daformer.DAFormer):
        return daformer.ARCHITECTURE
    if type(model).__name__ == "SegformerForSemanticSegmentation":
        return segformer.ARCHITECTURE
    raise SegmergeError(f"{type(model).__name__} is not one of segmerge's benchmark networks")


def segment(model: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """Normalised images [N,3,H,W] -> logits [N,C,H/4,W/4], whichever the architecture."""
    if isinstance(model, daformer.DAFormer):
        return model(pixels)
    return model(pixel_values=pixels).logits


def encoder_of(model: nn.Module) -> nn.Module:
    """The shared MiT encoder (``SegformerModel``) inside either architecture."""
    return model.backbone if isinstance(model, daformer.DAFormer) else model.segformer


def decoder_of(model: nn.Module) -> nn.Module:
    return model.decode_head


def save_model(model: nn.Module, path: str | Path) -> Path:
    """SegFormer -> a Hugging Face folder; DAFormer -> an mmseg-style ``.pth``."""
    if architecture_of(model) == daformer.ARCHITECTURE:
        return daformer.save_daformer(model, path)
    return segformer.save_segformer(model, path)


def load_model(path: str | Path) -> nn.Module:
    """A network saved by :func:`save_model` (or a merge of such files), in eval mode."""
    path = Path(path)
    if path.is_dir():
        return segformer.load_segformer(path).eval()
    return daformer.load_daformer(path).eval()

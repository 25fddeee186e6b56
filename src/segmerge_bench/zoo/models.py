"""One entry point for the benchmark's architectures: build, run, save and load by name.

Training and the benchmark handle SegFormer, DAFormer-style and panoptic networks alike
through these functions, so neither needs to know which one it holds. ``segment`` always
gives semantic logits (a panoptic network's semantic head), so semantic training and
evaluation work on every architecture; ``model(pixels)`` of a panoptic network gives all
its outputs (:class:`~segmerge_bench.zoo.panoptic.PanopticOutput`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from segmerge.errors import SegmergeError
from segmerge_bench.zoo import daformer, panoptic, segformer

ARCHITECTURES = (segformer.ARCHITECTURE, daformer.ARCHITECTURE, panoptic.ARCHITECTURE)


def build_model(architecture: str, num_classes: int = 19, seed: int = 0, **settings) -> nn.Module:
    """A randomly initialised network of ``architecture`` (one of :data:`ARCHITECTURES`)."""
    if architecture == segformer.ARCHITECTURE:
        return segformer.build_segformer(num_classes, seed, **settings)
    if architecture == daformer.ARCHITECTURE:
        return daformer.build_daformer(num_classes, seed, **settings)
    if architecture == panoptic.ARCHITECTURE:
        return panoptic.build_panoptic(num_classes, seed, **settings)
    raise SegmergeError(f"unknown architecture {architecture!r}; choose one of {', '.join(ARCHITECTURES)}")


def architecture_of(model: nn.Module) -> str:
    if isinstance(model, daformer.DAFormer):
        return daformer.ARCHITECTURE
    if isinstance(model, panoptic.PanopticModel):
        return panoptic.ARCHITECTURE
    if type(model).__name__ == "SegformerForSemanticSegmentation":
        return segformer.ARCHITECTURE
    raise SegmergeError(f"{type(model).__name__} is not one of segmerge's benchmark networks")


def segment(model: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """Normalised images [N,3,H,W] -> semantic logits [N,C,H/4,W/4], whichever the architecture."""
    if isinstance(model, daformer.DAFormer):
        return model(pixels)
    if isinstance(model, panoptic.PanopticModel):
        return model.semantic(pixels)
    return model(pixel_values=pixels).logits


def encoder_of(model: nn.Module) -> nn.Module:
    """The shared MiT encoder (``SegformerModel``) inside any of the architectures."""
    if isinstance(model, daformer.DAFormer | panoptic.PanopticModel):
        return model.backbone
    return model.segformer


def decoder_of(model: nn.Module) -> nn.Module:
    """Everything but the encoder: the head(s) that train at the decoder's learning rate."""
    if isinstance(model, panoptic.PanopticModel):
        return model.heads()
    return model.decode_head


def save_model(model: nn.Module, path: str | Path) -> Path:
    """SegFormer -> a Hugging Face folder; DAFormer and panoptic -> an mmseg-style ``.pth``."""
    architecture = architecture_of(model)
    if architecture == daformer.ARCHITECTURE:
        return daformer.save_daformer(model, path)
    if architecture == panoptic.ARCHITECTURE:
        return panoptic.save_panoptic(model, path)
    return segformer.save_segformer(model, path)


def load_model(path: str | Path) -> nn.Module:
    """A network saved by :func:`save_model` (or a merge of such files), in eval mode."""
    path = Path(path)
    if path.is_dir():
        return segformer.load_segformer(path).eval()
    from segmerge.checkpoints import open_checkpoint

    checkpoint = open_checkpoint(path)
    return model_from_checkpoint(checkpoint, str(path))


def model_from_checkpoint(checkpoint, source: str) -> nn.Module:
    """Rebuild the network an opened segmerge ``.pth`` describes in ``meta["segmerge_model"]``."""
    content = checkpoint.pth_content
    spec = (content.meta or {}).get(daformer.META_KEY) if content is not None else None
    if not isinstance(spec, Mapping):
        raise SegmergeError(
            f"{source}: no meta[{daformer.META_KEY!r}]; not a DAFormer or panoptic checkpoint written by segmerge"
        )
    if spec.get("architecture") == panoptic.ARCHITECTURE:
        return panoptic.panoptic_from_state(checkpoint.state_dict(), spec, source)
    return daformer.daformer_from_state(checkpoint.state_dict(), spec, source)

"""The models being merged, opened once for a tuning run: their tensors, their networks, their ensemble."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from segmerge.checkpoints import open_checkpoint
from segmerge.segmenters import Segmenter, load_segmenter
from segmerge.tuning.network import BoundNetwork, iter_batches


@dataclass(frozen=True)
class Runtime:
    """Where and how networks run: device, mixed precision, images per forward pass."""

    device: str = "cpu"
    amp: bool = False
    batch_size: int = 8

    def autocast(self):
        if not self.amp:
            return nullcontext()
        device_type = torch.device(self.device).type
        # bfloat16 needs no loss scaling, so the same autocast serves inference and learning.
        return torch.autocast(device_type=device_type, dtype=torch.bfloat16)


def scores(segmenter: Segmenter, images: torch.Tensor, runtime: Runtime, size=None) -> torch.Tensor:
    """uint8 images [N,H,W,3] -> float32 scores [N,C,h,w] (resized to ``size`` when given)."""
    pixels = segmenter.normalise(images.to(runtime.device))
    with runtime.autocast():
        out = segmenter.scores(pixels)
    out = out.float()
    if size is not None and tuple(out.shape[-2:]) != tuple(size):
        out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
    return out


@dataclass
class TuningModels:
    """``paths``: the checkpoints; ``states``: their tensors (checkpoint names, module order);
    ``segmenters``: their networks, loaded with ``factory`` (or by segmerge) on ``runtime.device``."""

    paths: list[Path]
    states: list[dict[str, torch.Tensor]]
    segmenters: list[Segmenter]
    runtime: Runtime
    _bound: dict[int, BoundNetwork] = field(default_factory=dict)

    @classmethod
    def open(
        cls, models: Sequence[str | Path], factory: str | None = None, runtime: Runtime | None = None
    ) -> TuningModels:
        runtime = runtime or Runtime()
        paths = [Path(m) for m in models]
        states = [open_checkpoint(p).state_dict() for p in paths]
        segmenters = [
            load_segmenter(str(p), factory, name=f"model{i}", device=runtime.device) for i, p in enumerate(paths)
        ]
        for s in segmenters:
            for p in s.module.parameters():
                p.requires_grad_(False)
        return cls(paths, states, segmenters, runtime)

    def __len__(self) -> int:
        return len(self.paths)

    def bound(self, index: int) -> BoundNetwork:
        """Model ``index``'s network, addressable by its checkpoint's key names."""
        if index not in self._bound:
            self._bound[index] = BoundNetwork.bind(self.segmenters[index], self.states[index])
        return self._bound[index]

    @torch.no_grad()
    def ensemble(self, images: torch.Tensor, size=None) -> torch.Tensor:
        """The output ensemble's probabilities [N,C,h,w] on the CPU: the mean of the models' softmax,
        each model's scores resized to ``size`` (default: the first model's output size)."""
        out = []
        for part in iter_batches(len(images), self.runtime.batch_size):
            probs = None
            for segmenter in self.segmenters:
                s = scores(segmenter, images[part], self.runtime, size)
                size = size or tuple(s.shape[-2:])
                p = segmenter.probabilities(s)
                probs = p if probs is None else probs + p
            out.append((probs / len(self.segmenters)).cpu())
        return torch.cat(out)

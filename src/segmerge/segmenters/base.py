"""The one interface evaluation needs from a model, and how a model spec is resolved."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from segmerge.errors import SegmergeError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Segmenter:
    """A network that maps normalised images [N,3,H,W] to class scores [N,C,h,w].

    ``run`` is the network's forward pass (``forward``, or ``module(pixels)``), run once per
    image by :func:`segmerge.evaluation.prediction.predict`; ``head`` turns its raw outputs
    into class scores. ``scores_are_logits``: the scores are logits (softmax gives
    probabilities); otherwise they are already probabilities (Mask2Former's
    mask-classification output). ``panoptic_head``: optional
    ``(outputs, index, size, thing_ids, classes) -> (ids [H,W], segments_info)``, image
    ``index`` of the same raw outputs as a panoptic segmentation; ``classes`` ([H,W] or
    ``None``) is a class map to group instead of the model's own (an ensemble's).
    ``score_forward``: optional cheaper pass for when only class scores are needed (a
    panoptic network's semantic branch alone); it must give what ``head(run(pixels))`` gives.
    """

    name: str
    module: torch.nn.Module
    num_classes: int
    head: Callable[[Any], torch.Tensor]
    scores_are_logits: bool = True
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    panoptic_head: Callable | None = None
    source: str = ""
    extra: dict = field(default_factory=dict)
    forward: Callable[[torch.Tensor], Any] | None = None
    score_forward: Callable[[torch.Tensor], torch.Tensor] | None = None

    def run(self, pixels: torch.Tensor) -> Any:
        """The network's raw outputs for normalised images."""
        return self.forward(pixels) if self.forward is not None else self.module(pixels)

    def scores(self, pixels: torch.Tensor) -> torch.Tensor:
        """Class scores [N,C,h,w] for normalised images (one forward pass)."""
        if self.score_forward is not None:
            return self.score_forward(pixels)
        return self.head(self.run(pixels))

    def panoptic(self, pixels: torch.Tensor, size: tuple[int, int], thing_ids: Collection[int]):
        """One image's panoptic segmentation (ids [H,W], segments_info) from normalised pixels [1,3,H,W]."""
        if self.panoptic_head is None:
            raise SegmergeError(f"{self.source or self.name}: has no panoptic output")
        return self.panoptic_head(self.run(pixels), 0, size, thing_ids, None)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.module.parameters())

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [N,H,W,3] (or float 0-255) -> normalised float [N,3,H,W]."""
        x = images.permute(0, 3, 1, 2).float() / 255.0
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def probabilities(self, scores: torch.Tensor) -> torch.Tensor:
        if self.scores_are_logits:
            return scores.float().softmax(dim=1)
        return scores.float() / scores.float().sum(dim=1, keepdim=True).clamp_min(1e-12)

    def to(self, device: str | torch.device) -> Segmenter:
        self.module.to(device)
        return self


def load_segmenter(
    spec: str,
    factory: str | None = None,
    name: str | None = None,
    device: str = "cpu",
    verify: bool = True,
    network: str | None = None,
) -> Segmenter:
    """Resolve a model given on the command line.

    ``spec`` is a checkpoint path. With ``factory`` (``FILE.py:function`` or
    ``module:function``) the factory builds the network from that path and, with ``verify``,
    segmerge checks that the checkpoint's weights arrived in it; otherwise a Hugging Face
    folder is loaded with transformers, a plugin's loader recognises the file, or a built-in
    network (:mod:`segmerge.segmenters.networks`: SegFormer, DAFormer, HRDA) is read from it.
    ``network``: which network of a UDA training file (student by default, teacher, imagenet,
    a prefix), for the built-in networks and for checking a factory's.
    """
    label = name or Path(spec).name
    if factory is not None:
        from segmerge.segmenters.factory import from_factory

        segmenter = from_factory(factory, spec, label, verify, network)
    else:
        path = Path(spec)
        if path.is_dir() and (path / "config.json").is_file():
            from segmerge.segmenters.huggingface import from_hf_folder

            segmenter = from_hf_folder(path, label)
        else:
            segmenter = from_plugins(path, label, network)
    segmenter.module.eval()
    return segmenter.to(device)


_LOADERS: list = []


def register_loader(loader) -> None:
    """Add ``loader(path, label) -> Segmenter | None`` to the ones :func:`load_segmenter` tries
    (in process; other packages use the ``segmerge.segmenters`` entry point, :mod:`segmerge.plugins`)."""
    if loader not in _LOADERS:
        _LOADERS.append(loader)


def from_plugins(path: Path, label: str, network: str | None = None) -> Segmenter:
    """The first registered loader that recognises ``path``, or an error that says what to pass instead."""
    from segmerge.plugins import SEGMENTERS, plugins

    if not path.exists():
        raise SegmergeError(f"{path}: no such file or folder")
    from segmerge.segmenters.networks import from_builtin

    if network is not None:  # a network of a UDA training file: the built-in networks read those
        segmenter = from_builtin(path, label, network)
        if segmenter is None:
            raise SegmergeError(f"{path}: not a checkpoint segmerge builds a network from; --network needs one")
        return segmenter
    for loader in (*_LOADERS, *plugins(SEGMENTERS), from_builtin):
        segmenter = loader(path, label)
        if segmenter is not None:
            return segmenter
    raise SegmergeError(
        f"{path}: segmerge cannot tell which network this checkpoint belongs to; pass a Hugging Face "
        "folder (config.json + weights) or --model FILE.py:function that builds the network from it"
    )


def check_classes(segmenter: Segmenter, num_classes: int) -> None:
    if segmenter.num_classes != num_classes:
        raise SegmergeError(
            f"{segmenter.source or segmenter.name}: predicts {segmenter.num_classes} classes but the protocol "
            f"has {num_classes}; pass the matching --num-classes / dataset, or a model trained for it"
        )

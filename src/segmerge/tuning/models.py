"""The models being merged, opened once for a tuning run: their tensors, their networks, their ensemble."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from segmerge.checkpoints import open_checkpoint
from segmerge.evaluation.prediction import InferenceConfig, class_scores, predict
from segmerge.segmenters import Segmenter, load_segmenter
from segmerge.tuning.network import BoundNetwork


@dataclass
class TuningModels:
    """``paths``: the checkpoints; ``states``: their tensors (checkpoint names, module order);
    ``segmenters``: their networks, loaded with ``factory`` (or by segmerge) on ``config.device``;
    ``config``: how they run (device, mixed precision, images per forward pass)."""

    paths: list[Path]
    states: list[dict[str, torch.Tensor]]
    segmenters: list[Segmenter]
    config: InferenceConfig
    _bound: dict[int, BoundNetwork] = field(default_factory=dict)

    @classmethod
    def open(
        cls, models: Sequence[str | Path], factory: str | None = None, config: InferenceConfig | None = None
    ) -> TuningModels:
        config = config or InferenceConfig(batch_size=8)
        paths = [Path(m) for m in models]
        states = [open_checkpoint(p).state_dict() for p in paths]
        segmenters = [
            load_segmenter(str(p), factory, name=f"model{i}", device=config.device) for i, p in enumerate(paths)
        ]
        for s in segmenters:
            for p in s.module.parameters():
                p.requires_grad_(False)
        return cls(paths, states, segmenters, config)

    def __len__(self) -> int:
        return len(self.paths)

    def bound(self, index: int) -> BoundNetwork:
        """Model ``index``'s network, addressable by its checkpoint's key names."""
        if index not in self._bound:
            self._bound[index] = BoundNetwork.bind(self.segmenters[index], self.states[index])
        return self._bound[index]

    def output_size(self, images: torch.Tensor, model: int = 0) -> tuple[int, int]:
        """The size of model ``model``'s class scores for ``images`` (tuning scores at that size)."""
        with torch.no_grad():
            return tuple(class_scores(self.segmenters[model], images[:1], self.config)[0].shape[-2:])

    def ensemble(self, images: torch.Tensor, size=None) -> torch.Tensor:
        """The output ensemble's probabilities [N,C,h,w] on the CPU: the mean of the models' softmax,
        each model's scores resized to ``size`` (default: the first model's output size)."""
        size = size or self.output_size(images)
        return torch.cat([batch.ensemble() for batch in predict(self.segmenters, images, self.config, size)])

"""What the merge reads from: an ordered set of named tensors, fetched one at a time.

The merge maths only sees this protocol; reading files is the job of
:mod:`segmerge.checkpoints`, which implements it for each format.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass(frozen=True)
class TensorMeta:
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def is_float(self) -> bool:
        return self.dtype.is_floating_point

    @classmethod
    def of(cls, tensor: torch.Tensor) -> TensorMeta:
        return cls(tuple(tensor.shape), tensor.dtype)


class TensorSource(Protocol):
    label: str

    def metas(self) -> Mapping[str, TensorMeta]:
        """Every tensor's shape and dtype, in the checkpoint's order, without reading data."""

    def get(self, key: str) -> torch.Tensor:
        """One tensor, read now; the caller owns it."""


class StateDictSource:
    """A state dict already in memory, seen as a source."""

    def __init__(self, state_dict: Mapping[str, torch.Tensor], label: str = "<state_dict>"):
        self.label = label
        self._tensors = {k: v for k, v in state_dict.items() if isinstance(v, torch.Tensor)}

    def metas(self) -> dict[str, TensorMeta]:
        return {k: TensorMeta.of(v) for k, v in self._tensors.items()}

    def get(self, key: str) -> torch.Tensor:
        return self._tensors[key]

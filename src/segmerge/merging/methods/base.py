"""The interface every merge method implements, and the registry that finds them by name.

A method answers two questions, both without touching files:

* ``model_weights(depth, ...)``: each model's weight for a layer at normalised depth t
  (what ``segmerge plan`` prints);
* ``combine(tensors, weights, base)``: the merged tensor of one key.

Adding a method is one small module in this package that subclasses :class:`MergeMethod`
and decorates itself with :func:`register`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict

from segmerge.errors import RecipeError


class MethodParams(BaseModel):
    """Parameters of a method; unknown fields are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class MergeMethod(ABC):
    name: ClassVar[str]
    Params: ClassVar[type[MethodParams]] = MethodParams
    #: Task-vector methods combine differences from a shared base checkpoint.
    needs_base: ClassVar[bool] = False
    #: Whether the weights of the models that hold a key are rescaled to sum to 1.
    normalise_weights: ClassVar[bool] = True
    #: Whether a model's ``weight`` may be given for the anchor.
    anchor_takes_weight: ClassVar[bool] = True

    def __init__(self, params: MethodParams | None = None, seed: int = 0):
        self.params = params if params is not None else self.Params()
        self.seed = seed

    @abstractmethod
    def model_weights(self, depth: float, anchor: int, model_weights: Sequence[float | None]) -> list[float]:
        """Every model's weight for a layer at normalised depth ``depth``."""

    def combine(
        self,
        tensors: Sequence[torch.Tensor],
        weights: Sequence[float],
        base: torch.Tensor | None = None,
        key: str = "",
    ) -> torch.Tensor:
        """The merged value of one key: by default the weighted sum of the tensors."""
        return weighted_sum(tensors, weights)


def accumulation_dtype(tensors: Sequence[torch.Tensor]) -> torch.dtype:
    """float64 when any input is float64, float32 otherwise (docs/method.md rule 6)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def weighted_sum(tensors: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    dtype = accumulation_dtype(tensors)
    out = first_term(tensors[0], weights[0], dtype)
    for tensor, weight in zip(tensors[1:], weights[1:], strict=True):
        out.add_(tensor.to(dtype), alpha=weight)
    return out


def first_term(tensor: torch.Tensor, weight: float, dtype: torch.dtype) -> torch.Tensor:
    """``weight * tensor`` as a new ``dtype`` tensor: a weighted sum's accumulator, made in one
    pass over memory (a zero-filled accumulator plus an add is two). ``tensor`` is not modified."""
    converted = tensor.to(dtype)
    return converted.mul_(weight) if converted is not tensor else converted.mul(weight)


_REGISTRY: dict[str, type[MergeMethod]] = {}


def register(cls: type[MergeMethod]) -> type[MergeMethod]:
    _REGISTRY[cls.name] = cls
    return cls


def method_names() -> list[str]:
    return sorted(_REGISTRY)


def method_class(name: str) -> type[MergeMethod]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise RecipeError(f"unknown merge method {name!r}; choose one of: {', '.join(method_names())}") from None


def build_method(name: str, parameters: dict[str, Any] | None = None, seed: int = 0) -> MergeMethod:
    cls = method_class(name)
    return cls(cls.Params(**(parameters or {})), seed=seed)

"""The task-vector family: merge differences from a shared base checkpoint.

* task arithmetic (Ilharco et al., ICLR 2023): base + lambda * sum_i w_i * tau_i
* TIES (Yadav et al., NeurIPS 2023): trim each tau_i to its top-``density`` magnitudes,
  elect a sign per parameter, average the entries that agree with it, scale by lambda
* DARE (Yu et al., ICML 2024): drop each entry of tau_i with probability ``drop_rate``,
  rescale the rest by 1 / (1 - drop_rate), then sum (or TIES-combine) as above

A model's ``weight`` scales its task vector (default 1). Drops are seeded per key and
model, so a merge is reproducible.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field

from segmerge.merging.methods.base import MergeMethod, MethodParams, accumulation_dtype, register


class TaskVectorMethod(MergeMethod):
    needs_base = True
    normalise_weights = False

    def model_weights(self, depth, anchor, model_weights: Sequence[float | None]) -> list[float]:
        return [1.0 if w is None else w for w in model_weights]

    def task_vectors(self, tensors, base) -> tuple[list[torch.Tensor], torch.Tensor]:
        dtype = accumulation_dtype([*tensors, base])
        base = base.to(dtype)
        return [t.to(dtype) - base for t in tensors], base


class TaskArithmeticParams(MethodParams):
    scaling: float = Field(0.3, description="lambda, the scale of the summed task vectors")


@register
class TaskArithmetic(TaskVectorMethod):
    name = "task-arithmetic"
    Params = TaskArithmeticParams

    def combine(self, tensors, weights, base=None, key=""):
        taus, base = self.task_vectors(tensors, base)
        return base + self.params.scaling * _weighted(taus, weights)


class TiesParams(MethodParams):
    density: float = Field(0.2, gt=0.0, le=1.0, description="fraction of each task vector kept")
    scaling: float = Field(1.0, description="lambda, the scale of the merged task vector")


@register
class Ties(TaskVectorMethod):
    name = "ties"
    Params = TiesParams

    def combine(self, tensors, weights, base=None, key=""):
        taus, base = self.task_vectors(tensors, base)
        trimmed = [trim_to_top(tau, self.params.density) for tau in taus]
        return base + self.params.scaling * sign_consensus_mean(trimmed, weights)


class DareParams(MethodParams):
    drop_rate: float = Field(0.9, ge=0.0, lt=1.0, description="probability of dropping an entry")
    scaling: float = Field(0.3, description="lambda, the scale of the merged task vector")
    consensus: Literal["sum", "ties"] = Field("sum", description="combine by sum or TIES signs")


@register
class Dare(TaskVectorMethod):
    name = "dare"
    Params = DareParams

    def combine(self, tensors, weights, base=None, key=""):
        taus, base = self.task_vectors(tensors, base)
        p = self.params.drop_rate
        kept = []
        for i, tau in enumerate(taus):
            generator = torch.Generator().manual_seed(_seed_for(self.seed, key, i))
            mask = torch.rand(tau.shape, generator=generator) >= p
            kept.append(tau * mask / (1.0 - p))
        if self.params.consensus == "ties":
            merged = sign_consensus_mean(kept, weights)
        else:
            merged = _weighted(kept, weights)
        return base + self.params.scaling * merged


def trim_to_top(tau: torch.Tensor, density: float) -> torch.Tensor:
    """Zero all but the ``density`` fraction of entries with the largest magnitude."""
    flat = tau.flatten()
    keep = max(1, int(round(density * flat.numel()))) if flat.numel() else 0
    if keep >= flat.numel():
        return tau.clone()
    out = torch.zeros_like(flat)
    idx = flat.abs().topk(keep, sorted=False).indices
    out[idx] = flat[idx]
    return out.view_as(tau)


def sign_consensus_mean(taus: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """TIES' elect + disjoint merge: per entry, the weighted mean of the values whose sign
    agrees with the sign of their weighted sum (entries that are zero do not vote)."""
    weighted = [tau * w for tau, w in zip(taus, weights, strict=True)]
    elected = torch.sign(torch.stack(weighted).sum(0))
    num = torch.zeros_like(taus[0])
    den = torch.zeros_like(taus[0])
    for tau, w in zip(taus, weights, strict=True):
        agrees = (torch.sign(tau) == elected) & (tau != 0)
        num += torch.where(agrees, tau * w, 0.0)
        den += torch.where(agrees, torch.full_like(tau, abs(w)), 0.0)
    return torch.where(den > 0, num / den.clamp_min(1e-12), 0.0)


def _weighted(taus: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    out = torch.zeros_like(taus[0])
    for tau, w in zip(taus, weights, strict=True):
        out.add_(tau, alpha=w)
    return out


def _seed_for(seed: int, key: str, model: int) -> int:
    return zlib.crc32(f"{seed}:{model}:{key}".encode())

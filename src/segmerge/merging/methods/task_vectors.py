"""The task-vector family: merge differences from a shared base checkpoint.

* task arithmetic (Ilharco et al., ICLR 2023): base + lambda * sum_i w_i * tau_i
* TIES (Yadav et al., NeurIPS 2023): trim each tau_i to its top-``density`` magnitudes,
  elect a sign per parameter, average the entries that agree with it, scale by lambda
* DARE (Yu et al., ICML 2024): drop each entry of tau_i with probability ``drop_rate``,
  rescale the rest by 1 / (1 - drop_rate), then sum (or TIES-combine) as above

TIES and DARE follow mergekit 0.1.x's definitions (``ties``, ``dare_linear``, ``dare_ties`` in
``mergekit/merge_methods/generalized_task_arithmetic.py`` and ``mergekit/sparsify.py``), the
reference users compare against, to float tolerance on the same inputs (and, for DARE, the
same drop masks):

* trimming keeps ``int(density * numel)`` entries (rounded down) of largest magnitude, those
  tied at the threshold chosen by ``torch.argsort(descending=True)`` as mergekit does;
* the sign election is on the weighted task vectors: ``sum`` (the sign of their sum, zero
  counting as +) or ``count`` (the sign most of them have, a tie counting as +); an entry
  takes part where its weighted value has the elected sign (zero never does);
* ``normalize`` divides the agreeing weighted sum by the sum of the agreeing weights (1 where
  none agree): on for TIES, off for DARE, as mergekit's defaults.

Deliberate differences, documented in docs/method.md: a tensor where ``density * numel < 1``
keeps its one largest entry (mergekit stops with an assertion there); the arithmetic runs in
float32 (float64 if an input is) where mergekit uses the base's dtype; ``scaling`` (lambda)
multiplies the merged task vector (mergekit: 1); DARE's masks come from a generator seeded per
key and model, so a merge is reproducible (mergekit: the global RNG).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field

from segmerge.merging.methods.base import MergeMethod, MethodParams, accumulation_dtype, register

Election = Literal["sum", "count"]


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
    election: Election = Field("sum", description="sign election: sum (TIES) or count (majority of signs)")
    normalize: bool = Field(True, description="divide by the sum of the agreeing weights (mergekit's default)")


@register
class Ties(TaskVectorMethod):
    name = "ties"
    Params = TiesParams

    def combine(self, tensors, weights, base=None, key=""):
        taus, base = self.task_vectors(tensors, base)
        trimmed = [trim_to_top(tau, self.params.density) for tau in taus]
        merged = sign_consensus(trimmed, weights, self.params.election, self.params.normalize)
        return base + self.params.scaling * merged


class DareParams(MethodParams):
    drop_rate: float = Field(0.9, ge=0.0, lt=1.0, description="probability of dropping an entry")
    scaling: float = Field(0.3, description="lambda, the scale of the merged task vector")
    consensus: Literal["sum", "ties"] = Field(
        "sum", description="combine by sum (mergekit dare_linear) or TIES signs (dare_ties)"
    )
    election: Election = Field("sum", description="consensus ties: sign election, sum or count")
    normalize: bool = Field(False, description="divide by the sum of the (agreeing) weights (mergekit: off)")


@register
class Dare(TaskVectorMethod):
    name = "dare"
    Params = DareParams

    def combine(self, tensors, weights, base=None, key=""):
        taus, base = self.task_vectors(tensors, base)
        masks = [
            dare_mask(tau.shape, self.params.drop_rate, _seed_for(self.seed, key, i)) for i, tau in enumerate(taus)
        ]
        merged = dare_merge(taus, masks, weights, self.params.drop_rate, self.params)
        return base + self.params.scaling * merged


def dare_mask(shape: torch.Size, drop_rate: float, seed: int) -> torch.Tensor:
    """Which entries DARE keeps: each independently with probability 1 - ``drop_rate``."""
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) >= drop_rate


def dare_merge(
    taus: Sequence[torch.Tensor], masks: Sequence[torch.Tensor], weights: Sequence[float], drop_rate: float, params
) -> torch.Tensor:
    """DARE on given masks: the kept entries rescaled by 1 / (1 - ``drop_rate``), then summed with
    the weights (``consensus: sum``) or combined by TIES' sign election (``consensus: ties``)."""
    kept = [tau * mask / (1.0 - drop_rate) for tau, mask in zip(taus, masks, strict=True)]
    if params.consensus == "ties":
        return sign_consensus(kept, weights, params.election, params.normalize)
    merged = _weighted(kept, weights)
    if params.normalize:
        total = float(sum(weights))
        merged = merged / (total if abs(total) >= 1e-8 else 1.0)
    return merged


def trim_to_top(tau: torch.Tensor, density: float) -> torch.Tensor:
    """Zero all but the ``int(density * numel)`` entries of largest magnitude (at least one), as
    mergekit's magnitude sparsification does; among entries tied at the threshold, those
    ``torch.argsort(descending=True)`` puts first are kept, as there."""
    if density >= 1 or tau.numel() == 0:
        return tau.clone()
    flat = tau.flatten()
    keep = max(1, int(density * flat.numel()))
    order = torch.argsort(flat.abs().float(), descending=True)[:keep]
    out = torch.zeros_like(flat)
    out[order] = flat[order]
    return out.view_as(tau)


def sign_consensus(
    taus: Sequence[torch.Tensor], weights: Sequence[float], election: Election = "sum", normalize: bool = True
) -> torch.Tensor:
    """TIES' elect + disjoint merge, as mergekit computes it: on the weighted task vectors
    ``w_i * tau_i``, elect a sign per entry (``sum``: of their sum; ``count``: of their signs'
    sum; zero elects +), keep each weighted value whose sign is the elected one, sum them, and
    with ``normalize`` divide by the sum of the kept entries' weights (left as is where none is kept)."""
    weighted = torch.stack([tau * w for tau, w in zip(taus, weights, strict=True)])
    signs = weighted.sign()
    votes = weighted.sum(0) if election == "sum" else signs.sum(0)
    elected = torch.where(votes >= 0, 1.0, -1.0).to(weighted.dtype)
    agrees = signs == elected
    merged = torch.where(agrees, weighted, 0.0).sum(0)
    if not normalize:
        return merged
    w = torch.tensor(list(weights), dtype=weighted.dtype).view(-1, *[1] * (weighted.dim() - 1))
    divisor = torch.where(agrees, w, 0.0).sum(0)
    return merged / torch.where(divisor == 0, 1.0, divisor)


def _weighted(taus: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    out = torch.zeros_like(taus[0])
    for tau, w in zip(taus, weights, strict=True):
        out.add_(tau, alpha=w)
    return out


def _seed_for(seed: int, key: str, model: int) -> int:
    return zlib.crc32(f"{seed}:{model}:{key}".encode())

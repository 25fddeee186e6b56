"""Weighted average of all models; with no weights, the uniform soup."""

from __future__ import annotations

from collections.abc import Sequence

from segmerge.merging.methods.base import MergeMethod, MethodParams, register


@register
class Linear(MergeMethod):
    name = "linear"
    Params = MethodParams

    def model_weights(self, depth, anchor, model_weights: Sequence[float | None]) -> list[float]:
        weights = [1.0 if w is None else w for w in model_weights]
        total = sum(weights)
        return [w / total for w in weights]

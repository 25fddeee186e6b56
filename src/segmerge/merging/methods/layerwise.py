"""The paper's layer-wise merge: unify early layers, keep the anchor's late ones (docs/method.md)."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from segmerge.merging.methods.base import MergeMethod, MethodParams, register
from segmerge.merging.schedule import (
    DEFAULT_END_WEIGHT,
    DEFAULT_RAMP,
    DEFAULT_RAMP_START,
    RampShape,
    layer_weights,
)


class LayerwiseParams(MethodParams):
    ramp_start: float = Field(DEFAULT_RAMP_START, ge=0.0, le=1.0, description="t0: depth where the ramp starts")
    end_weight: float = Field(DEFAULT_END_WEIGHT, ge=0.0, le=1.0, description="anchor weight at the last layer")
    ramp: RampShape = Field(DEFAULT_RAMP, description="ramp shape: linear, cosine or step")


@register
class Layerwise(MergeMethod):
    name = "layerwise"
    Params = LayerwiseParams
    anchor_takes_weight = False

    def model_weights(self, depth, anchor, model_weights: Sequence[float | None]) -> list[float]:
        p: LayerwiseParams = self.params
        shares = [1.0 if w is None else w for w in model_weights]
        return layer_weights(depth, len(model_weights), anchor, shares, p.ramp_start, p.end_weight, p.ramp)

"""The anchor's weight as a function of normalised depth (docs/method.md, rule 4).

Early layers are unified (every model weighs 1/M); from the ramp start on, the anchor's
weight rises along the ramp towards ``end_weight`` at the last layer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

RampShape = Literal["linear", "cosine", "step"]

# The library's defaults, in this one place (the evidence for each: docs/method.md).
DEFAULT_RAMP_START = 0.5
DEFAULT_END_WEIGHT = 0.75
DEFAULT_RAMP: RampShape = "linear"

RAMPS: dict[str, Callable[[float], float]] = {
    "linear": lambda u: u,
    "cosine": lambda u: (1.0 - math.cos(math.pi * u)) / 2.0,
    "step": lambda u: 1.0,
}


def normalised_depth(index: int, num_layers: int) -> float:
    """Depth t of layer ``index`` among ``num_layers``: 0 for the first, 1 for the last."""
    if num_layers <= 1:
        return 0.0
    return index / (num_layers - 1)


def anchor_weight(
    depth: float,
    num_models: int,
    ramp_start: float = DEFAULT_RAMP_START,
    end_weight: float = DEFAULT_END_WEIGHT,
    ramp: RampShape = DEFAULT_RAMP,
) -> float:
    """H_a(t): the anchor's share of a layer at normalised depth ``depth``."""
    uniform = 1.0 / num_models
    if depth <= ramp_start or ramp_start >= 1.0:
        return uniform
    u = (depth - ramp_start) / (1.0 - ramp_start)
    return uniform + (end_weight - uniform) * RAMPS[ramp](u)


def layer_weights(
    depth: float,
    num_models: int,
    anchor: int,
    donor_shares: list[float] | None = None,
    ramp_start: float = DEFAULT_RAMP_START,
    end_weight: float = DEFAULT_END_WEIGHT,
    ramp: RampShape = DEFAULT_RAMP,
) -> list[float]:
    """Weights of all models at one depth: the anchor's H_a(t), the rest split among donors.

    ``donor_shares`` (one entry per model, the anchor's ignored) splits 1 - H_a(t) in
    proportion; by default the donors share it equally.
    """
    h_anchor = anchor_weight(depth, num_models, ramp_start, end_weight, ramp)
    if donor_shares is None:
        donor_shares = [1.0] * num_models
    donors = [i for i in range(num_models) if i != anchor]
    total = sum(donor_shares[i] for i in donors)
    weights = [0.0] * num_models
    weights[anchor] = h_anchor
    for i in donors:
        weights[i] = (1.0 - h_anchor) * donor_shares[i] / total
    return weights

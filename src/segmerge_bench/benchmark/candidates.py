"""The merges every claim is scored with: the named recipes and the sweep around them.

A :class:`SweepRecipe` is a set of :func:`segmerge.api.merge` options (``method``, ``ramp_start``,
``end_weight``, ``ramp``, ``weights``) plus which of the two models is the anchor. The
headline is the layer-wise merge with the library's defaults - chosen without target
labels; the sweep's best is chosen *with* target labels and reported apart, as an oracle.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from segmerge.merging.methods.layerwise import LayerwiseParams
from segmerge_bench.benchmark.settings import Sweep

DEFAULT = "layer-wise (default)"
SOUP = "uniform soup"
SWEEP = "sweep"


@dataclass(frozen=True)
class SweepRecipe:
    """One merge a claim is scored with: a named recipe or a point of the sweep (``group``).

    Not :class:`segmerge.tuning.Candidate`, the library's label-free search entry: this is the
    benchmark's, scored with target labels."""

    name: str
    group: str  # "named" or "sweep"
    anchor: int = 0
    options: dict = field(default_factory=dict)

    @property
    def ramp_start(self) -> float | None:
        return self.options.get("ramp_start")

    @property
    def end_weight(self) -> float | None:
        return self.options.get("end_weight")


def default_parameters() -> dict:
    """The layer-wise method's defaults, as the library sets them (see docs/method.md)."""
    return LayerwiseParams().model_dump()


def named_candidates() -> list[SweepRecipe]:
    return [
        SweepRecipe(SOUP, "named", 0, {"method": "linear"}),
        SweepRecipe(DEFAULT, "named", 0, {"method": "layerwise"}),
    ]


def sweep_candidates(sweep: Sweep, anchors: tuple[int, ...] = (0, 1)) -> list[SweepRecipe]:
    """The sweep's recipes; those anchored on the second model only when it is in ``anchors``."""
    defaults = default_parameters()

    def layerwise(t0: float, h: float, ramp: str, anchor: int) -> SweepRecipe:
        options = {"method": "layerwise", "ramp_start": t0, "end_weight": h, "ramp": ramp}
        return SweepRecipe(f"t0={t0:g} h_end={h:g} {ramp}, anchor {'AB'[anchor]}", SWEEP, anchor, options)

    t0, h = defaults["ramp_start"], defaults["end_weight"]
    out = [layerwise(start, end, "linear", 0) for start in sweep.ramp_starts for end in sweep.end_weights]
    out += [layerwise(t0, h, ramp, 0) for ramp in sweep.ramps]
    if 1 in anchors:
        out += [layerwise(t0, end, "linear", 1) for end in sweep.other_anchor_end_weights]
    for w in sweep.soup_weights:
        out.append(SweepRecipe(f"soup weights {w:g}/{1 - w:g}", SWEEP, 0, {"method": "linear", "weights": [w, 1 - w]}))
    return out

"""The candidate recipes a search scores: anchors x donor subsets x schedules and soups.

A :class:`Candidate` is a recipe in the making: which of the models it merges (a subset
that holds the anchor), and the options of :func:`segmerge.api.make_recipe` for them. The
grid lists, for every anchor and subset, the simplest recipes first - the anchor alone,
the uniform soup, soups leaning towards or away from the anchor - and then the layer-wise
schedules over ramp start, end weight and ramp shape (docs/method.md rule 4).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segmerge.errors import SegmergeError

RAMP_STARTS = (0.0, 0.25, 0.5, 0.75)
END_WEIGHTS = (0.5, 0.75, 1.0)
RAMPS = ("linear", "cosine")
#: Anchor shares of the non-uniform soups.
SOUP_ANCHOR_WEIGHTS = (0.25, 0.75)

Rename = Mapping[int, Sequence[tuple[str, str]]]


@dataclass(frozen=True)
class Candidate:
    """``models``: positions in the full model list (sorted, the anchor among them); ``anchor``: the
    anchor's position in that full list; ``options``: make_recipe options other than models/anchor/rename."""

    name: str
    models: tuple[int, ...]
    anchor: int
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def recipe_options(self, rename: Rename | None = None) -> dict[str, Any]:
        """make_recipe options for the subset ``models`` (rename and weights re-indexed to it).

        ``rename`` holds rules for any model; a model's rules apply when it is a donor, never to
        this candidate's anchor, so one mapping serves every anchor of a search."""
        position = {m: i for i, m in enumerate(self.models)}
        options = {**self.options, "anchor": position[self.anchor]}
        renames = {
            position[int(i)]: list(rules)
            for i, rules in (rename or {}).items()
            if int(i) in position and int(i) != self.anchor  # an anchor keeps its own names
        }
        if renames:
            options["rename"] = renames
        return options

    def recipe(self, paths: Sequence[str | Path], rename: Rename | None = None):
        from segmerge.api import make_recipe

        return make_recipe([str(paths[i]) for i in self.models], **self.recipe_options(rename))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "models": list(self.models), "anchor": self.anchor, **self.options}


def candidate_grid(
    num_models: int,
    anchors: Sequence[int] = (0,),
    ramp_starts: Sequence[float] = RAMP_STARTS,
    end_weights: Sequence[float] = END_WEIGHTS,
    ramps: Sequence[str] = RAMPS,
    soup_anchor_weights: Sequence[float] = SOUP_ANCHOR_WEIGHTS,
    subsets: bool = True,
    anchor_alone: bool = True,
) -> list[Candidate]:
    """Every candidate for ``anchors``; with ``subsets`` and more than two models, every donor subset too.

    Soups do not depend on the anchor's schedule, so a soup already listed under an earlier
    anchor is not listed again (the anchors of one search share an architecture).
    """
    if num_models < 2:
        raise SegmergeError(f"tuning merges at least two models; got {num_models}")
    bad = [a for a in anchors if not 0 <= a < num_models]
    if bad:
        raise SegmergeError(f"anchor {bad[0]} is not a model position (0..{num_models - 1})")
    out: list[Candidate] = []
    seen: set[tuple] = set()

    def add(candidate: Candidate, identity: tuple) -> None:
        if identity not in seen:
            seen.add(identity)
            out.append(candidate)

    for anchor in anchors:
        donors = [i for i in range(num_models) if i != anchor]
        sizes = range(1, len(donors) + 1) if subsets and num_models > 2 else [len(donors)]
        if anchor_alone:
            alone = tuple(sorted((anchor, donors[0])))
            weights = [1.0 if i == anchor else 0.0 for i in alone]
            add(
                Candidate(f"model {anchor} alone", alone, anchor, {"method": "linear", "weights": weights}),
                ("alone", anchor),
            )
        for size in sizes:
            for chosen in itertools.combinations(donors, size):
                models = tuple(sorted((anchor, *chosen)))
                where = "" if len(models) == num_models else f" of models {','.join(map(str, models))}"
                uniform = 1.0 / len(models)
                add(Candidate(f"uniform soup{where}", models, anchor, {"method": "linear"}), ("soup", models))
                for h in soup_anchor_weights:
                    if abs(h - uniform) < 1e-9:
                        continue
                    weights = [h if i == anchor else (1.0 - h) / (len(models) - 1) for i in models]
                    name = f"soup, model {anchor} at {h:g}{where}"
                    add(
                        Candidate(name, models, anchor, {"method": "linear", "weights": weights}),
                        ("soup", models, anchor, h),
                    )
                for t0, h_end, ramp in itertools.product(ramp_starts, end_weights, ramps):
                    if t0 >= 1.0 or abs(h_end - uniform) < 1e-9:
                        continue  # the uniform soup
                    name = f"layerwise anchor {anchor} t0={t0:g} end={h_end:g} {ramp}{where}"
                    options = {"method": "layerwise", "ramp_start": t0, "end_weight": h_end, "ramp": ramp}
                    add(Candidate(name, models, anchor, options), ("layerwise", models, anchor, t0, h_end, ramp))
    return out

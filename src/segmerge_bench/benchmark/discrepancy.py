"""Where two merged models differ: the relative distance between their weights, layer by layer.

The paper analyses which parameters of the models it merges are "discrepant" to explain
why blending early layers and keeping the anchor's late ones works. Here the same question
is measured on every claim's pair, through the merge plan segmerge builds for it (the
layers, their depth in forward order, the donor's tensors renamed onto the anchor's): per
merged layer, ``||theta_1 - theta_2|| / ||theta_1||`` over all its tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from segmerge_bench.benchmark.claims import Claim


def layer_distances(claim: Claim, models: Sequence[Path]) -> list[tuple[float, float]]:
    """(depth, relative distance) per merged layer of the claim's default-anchor merge, input to output."""
    from segmerge import api
    from segmerge.merging.plan import Action

    anchor = claim.anchors[0]
    rename = claim.rename_for(anchor)
    opened = api.open_merge([str(m) for m in models], anchor=anchor, **({"rename": rename} if rename else {}))
    sums: dict[str, list[float]] = {}
    for key in opened.plan.keys:
        if key.action != Action.MERGED or len(key.sources) < 2:
            continue
        (a, a_key), (b, b_key) = key.sources[:2]
        first = opened.sources[a].get(a_key).double()
        second = opened.sources[b].get(b_key).double()
        acc = sums.setdefault(key.layer, [0.0, 0.0])
        acc[0] += float((first - second).pow(2).sum())
        acc[1] += float(first.pow(2).sum())
    depths = {layer.name: layer.depth for layer in opened.plan.layers}
    return sorted(
        (depths[layer], (difference / norm) ** 0.5 if norm > 0 else 0.0) for layer, (difference, norm) in sums.items()
    )

"""Precondition check: do the layers to be merged come from a shared initialisation?

Models fine-tuned from the same pre-trained weights stay close in parameter space: the
cosine similarity of a donor's weight tensor with the anchor's is near 1. Independently
initialised layers have similarity near 0, and averaging them destroys both (on the
prototype, a re-initialised decoder made the uniform soup collapse to ~0 mIoU).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from segmerge.merging.plan import Action, MergePlan
from segmerge.merging.sources import TensorSource

UNRELATED_BELOW = 0.2


@dataclass
class LayerSimilarity:
    layer: str
    model: int
    cosine: float


#: Values per tensor the check compares (an even stride through the tensor): enough for a
#: cosine, and it keeps the check cheaper than the merge itself.
SAMPLE = 4096


def layer_similarities(
    plan: MergePlan, sources: Sequence[TensorSource], sample: int | None = SAMPLE
) -> list[LayerSimilarity]:
    """Cosine similarity of each donor's tensors with the anchor's, per merged layer.

    Every tensor of a layer counts, its 1-D ones (biases, norms) included, so a layer made
    of norms alone is checked too. 1-D tensors are compared after removing their mean: they
    start at constants (ones, zeros), which would make any two look alike. Each tensor is
    compared on ``sample`` of its values (all of them with ``None``).
    """
    dots: dict[tuple[str, int], list[float]] = {}
    for key_plan in plan.keys:
        if key_plan.action != Action.MERGED or len(key_plan.sources) < 2:
            continue
        (a, a_key), *donors = key_plan.sources
        anchor_t = _sampled(sources[a], a_key, sample)
        for i, key in donors:
            donor_t = _sampled(sources[i], key, sample)
            acc = dots.setdefault((key_plan.layer, i), [0.0, 0.0, 0.0])
            acc[0] += float(anchor_t @ donor_t)
            acc[1] += float(anchor_t @ anchor_t)
            acc[2] += float(donor_t @ donor_t)
    out = []
    for (layer, i), (ab, aa, bb) in dots.items():
        cosine = ab / (aa**0.5 * bb**0.5) if aa > 0 and bb > 0 else 1.0
        out.append(LayerSimilarity(layer, i, cosine))
    return out


def _sampled(source: TensorSource, key: str, sample: int | None):
    """The values compared: the whole tensor, or its first ``sample`` values (a few rows of a
    weight matrix) where the source can read them alone, else ``sample`` at an even stride."""
    shape = source.metas()[key].shape
    peek = getattr(source, "peek", None)
    if sample is not None and peek is not None and math.prod(shape) > sample:
        flat = peek(key, sample)[:sample]
    else:
        flat = source.get(key).detach().reshape(-1)
        if sample is not None and flat.numel() > sample:
            flat = flat[:: flat.numel() // sample][:sample]
    flat = flat.double()
    if len(shape) <= 1:
        flat = flat - flat.mean()
    return flat


def unrelated_layer_warnings(
    similarities: Sequence[LayerSimilarity], labels: Sequence[str], threshold: float = UNRELATED_BELOW
) -> list[str]:
    low = [s for s in similarities if s.cosine < threshold]
    if not low:
        return []
    shown = ", ".join(f"{s.layer} ({labels[s.model]}: {s.cosine:.2f})" for s in low[:5])
    more = f" and {len(low) - 5} more" if len(low) > 5 else ""
    return [
        f"{len(low)} layers look unrelated to the anchor's (cosine < {threshold}): {shown}{more}. "
        "Weight merging needs a shared initialisation; pin these layers with --keep or check "
        "that the models start from the same pre-trained weights"
    ]

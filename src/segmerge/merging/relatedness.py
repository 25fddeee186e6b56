"""Precondition check: do the layers to be merged come from a shared initialisation?

Models fine-tuned from the same pre-trained weights stay close in parameter space: the
cosine similarity of a donor's weight tensor with the anchor's is near 1. Independently
initialised layers have similarity near 0, and averaging them destroys both (on the
prototype, a re-initialised decoder made the uniform soup collapse to ~0 mIoU).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from segmerge.merging.plan import Action, KeyPlan, MergePlan
from segmerge.merging.sources import TensorMeta, TensorSource

UNRELATED_BELOW = 0.2


@dataclass
class LayerSimilarity:
    layer: str
    model: int
    cosine: float


#: Values per tensor the check compares (its first ones): enough for a cosine, and cheap to
#: read alone from a file.
SAMPLE = 4096


class SimilarityTally:
    """Cosine similarity of each donor's tensors with the anchor's, per merged layer, summed
    tensor by tensor as they are read: ``layer_similarities`` reads them for it, a merge feeds it
    the tensors it reads anyway (``execute(..., tally=...)``), so checking costs no second read.

    Every tensor of a layer counts, its 1-D ones (biases, norms) included, so a layer made of
    norms alone is checked too. 1-D tensors are compared after removing their mean: they start
    at constants (ones, zeros), which would make any two look alike. Each tensor is compared on
    its first ``sample`` values (a few rows of a weight matrix; all of them with ``None``).

    Per key: ``add`` each model's tensor, the anchor's first, then ``close`` - which compares
    all donors at once (a few tensor operations per key rather than per donor: with ten inputs
    the per-donor form cost more than the merge's own arithmetic).
    """

    def __init__(self, sample: int | None = SAMPLE) -> None:
        self.sample = sample
        self._dots: dict[tuple[str, int], list[float]] = {}
        self._rows: list[torch.Tensor] = []
        self._models: list[int] = []

    def add(self, model: int, tensor: torch.Tensor) -> None:
        """One model's tensor of the open key (flattened peeks at it count as it)."""
        flat = tensor.detach().reshape(-1)
        self._rows.append((flat if self.sample is None else flat[: self.sample]).double())  # a copy
        self._models.append(model)

    def close(self, layer: str, ndim: int) -> None:
        """Compare the donors of the key just added (``ndim``: its tensors' dimensions) with the anchor."""
        rows, models = torch.stack(self._rows), self._models
        self._rows, self._models = [], []
        if ndim <= 1:
            rows = rows - rows.mean(dim=1, keepdim=True)
        anchor, donors = rows[0], rows[1:]
        cross = (donors @ anchor).tolist()
        own = float(anchor @ anchor)
        theirs = (donors * donors).sum(dim=1).tolist()
        for model, ab, bb in zip(models[1:], cross, theirs, strict=True):
            acc = self._dots.setdefault((layer, model), [0.0, 0.0, 0.0])
            acc[0] += ab
            acc[1] += own
            acc[2] += bb

    def similarities(self) -> list[LayerSimilarity]:
        out = []
        for (layer, i), (ab, aa, bb) in self._dots.items():
            cosine = ab / (aa**0.5 * bb**0.5) if aa > 0 and bb > 0 else 1.0
            out.append(LayerSimilarity(layer, i, cosine))
        return out


def checked(key_plan: KeyPlan) -> bool:
    """Whether the relatedness check compares this key: merged, from two models or more."""
    return key_plan.action == Action.MERGED and len(key_plan.sources) >= 2


def key_ndim(key_plan: KeyPlan, metas: Sequence[Mapping[str, TensorMeta]]) -> int:
    """The dimensions of the key's tensors (the anchor's; ``metas``: each source's), for ``close``."""
    model, key = key_plan.sources[0]
    return len(metas[model][key].shape)


def layer_similarities(
    plan: MergePlan, sources: Sequence[TensorSource], sample: int | None = SAMPLE
) -> list[LayerSimilarity]:
    """:class:`SimilarityTally` over every merged tensor, read for it (a peek of ``sample`` values
    where the source can read them alone)."""
    tally = SimilarityTally(sample)
    metas = [s.metas() for s in sources]
    for key_plan in plan.keys:
        if not checked(key_plan):
            continue
        for i, key in key_plan.sources:
            tally.add(i, _sampled(sources[i], key, tally.sample))
        tally.close(key_plan.layer, key_ndim(key_plan, metas))
    return tally.similarities()


def _sampled(source: TensorSource, key: str, sample: int | None) -> torch.Tensor:
    shape = source.metas()[key].shape
    peek = getattr(source, "peek", None)
    if sample is not None and peek is not None and math.prod(shape) > sample:
        return peek(key, sample)
    return source.get(key)


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

"""A model's network addressed by its checkpoint's key names.

A merge produces tensors under the anchor checkpoint's names; the network that runs them
may call its tensors otherwise (``transformers`` 5 renames SegFormer's encoder in memory,
DAFormer files store it under ``backbone.`` with the legacy names). :func:`checkpoint_names`
finds, for each tensor of the loaded network, the checkpoint key that holds it: first by
name (as is, or as ``transformers`` would write it), each guess checked against the
tensor's value; then by value alone. :class:`BoundNetwork` then loads or overrides tensors
given under checkpoint names, so merged state dicts and learned merges run on the network.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from segmerge.segmenters.base import Segmenter


def _disk_name_guesses(module: nn.Module) -> dict[str, list[str]]:
    """In-memory state-dict name -> names ``transformers`` would save it under (empty without transformers)."""
    try:
        from transformers import PreTrainedModel
        from transformers.core_model_loading import revert_weight_conversion
    except ImportError:  # transformers 4.x saves the in-memory names
        return {}
    guesses: dict[str, list[str]] = {}
    covered: list[str] = []
    for prefix, sub in module.named_modules():
        if not isinstance(sub, PreTrainedModel) or any(prefix.startswith(c) for c in covered):
            continue
        covered.append(prefix + "." if prefix else "")
        state = sub.state_dict()
        try:
            on_disk = revert_weight_conversion(sub, dict(state))
        except Exception:  # noqa: BLE001 - an unusual model: fall back to matching by value
            continue
        by_tensor = {id(t): name for name, t in on_disk.items()}
        head = prefix + "." if prefix else ""
        for name, tensor in state.items():
            disk = by_tensor.get(id(tensor))
            if disk is None:
                continue
            # A submodule saved on its own writes its base-model prefix; a parent (DAFormer's
            # ``backbone.``) may store it without that first component.
            guesses[head + name] = [head + disk, head + disk.partition(".")[2]]
    return guesses


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.equal(a.detach().cpu().to(b.dtype), b)


def _similarity(a: str, b: str) -> tuple[int, int]:
    """How alike two key names are: equal trailing components, then equal numeric components."""
    pa, pb = a.split("."), b.split(".")
    tail = 0
    while tail < min(len(pa), len(pb)) and pa[-1 - tail] == pb[-1 - tail]:
        tail += 1
    digits = int([p for p in pa if p.isdigit()] == [p for p in pb if p.isdigit()])
    return tail, digits


def checkpoint_names(module: nn.Module, checkpoint: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """In-memory state-dict name -> the checkpoint key holding the same tensor (names left out have none).

    ``module`` must hold the checkpoint's values (it was loaded from it).
    """
    state = module.state_dict()
    guesses = _disk_name_guesses(module)
    names: dict[str, str] = {}
    taken: set[str] = set()
    for name, tensor in state.items():
        for guess in [name, *guesses.get(name, [])]:
            if guess in checkpoint and guess not in taken and _same(tensor, checkpoint[guess]):
                names[name] = guess
                taken.add(guess)
                break
    for name, tensor in state.items():
        if name in names:
            continue
        equal = [k for k, v in checkpoint.items() if k not in taken and _same(tensor, v)]
        if equal:
            best = max(equal, key=lambda k: _similarity(name, k))
            names[name] = best
            taken.add(best)
    return names


@dataclass
class BoundNetwork:
    """A segmenter whose tensors can be set by checkpoint key.

    ``names``: in-memory name -> checkpoint key; ``unbound``: the network's tensors no
    checkpoint key holds (they keep the values the network was loaded with).
    """

    segmenter: Segmenter
    names: dict[str, str]
    unbound: list[str] = field(default_factory=list)

    @classmethod
    def bind(cls, segmenter: Segmenter, checkpoint: Mapping[str, torch.Tensor]) -> BoundNetwork:
        names = checkpoint_names(segmenter.module, checkpoint)
        unbound = [n for n in segmenter.module.state_dict() if n not in names]
        return cls(segmenter, names, unbound)

    @property
    def module(self) -> nn.Module:
        return self.segmenter.module

    def by_key(self) -> dict[str, str]:
        """Checkpoint key -> in-memory name."""
        return {key: name for name, key in self.names.items()}

    def load(self, state: Mapping[str, torch.Tensor]) -> None:
        """Copy the tensors of a state dict under checkpoint names into the network."""
        own = self.module.state_dict()
        with torch.no_grad():
            for name, key in self.names.items():
                if key in state:
                    own[name].copy_(state[key])

    @contextlib.contextmanager
    def preserved(self) -> Iterator[BoundNetwork]:
        """Restore the network's tensors on exit, so later users (the ensemble, another run) see the model's own."""
        saved = {k: v.detach().clone() for k, v in self.module.state_dict().items()}
        try:
            yield self
        finally:
            self.module.load_state_dict(saved)

    def state(self) -> dict[str, torch.Tensor]:
        """The network's tensors under checkpoint names (shared with the network, not copies)."""
        own = self.module.state_dict()
        return {key: own[name] for name, key in self.names.items()}

    def scores_with(self, tensors: Mapping[str, torch.Tensor], pixels: torch.Tensor) -> torch.Tensor:
        """The segmenter's scores with some tensors (by checkpoint key) replaced for this call only,
        differentiably (``torch.func.functional_call``); the others keep their values."""
        wrapper = _ScoresOf(self.segmenter)
        replaced = {"net." + self.by_key()[k]: v for k, v in tensors.items()}
        return torch.func.functional_call(wrapper, replaced, (pixels,), strict=False)


class _ScoresOf(nn.Module):
    """Makes ``segmenter.scores`` (which calls the module however the adapter needs) a module call,
    so ``functional_call`` can swap the module's tensors under it."""

    def __init__(self, segmenter: Segmenter):
        super().__init__()
        self.net = segmenter.module
        self._scores = segmenter.scores

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._scores(pixels)


def iter_batches(n: int, batch_size: int) -> Iterator[slice]:
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))

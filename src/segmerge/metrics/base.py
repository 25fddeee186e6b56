"""The summable state every metric here shares: named count tensors that add up across shards.

A subclass declares its state with :meth:`SummableMetric.add_state` in ``__init__`` and
accumulates into those tensors in ``update``; ``reset``, ``state``, ``load_state``,
``merge_state``, ``a + b`` and ``sync`` are written once, here. This is the torchmetrics
pattern without depending on torchmetrics (a dev-only dependency): every state is a sum,
so the state of a process that saw the whole dataset is the sum of the shards' states.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist

from segmerge.errors import SegmergeError


def sync_state(state: Mapping[str, torch.Tensor], group=None) -> None:
    """Sum count tensors in place across processes; a no-op unless torch.distributed is initialised.

    The states are counts, so the sum over the shards equals the state of one process that
    saw the whole dataset. NCCL only reduces CUDA tensors, so CPU states travel through the
    current CUDA device and back.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    on_nccl = dist.get_backend(group) == "nccl"
    for tensor in state.values():
        buffer = tensor.to(torch.device("cuda", torch.cuda.current_device())) if on_nccl else tensor
        dist.all_reduce(buffer, op=dist.ReduceOp.SUM, group=group)
        if buffer is not tensor:
            tensor.copy_(buffer)


def _brief(value: Any) -> str:
    # A category list can be pages long; its length is what tells two of them apart at a glance.
    text = repr(value)
    if len(text) <= 40 or not hasattr(value, "__len__"):
        return text
    return f"<{type(value).__name__} of {len(value)}>"


class SummableMetric:
    """Base of metrics whose state is a fixed set of tensors that combine by addition.

    Subclasses call ``super().__init__()``, then :meth:`add_state` once per tensor (it
    becomes an attribute of that name), and implement :meth:`_twin` (an empty metric with
    the same settings, for ``a + b``) and, when some settings must agree for a sum to make
    sense, :meth:`_settings`. Their ``update`` should start with :meth:`_check_not_synced`.
    """

    def __init__(self) -> None:
        self._state_specs: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
        self._synced = False

    def add_state(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> None:
        """Declare a zero-initialised state tensor ``self.<name>`` of ``shape`` and ``dtype``."""
        if name in self._state_specs:
            raise SegmergeError(f"state {name!r} is declared twice in {type(self).__name__}")
        self._state_specs[name] = (tuple(shape), dtype)
        setattr(self, name, torch.zeros(shape, dtype=dtype))

    # -- hooks for subclasses ------------------------------------------------------

    def _twin(self) -> SummableMetric:
        """A new, empty metric built with this one's settings."""
        raise NotImplementedError(f"{type(self).__name__} must implement _twin() to support a + b")

    def _settings(self) -> dict[str, Any]:
        """Settings two metrics must share to be added (beyond their state shapes)."""
        return {}

    def _check_not_synced(self) -> None:
        # After sync() the tensors hold every process's counts; adding local ones would
        # count this process's new pixels once but everyone else's not at all.
        if self._synced:
            raise SegmergeError("update() after sync() would mix summed and local counts; call reset() first")

    # -- state ---------------------------------------------------------------------

    def reset(self) -> None:
        """Zero every state tensor, ready for a new dataset (and a new ``sync()``)."""
        for name in self._state_specs:
            getattr(self, name).zero_()
        self._synced = False

    def state(self) -> dict[str, torch.Tensor]:
        """A copy of every state tensor by name, for :meth:`load_state`, :meth:`merge_state` or saving."""
        return {name: getattr(self, name).clone() for name in self._state_specs}

    def _checked(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        kind = type(self).__name__
        if not isinstance(state, Mapping):
            raise SegmergeError(
                f"a {kind} state is a mapping of name -> tensor (from state()), got {type(state).__name__}"
            )
        missing = [n for n in self._state_specs if n not in state]
        extra = [n for n in state if n not in self._state_specs]
        if missing or extra:
            raise SegmergeError(
                f"state fields {list(state)} do not match {kind}'s {list(self._state_specs)} "
                f"(missing: {missing or 'none'}, unexpected: {extra or 'none'}); pass the state() of a {kind}"
            )
        out = {}
        for name, (shape, dtype) in self._state_specs.items():
            value = state[name]
            if not isinstance(value, torch.Tensor):
                raise SegmergeError(
                    f"state {name!r} is of type {type(value).__name__}, expected a tensor of shape {shape} and {dtype}"
                )
            if tuple(value.shape) != shape or value.dtype != dtype:
                raise SegmergeError(
                    f"state {name!r} is {tuple(value.shape)} {value.dtype}, expected {shape} {dtype}; "
                    f"states only combine between {kind}s built with the same settings"
                )
            out[name] = value
        return out

    def load_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Replace this metric's counts by ``state`` (checked against the declared fields first)."""
        for name, value in self._checked(state).items():
            getattr(self, name).copy_(value)

    def merge_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Add another process's (or object's) counts to this one."""
        for name, value in self._checked(state).items():
            getattr(self, name).add_(value.to(getattr(self, name).device))

    def __add__(self, other):
        if not isinstance(other, type(self)):
            return NotImplemented
        mine, theirs = self._settings(), other._settings()
        differ = [name for name in mine if mine[name] != theirs.get(name)]
        if differ:
            details = "; ".join(f"{n} {_brief(mine[n])} vs {_brief(theirs.get(n))}" for n in differ)
            raise SegmergeError(f"cannot add {type(self).__name__}s built with different settings: {details}")
        total = self._twin()
        total.load_state(self.state())
        total.merge_state(other.state())
        return total

    def sync(self, group=None) -> None:
        """All-reduce (sum) every state tensor across processes; a no-op without torch.distributed.

        Collective: every process must call it, once after the last ``update`` and before
        ``compute``. A second call before ``reset()`` does nothing, so counts are never summed twice.
        """
        if self._synced:
            return
        sync_state({name: getattr(self, name) for name in self._state_specs}, group)
        self._synced = dist.is_available() and dist.is_initialized()

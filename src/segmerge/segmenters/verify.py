"""Did the checkpoint's weights arrive in the network a user's factory built?

A factory that loads with the wrong key names builds a randomly initialised network, and scoring
it gives numbers that mean nothing (mmseg's ``init_segmentor`` on a DAFormer UDA training file
loads none of the student's weights: its default ``revise_keys`` strips ``module.`` only, while the
student sits under ``model.``). So segmerge compares the network's state dict with the checkpoint,
read as the merge reads it: a UDA training file as its student (``open_checkpoint``), a MiT encoder
in another layout converted onto the network's (:func:`segmerge.merging.layouts.convert_onto`), the
network's own wrapper prefix (``model.`` of a ``Logits(model)`` wrapper) found from the names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from segmerge.errors import CheckpointError, SegmergeError
from segmerge.merging.layouts import convert_onto
from segmerge.merging.sources import TensorMeta


@dataclass
class WeightCheck:
    tensors: int  # in the network
    arrived: list[str] = field(default_factory=list)
    differ: list[str] = field(default_factory=list)  # same name, other values or shape
    missing: list[str] = field(default_factory=list)  # in the network, not in the checkpoint
    unexpected: list[str] = field(default_factory=list)  # in the checkpoint, not in the network
    prefix: str = ""

    @property
    def ok(self) -> bool:
        return not (self.differ or self.missing or self.unexpected)

    def describe(self) -> str:
        def some(keys: list[str]) -> str:
            return ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")

        parts = [f"{len(self.arrived)} of {self.tensors} of the network's tensors hold the checkpoint's values"]
        if self.differ:
            parts.append(f"{len(self.differ)} differ from the file ({some(self.differ)})")
        if self.missing:
            parts.append(f"{len(self.missing)} missing from the file ({some(self.missing)})")
        if self.unexpected:
            parts.append(
                f"{len(self.unexpected)} of the file's tensors unexpected by the network ({some(self.unexpected)})"
            )
        return "; ".join(parts)


def _candidate_prefixes(keys: list[str]) -> list[str]:
    out = {""}
    for key in keys[:5]:
        parts = key.split(".")
        for n in range(1, min(4, len(parts))):
            out.add(".".join(parts[:n]) + ".")
    return sorted(out, key=len)


def check_weights(module: torch.nn.Module, checkpoint) -> WeightCheck:
    """Compare ``module``'s tensors with ``checkpoint`` (an opened :class:`Checkpoint`) by name and value."""
    state = {k: v for k, v in module.state_dict().items()}
    best = None
    for prefix in _candidate_prefixes(list(state)):
        mine = {k[len(prefix) :]: TensorMeta.of(v) for k, v in state.items() if k.startswith(prefix)}
        view = convert_onto(mine, checkpoint) or checkpoint
        common = len(mine.keys() & view.metas().keys())
        if best is None or common > best[0]:
            best = (common, prefix, mine, view)
    _, prefix, mine, view = best
    check = WeightCheck(len(state), prefix=prefix)
    check.missing = [k for k in state if not k.startswith(prefix)]
    theirs = view.metas()
    for key in mine:
        if key not in theirs:
            check.missing.append(prefix + key)
            continue
        a, b = state[prefix + key].detach().cpu(), view.get(key)
        same = a.shape == b.shape and torch.equal(a.to(torch.float64), b.to(torch.float64))
        (check.arrived if same else check.differ).append(prefix + key)
    check.unexpected = [k for k in theirs if k not in mine]
    return check


def verify_factory_weights(
    module: torch.nn.Module, checkpoint_path: str, spec: str, network: str | None = None
) -> WeightCheck:
    """Refuse (:class:`SegmergeError`, exit 2) a factory's network that does not hold the checkpoint's weights."""
    from segmerge.checkpoints import open_checkpoint

    try:
        checkpoint = open_checkpoint(checkpoint_path, network=network)
    except CheckpointError as exc:
        raise SegmergeError(
            f"--model {spec}: cannot check that the network holds {checkpoint_path}'s weights ({exc}); "
            "pass --allow-unverified to score it unchecked"
        ) from None
    check = check_weights(module, checkpoint)
    if not check.ok:
        raise SegmergeError(
            f"--model {spec}: the network built from {checkpoint_path} does not hold its weights: {check.describe()}. "
            "Fix the factory's loading (DAFormer, HRDA and MIC files load with revise_keys=[(r'^module\\.', ''), "
            "('model.', '')], as their tools/test.py does; docs/evaluation.md), or pass --allow-unverified"
        )
    return check

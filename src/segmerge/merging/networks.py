"""One network stored several times in one state dict, under different prefixes.

UDA training files of the DAFormer family (DAFormer, HRDA, MIC, EDAPS) save the whole
training wrapper: the student under ``model.``, its EMA teacher under ``ema_model.`` and,
with feature distance, an ImageNet model under ``imnet_model.``. Merged as one network,
every student layer would sit at the start of a stack three times as deep. This finds
such copies from the key names and shapes alone, so the merge can pick one of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from segmerge.merging.sources import TensorMeta

#: A copy must hold at least this many tensors to count as a network.
MIN_KEYS = 8
#: Two prefixes are copies of one network when this share of the larger one's (name, shape)
#: pairs is found in the other.
SAME_NETWORK = 0.9

#: ... and the copies together must hold this share of all tensors.
COVERS = 0.8

ROLES = ("student", "teacher", "imagenet", "copy")


@dataclass(frozen=True)
class Network:
    prefix: str  # with its trailing dot, e.g. "model."
    role: str  # student, teacher, imagenet or copy
    keys: int

    @property
    def description(self) -> str:
        return {
            "student": "the student",
            "teacher": "the EMA teacher",
            "imagenet": "the ImageNet feature-distance model",
        }.get(self.role, "a copy of the network")


def role_of(prefix: str) -> str:
    name = prefix.rstrip(".").lower()
    if name in ("model", "student", "student_model"):
        return "student"
    if "ema" in name or "teacher" in name:
        return "teacher"
    if "imnet" in name or "imagenet" in name:
        return "imagenet"
    return "copy"


def find_networks(metas: Mapping[str, TensorMeta], max_depth: int = 3) -> list[Network]:
    """The prefixes under which one network is stored more than once, in file order.

    Empty when the state dict holds a single network. Candidates are the key prefixes of
    1 to ``max_depth`` components; a group is prefixes whose (rest of the name, shape)
    pairs agree; the group covering the most tensors wins.
    """
    signatures: dict[str, set[tuple[str, tuple[int, ...]]]] = {}
    first_seen: dict[str, int] = {}
    for index, (key, meta) in enumerate(metas.items()):
        parts = key.split(".")
        for n in range(1, min(max_depth, len(parts) - 1) + 1):
            if parts[n - 1].isdigit():  # the blocks of one stage are alike, not copies of a network
                continue
            prefix = ".".join(parts[:n]) + "."
            signatures.setdefault(prefix, set()).add((key[len(prefix) :], meta.shape))
            first_seen.setdefault(prefix, index)
    candidates = [p for p, sig in signatures.items() if len(sig) >= MIN_KEYS]
    best: list[str] = []
    best_cover = 0
    for p in candidates:
        group = [
            q
            for q in candidates
            if q == p
            or (
                not q.startswith(p)
                and not p.startswith(q)
                and len(signatures[p] & signatures[q]) >= SAME_NETWORK * max(len(signatures[p]), len(signatures[q]))
            )
        ]
        cover = sum(len(signatures[q]) for q in group)
        if len(group) >= 2 and cover > best_cover:
            best, best_cover = group, cover
    if not best or best_cover < COVERS * len(metas):
        return []
    best.sort(key=first_seen.__getitem__)
    return [Network(p, role_of(p), len(signatures[p])) for p in best]


def pick_network(networks: Sequence[Network], which: str | None) -> Network:
    """The network ``which`` names: a role (student, teacher, imagenet) or a prefix.

    ``None`` means the student, or the first network stored when none is called so.
    """
    which = which or "student"
    for net in networks:
        if which in (net.role, net.prefix, net.prefix.rstrip(".")):
            return net
    if which == "student":
        return networks[0]
    known = ", ".join(f"{n.prefix} ({n.role})" for n in networks)
    raise ValueError(f"no network {which!r} in this file; it holds {known}")

"""Key names: which layer a key belongs to, and renaming a donor's keys onto the anchor's."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

BN_MEAN = "running_mean"
BN_VAR = "running_var"


def layer_of(key: str) -> str:
    """The module path of a key: ``a.b.fc1.weight`` -> ``a.b.fc1`` (a top-level key is its own layer)."""
    head, dot, _ = key.rpartition(".")
    return head if dot else key


def leaf_of(key: str) -> str:
    return key.rpartition(".")[2]


def sibling(key: str, leaf: str) -> str:
    """The key with the same module path and another leaf name."""
    head, dot, _ = key.rpartition(".")
    return f"{head}{dot}{leaf}"


@dataclass(frozen=True)
class RenameRule:
    """A regex substitution applied to a donor's key names (``re.sub(pattern, replace, key)``)."""

    pattern: str
    replace: str

    def apply(self, key: str) -> str:
        return re.sub(self.pattern, self.replace, key)


def rename(key: str, rules: Sequence[RenameRule]) -> str:
    for rule in rules:
        key = rule.apply(key)
    return key


def common_prefix_rename(
    donor_keys: Iterable[str], anchor_keys: Iterable[str], min_components: int = 2
) -> tuple[str, str, int] | None:
    """Find the prefix substitution that maps the most donor keys onto anchor keys.

    Returns ``(donor_prefix, anchor_prefix, count)`` or None. Keys are matched on their
    last components (at least ``min_components`` of them), so ``backbone.block1.0.x.weight``
    and ``segformer.encoder.block1.0.x.weight`` suggest ``backbone.`` -> ``segformer.encoder.``.
    """
    by_suffix: dict[str, list[str]] = {}
    for a in anchor_keys:
        parts = a.split(".")
        for n in range(min_components, len(parts) + 1):
            by_suffix.setdefault(".".join(parts[-n:]), []).append(".".join(parts[:-n]))
    votes: dict[tuple[str, str], int] = {}
    for d in donor_keys:
        parts = d.split(".")
        for n in range(len(parts), min_components - 1, -1):
            prefixes = by_suffix.get(".".join(parts[-n:]))
            if prefixes and len(set(prefixes)) == 1:
                donor_prefix = ".".join(parts[:-n])
                pair = (_with_dot(donor_prefix), _with_dot(prefixes[0]))
                if pair[0] != pair[1]:
                    votes[pair] = votes.get(pair, 0) + 1
                break
    if not votes:
        return None
    (src, dst), count = max(votes.items(), key=lambda kv: (kv[1], kv[0]))
    return src, dst, count


def _with_dot(prefix: str) -> str:
    return f"{prefix}." if prefix else ""


def suggest_rename_flag(model_index: int, donor_prefix: str, anchor_prefix: str) -> str:
    pattern = "^" + re.escape(donor_prefix) if donor_prefix else "^"
    return f"--rename '{model_index}:{pattern}={anchor_prefix}'"

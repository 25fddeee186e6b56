"""Tiny generated models for tests: a small conv net with BatchNorm and a head, as plain state dicts."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch


def tiny_state(seed: int, head_classes: int = 3, prefix: str = "") -> dict[str, torch.Tensor]:
    """A conv encoder (with BatchNorm) and a 1x1 head; keys in module order."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g)

    return {
        f"{prefix}stem.conv.weight": r(4, 3, 3, 3),
        f"{prefix}stem.conv.bias": r(4),
        f"{prefix}stem.bn.weight": r(4).abs() + 0.5,
        f"{prefix}stem.bn.bias": r(4),
        f"{prefix}stem.bn.running_mean": r(4),
        f"{prefix}stem.bn.running_var": r(4).abs() + 0.1,
        f"{prefix}stem.bn.num_batches_tracked": torch.tensor(100 + seed),
        f"{prefix}block.0.fc1.weight": r(8, 4),
        f"{prefix}block.0.fc1.bias": r(8),
        f"{prefix}block.0.fc2.weight": r(4, 8),
        f"{prefix}block.1.fc1.weight": r(8, 4),
        f"{prefix}block.1.fc2.weight": r(4, 8),
        "head.weight": r(head_classes, 4),
        "head.bias": r(head_classes),
    }


def shared_start_family(n: int, scale: float = 0.1) -> tuple[dict, list[dict]]:
    """A base model and ``n`` models fine-tuned from it (base + small seeded deltas)."""
    base = tiny_state(0)
    models = []
    for i in range(n):
        g = torch.Generator().manual_seed(100 + i)
        models.append(
            {
                k: (v + scale * torch.randn(v.shape, generator=g)) if v.is_floating_point() else v.clone()
                for k, v in base.items()
            }
        )
    return base, models


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()

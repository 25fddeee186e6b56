"""Synthetic street-scene domains: a built-in GTA5/SYNTHIA -> Cityscapes benchmark that runs anywhere.

The real adaptation benchmarks need data sets that cannot be downloaded here; this package
draws procedural street scenes instead (Cityscapes trainIds, instance ids, 96x192 by
default, ~100 images a second on one core) in *domains* that differ the way GTA5, SYNTHIA
and Cityscapes differ::

    from segmerge_bench.synthetic import render, SyntheticDataset, write_domain
    scene = render("target", seed=0, index=12)           # image, label, instances, segments
    data = SyntheticDataset("appearance-a", n=2000, seed=0, split="train")   # a reader-like data set
    write_domain("target", 500, "data/target", split="val")  # Cityscapes layout on disk

Modules: ``domains`` (what a domain is; the built-ins), ``street`` and ``objects`` (scene
geometry), ``canvas`` (label-side maps), ``appearance`` (painting in a domain's style),
``scenes`` (``render``/``generate``), ``dataset`` and ``writer``. ``SyntheticDataset`` and
``write_domain`` need ``cityscapesscripts`` (the official label table) and are imported on
first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from segmerge_bench.synthetic.domains import (
    DOMAINS,
    FREQUENCY_KEYS,
    THING_NAMES,
    TRAIN_ID,
    TRAIN_ID_NAMES,
    Camera,
    ClassLook,
    Domain,
    Lighting,
    get_domain,
    load_domain,
)
from segmerge_bench.synthetic.scenes import STUFF_SEGMENT_BASE, Scene, domain_key, generate, render

if TYPE_CHECKING:
    from segmerge_bench.synthetic.dataset import SPLIT_OFFSETS, SyntheticDataset
    from segmerge_bench.synthetic.writer import write_domain

_LAZY = {"SyntheticDataset": "dataset", "SPLIT_OFFSETS": "dataset", "write_domain": "writer"}

__all__ = [
    "DOMAINS",
    "FREQUENCY_KEYS",
    "SPLIT_OFFSETS",
    "STUFF_SEGMENT_BASE",
    "THING_NAMES",
    "TRAIN_ID",
    "TRAIN_ID_NAMES",
    "Camera",
    "ClassLook",
    "Domain",
    "Lighting",
    "Scene",
    "SyntheticDataset",
    "domain_key",
    "generate",
    "get_domain",
    "load_domain",
    "render",
    "write_domain",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"segmerge_bench.synthetic.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'segmerge_bench.synthetic' has no attribute {name!r}")

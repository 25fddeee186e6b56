"""segmerge: layer-wise merging of segmentation models, and the evaluation to judge it.

The Python API::

    import segmerge
    plan = segmerge.plan(["gta.pth", "synthia.pth"], anchor=0)          # what would happen
    state = segmerge.merge(["gta.pth", "synthia.pth"], end_weight=0.75)  # a state dict
    segmerge.merge_to_file("recipe.yaml", output="merged.pth")           # written, with provenance
    state = segmerge.load_checkpoint("merged.pth")

The names are imported on first use, so that ``import segmerge`` (and the parts that need
no torch, such as scoring prediction files) does not load torch.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING

from segmerge._version import __version__

if TYPE_CHECKING:
    from segmerge.api import make_recipe, merge, merge_to_file, plan
    from segmerge.checkpoints import load_checkpoint, open_checkpoint, save_checkpoint
    from segmerge.recipe import Recipe

_LAZY = {
    "make_recipe": "segmerge.api",
    "merge": "segmerge.api",
    "merge_to_file": "segmerge.api",
    "plan": "segmerge.api",
    "load_checkpoint": "segmerge.checkpoints",
    "open_checkpoint": "segmerge.checkpoints",
    "save_checkpoint": "segmerge.checkpoints",
    "Recipe": "segmerge.recipe",
}

__all__ = [
    "Recipe",
    "__version__",
    "load_checkpoint",
    "make_recipe",
    "merge",
    "merge_to_file",
    "open_checkpoint",
    "plan",
    "save_checkpoint",
]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value  # once imported, a plain attribute
        return value
    if not name.startswith("_") and importlib.util.find_spec(f"segmerge.{name}") is not None:
        return importlib.import_module(f"segmerge.{name}")  # segmerge.api etc., as when they were imported here
    raise AttributeError(f"module 'segmerge' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

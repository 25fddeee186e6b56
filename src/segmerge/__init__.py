"""segmerge: layer-wise merging of segmentation models, and the evaluation to judge it.

The Python API::

    import segmerge
    plan = segmerge.plan(["gta.pth", "synthia.pth"], anchor=0)          # what would happen
    state = segmerge.merge(["gta.pth", "synthia.pth"], end_weight=0.75)  # a state dict
    segmerge.merge_to_file("recipe.yaml", output="merged.pth")           # written, with provenance
    state = segmerge.load_checkpoint("merged.pth")
"""

from segmerge._version import __version__
from segmerge.api import make_recipe, merge, merge_to_file, plan
from segmerge.checkpoints import load_checkpoint, open_checkpoint, save_checkpoint
from segmerge.recipe import Recipe

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

"""Writing a tuned merge: the checkpoint (atomically, never over an input) and its recipe beside it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from segmerge import api
from segmerge.checkpoints.atomic import atomic_file
from segmerge.recipe import Recipe

RECIPE_SUFFIX = ".recipe.yaml"


def recipe_path(output: str | Path) -> Path:
    """Where the recipe of ``output`` goes: ``OUT.recipe.yaml`` beside it."""
    output = Path(output)
    return output.with_name(output.name + RECIPE_SUFFIX)


def write_tuned(
    recipe: Recipe,
    output: str | Path,
    state_dict: Mapping[str, torch.Tensor] | None = None,
    overwrite: bool = False,
    trust_pickle: bool = False,
) -> tuple[Path, Path]:
    """Write the merge ``recipe`` describes to ``output`` and the recipe to ``OUT.recipe.yaml``.

    Without ``state_dict`` the plan runs again, as ``segmerge merge -r`` would; with it (the
    tensors a tuning run returned) those tensors are written, which differ from the recipe's
    merge only in BatchNorm statistics re-estimated on target images. Returns both paths.
    """
    output = Path(output)
    opened = api.open_merge(recipe, trust_pickle)
    written = api.write_merge(opened, output, overwrite, state_dict)
    text = recipe.to_yaml(with_output=False)
    where = recipe_path(written)
    with atomic_file(where) as tmp:
        tmp.write_text(text)
    return written, where

"""Writing a tuned merge: the checkpoint (atomically, never over an input), its recipe beside it,
and the run's report (``tune.md``, ``tune.json``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from segmerge import api
from segmerge.checkpoints.atomic import atomic_file, fresh_folder
from segmerge.recipe import Recipe
from segmerge.tuning.learn import LearnResult
from segmerge.tuning.search import SearchResult

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
    """Write the merge ``recipe`` describes to ``output`` and the recipe to ``OUT.recipe.yaml``
    (its relative paths rewritten relative to that file's folder, as recipe files are read).

    Without ``state_dict`` the plan runs again, as ``segmerge merge -r`` would; with it (the
    tensors a tuning run returned) those tensors are written, which differ from the recipe's
    merge only in BatchNorm statistics re-estimated on target images. Returns both paths.
    """
    output = Path(output)
    opened = api.open_merge(recipe, trust_pickle)
    written = api.write_merge(opened, output, overwrite, state_dict)
    where = recipe_path(written)
    text = recipe.relative_to(where.parent).to_yaml(with_output=False)  # its paths relative to where it lies
    with atomic_file(where) as tmp:
        tmp.write_text(text)
    return written, where


REPORT_FILES = ("tune.md", "tune.json")


def write_report(result: SearchResult | LearnResult, folder: str | Path) -> dict[str, Path]:
    """Write a search's or a learning run's report into ``folder``: ``tune.md`` (the table) and
    ``tune.json`` (everything); each file atomically. Returns file name -> path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, text in zip(REPORT_FILES, (result.to_markdown(), result.to_json()), strict=True):
        with atomic_file(folder / name) as tmp:
            tmp.write_text(text)
        written[name] = folder / name
    return written


def write_result(
    result: SearchResult | LearnResult,
    output: str | Path,
    overwrite: bool = False,
    report: str | Path | None = None,
    trust_pickle: bool = False,
) -> tuple[Path, Path]:
    """What ``segmerge tune`` writes: the chosen or learned merge and its recipe (:func:`write_tuned`),
    then, with ``report``, the run's report there (:func:`write_report`; the folder is replaced
    whole, and one segmerge tune did not write is refused unless ``overwrite``). Returns the
    checkpoint's and the recipe's paths.

    Without AdaBN the recipe is merged again, as ``segmerge merge -r`` does; with it, the tensors
    the run returned are written (their BatchNorm statistics re-estimated on the target images).
    """
    recipe = result.best_recipe if isinstance(result, SearchResult) else result.recipe
    state_dict = result.state_dict if result.adabn else None
    paths = write_tuned(recipe, output, state_dict, overwrite, trust_pickle)
    if report is not None:  # a folder of this run only: replaced whole, refused if foreign (unless overwrite)
        with fresh_folder(Path(report), "tune", overwrite) as folder:
            write_report(result, folder)
    return paths

"""The Python API: plan and run merges from paths or in-memory state dicts.

The CLI is a thin layer over these functions; the benchmark uses them too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from segmerge.checkpoints import Checkpoint, open_checkpoint, write_checkpoint
from segmerge.checkpoints.provenance import Provenance
from segmerge.errors import CheckpointError, MergeError, SegmergeError
from segmerge.merging.execute import execute
from segmerge.merging.methods import MergeMethod, build_method
from segmerge.merging.plan import MergePlan, build_plan
from segmerge.merging.relatedness import layer_similarities, unrelated_layer_warnings
from segmerge.merging.sources import StateDictSource, TensorMeta
from segmerge.recipe import Recipe

ModelInput = str | Path | Mapping[str, torch.Tensor]


def make_recipe(models: Sequence[ModelInput] | Recipe | str | Path, **options: Any) -> Recipe:
    """A recipe from a recipe (object or file) or from models plus options.

    Options are recipe fields (``anchor``, ``method``, ``base``, ``overrides``, ``seed``,
    ``weights`` - one per model -, ``rename`` - {model: [(pattern, replace)]} -, ``keep`` -
    a list of regexes -) or the method's parameters (``ramp_start``, ``end_weight``, ...).
    """
    if isinstance(models, Recipe):
        return models
    if isinstance(models, str | Path):
        return Recipe.from_file(models)
    data: dict[str, Any] = {
        "models": [{"path": m if isinstance(m, str | Path) else f"<state_dict {i}>"} for i, m in enumerate(models)]
    }
    data["models"] = [{"path": str(m["path"])} for m in data["models"]]
    weights = options.pop("weights", None)
    if weights is not None:
        if len(weights) != len(models):
            raise SegmergeError(f"{len(weights)} weights given for {len(models)} models")
        for spec, w in zip(data["models"], weights, strict=True):
            if w is not None:
                spec["weight"] = float(w)
    for index, rules in (options.pop("rename", None) or {}).items():
        data["models"][int(index)]["rename"] = [{"pattern": p, "replace": r} for p, r in rules]
    overrides = list(options.pop("overrides", None) or [])
    overrides += [{"pattern": p, "keep": True} for p in options.pop("keep", None) or []]
    if overrides:
        data["overrides"] = overrides
    for field in ("anchor", "method", "base", "seed", "output"):
        if field in options and options[field] is not None:
            data[field] = str(options.pop(field)) if field in ("base", "output") else options.pop(field)
        else:
            options.pop(field, None)
    data["parameters"] = {k: v for k, v in options.items() if v is not None}
    return Recipe.validated(data, "<arguments>")


@dataclass
class Opened:
    recipe: Recipe
    sources: list
    base: Any
    method: MergeMethod
    plan: MergePlan

    @property
    def anchor(self):
        return self.sources[self.recipe.anchor]


def open_merge(
    models: Sequence[ModelInput] | Recipe | str | Path,
    trust_pickle: bool = False,
    **options: Any,
) -> Opened:
    recipe = make_recipe(models, **options)
    in_memory = models if isinstance(models, Sequence) and not isinstance(models, str) else None
    sources = []
    for i, spec in enumerate(recipe.models):
        given = in_memory[i] if in_memory is not None else None
        if given is not None and isinstance(given, Mapping):
            sources.append(StateDictSource(given, f"model{i}"))
        else:
            sources.append(_open_path(recipe, spec.path, trust_pickle))
    base = _open_path(recipe, recipe.base, trust_pickle) if recipe.base else None
    method = build_method(recipe.method, recipe.parameters, recipe.seed)
    plan = build_plan(
        [s.metas() for s in sources],
        method,
        anchor=recipe.anchor,
        labels=[s.label for s in sources],
        renames=recipe.renames(),
        model_weights=recipe.model_weights(),
        overrides=recipe.plan_overrides(),
        base=base.metas() if base is not None else None,
        base_label=base.label if base is not None else None,
    )
    anchor_source = sources[recipe.anchor]
    for s in [anchor_source]:
        if isinstance(s, Checkpoint) and s.order == "key-names":
            plan.warnings.append(
                f"{s.label}: stores its keys sorted by name; layer order (and so depth) was rebuilt "
                "from the key names - check the plan's layer list"
            )
    return Opened(recipe, sources, base, method, plan)


def _open_path(recipe: Recipe, path: str, trust_pickle: bool) -> Checkpoint:
    """Open a checkpoint a recipe names; a recipe file's relative paths are relative to its folder."""
    resolved = recipe.resolve(path)
    if not resolved.exists() and recipe.where(path):
        raise CheckpointError(f"{resolved}: no such file or folder{recipe.where(path)}")
    return open_checkpoint(resolved, trust_pickle)


def output_path(recipe: Recipe, output: str | Path | None) -> Path | None:
    """Where a merge is written: ``output`` as given (relative to the working directory), else the
    recipe's ``output`` (relative to the recipe file's folder when it came from a file)."""
    if output is not None:
        return Path(output)
    return recipe.resolve(recipe.output) if recipe.output is not None else None


def plan(
    models: Sequence[ModelInput] | Recipe | str | Path,
    trust_pickle: bool = False,
    check_relatedness: bool = False,
    **options: Any,
) -> MergePlan:
    """What a merge would do, key by key and layer by layer, without doing it."""
    opened = open_merge(models, trust_pickle, **options)
    if check_relatedness:
        sims = layer_similarities(opened.plan, opened.sources)
        opened.plan.warnings += unrelated_layer_warnings(sims, opened.plan.models)
    return opened.plan


def merge(
    models: Sequence[ModelInput] | Recipe | str | Path,
    trust_pickle: bool = False,
    **options: Any,
) -> dict[str, torch.Tensor]:
    """Merge in memory: the merged state dict, under the anchor's key names and in its order.

    On a busy machine, running it inside :func:`segmerge.merging.execute.single_threaded` is
    several times faster (the ``segmerge merge`` command does); the result is the same.
    """
    if "output" in options or "overwrite" in options:
        raise SegmergeError("merge() returns the merged state dict and writes nothing; call merge_to_file() to write")
    opened = open_merge(models, trust_pickle, **options)
    return dict(execute(opened.plan, opened.sources, opened.method, opened.base))


def merge_to_file(
    models: Sequence[ModelInput] | Recipe | str | Path,
    output: str | Path | None = None,
    overwrite: bool = False,
    trust_pickle: bool = False,
    **options: Any,
) -> Path:
    """Merge and write the result to ``output`` (or the recipe's ``output``), atomically, with the
    recipe and the inputs' sha256 inside; returns the path written."""
    opened = open_merge(models, trust_pickle, **options)
    output = output_path(opened.recipe, output)
    if output is None:
        raise SegmergeError("merge_to_file: give output=PATH, or a recipe with an `output` field")
    return write_merge(opened, Path(output), overwrite)


def write_merge(
    opened: Opened, output: Path, overwrite: bool, tensors: Mapping[str, torch.Tensor] | None = None
) -> Path:
    """Write the merge; ``tensors`` (under the anchor's names) stand in for running the plan when the
    merged values were changed afterwards (``segmerge tune --adabn`` re-estimates BatchNorm statistics)."""
    inputs = [s for s in opened.sources if isinstance(s, Checkpoint)]
    if len(inputs) != len(opened.sources):
        raise SegmergeError("writing a merge needs every model as a file or folder, not an in-memory state dict")
    _refuse_overwriting_inputs(output, [*inputs, *([opened.base] if opened.base else [])], overwrite)
    recipe = opened.recipe
    provenance = Provenance(
        recipe.to_yaml(with_output=False),
        [(spec.path, c.path) for spec, c in zip(recipe.models, inputs, strict=True)],
        (str(recipe.base), opened.base.path) if opened.base else None,
    )
    anchor = opened.anchor
    metas: dict[str, TensorMeta] = {k.key: anchor.metas()[k.key] for k in opened.plan.keys}
    merged = execute(opened.plan, opened.sources, opened.method, opened.base) if tensors is None else tensors.items()
    return write_checkpoint(output, metas, merged, provenance, anchor, overwrite)


def _refuse_overwriting_inputs(output: Path, inputs: Sequence[Checkpoint], overwrite: bool) -> None:
    target = output.resolve()
    for c in inputs:
        src = c.path.resolve()
        if target == src or src.is_relative_to(target) or (src.is_dir() and target.is_relative_to(src)):
            raise MergeError(f"{output}: is (or contains) the input {c.path}; write the merge elsewhere")
    if output.exists() and not overwrite:
        raise MergeError(f"{output}: already exists; pass --overwrite (overwrite=True) to replace it")

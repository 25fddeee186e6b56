"""The Python API: plan and run merges from paths or in-memory state dicts.

The CLI is a thin layer over these functions; the benchmark uses them too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from segmerge.checkpoints import Checkpoint, open_checkpoint, output_format, write_checkpoint
from segmerge.checkpoints.provenance import Provenance
from segmerge.errors import CheckpointError, MergeError, RecipeError, SegmergeError
from segmerge.merging.execute import execute
from segmerge.merging.forward_order import forward_order, order_like
from segmerge.merging.keys import rename
from segmerge.merging.layouts import ConvertedSource, convert_onto
from segmerge.merging.methods import MergeMethod, build_method
from segmerge.merging.plan import FEW_MERGED, MergePlan, build_plan
from segmerge.merging.relatedness import SimilarityTally, layer_similarities, unrelated_layer_warnings
from segmerge.merging.sources import StateDictSource, TensorMeta
from segmerge.recipe import Recipe

ModelInput = str | Path | Mapping[str, torch.Tensor]


def make_recipe(models: Sequence[ModelInput] | Recipe | str | Path, **options: Any) -> Recipe:
    """A recipe from a recipe (object or file) or from models plus options.

    Options are recipe fields (``anchor``, ``method``, ``base``, ``overrides``, ``seed``,
    ``weights`` - one per model -, ``rename`` - {model: [(pattern, replace)]} -, ``keep`` -
    a list of regexes -) or the method's parameters (``ramp_start``, ``end_weight``, ...).
    """
    if isinstance(models, Recipe | str | Path) and options:
        raise RecipeError(
            f"a recipe says everything about a merge; {', '.join(sorted(options))} cannot be added to it - "
            "edit the recipe, or give the models and the options instead"
        )
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
    for field in ("anchor", "method", "base", "seed", "output", "network", "keep_wrapper", "allow_few", "order_from"):
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
    conversion_notes = []
    for i, source in enumerate(sources):
        converted = convert_onto(sources[recipe.anchor].metas(), source) if i != recipe.anchor else None
        if converted is not None:
            sources[i] = converted
            conversion_notes.append(f"m{i} {source.label}: {converted.describe()}")
    metas = [s.metas() for s in sources]
    anchor_metas, order_note, order_warning = anchor_order(sources, metas, recipe)
    metas[recipe.anchor] = anchor_metas
    plan = build_plan(
        metas,
        method,
        anchor=recipe.anchor,
        labels=[s.label for s in sources],
        renames=recipe.renames(),
        model_weights=recipe.model_weights(),
        overrides=recipe.plan_overrides(),
        base=base.metas() if base is not None else None,
        base_label=base.label if base is not None else None,
    )
    plan.notes += network_notes(sources, recipe) + conversion_notes
    if order_note:
        plan.notes.append(order_note)
    if order_warning:
        plan.warnings.append(order_warning)
    anchor = sources[recipe.anchor]
    anchor = anchor.source if isinstance(anchor, ConvertedSource) else anchor
    if recipe.keep_wrapper and not getattr(anchor, "prefix", ""):
        plan.warnings.append(
            f"keep_wrapper: {anchor.label} holds one network, so there is no wrapper to keep; the output is the merge"
        )
    return Opened(recipe, sources, base, method, plan)


def anchor_order(
    sources: Sequence, metas: Sequence[Mapping[str, TensorMeta]], recipe: Recipe
) -> tuple[dict[str, TensorMeta], str | None, str | None]:
    """The anchor's keys in the order that gives depth, a note saying where it came from (none
    for the anchor's file order), and a
    warning when it is only a guess from the key names.

    In turn: model ``order_from``'s key order as stored, when the recipe names one; the
    forward-order profile of the anchor's family; the anchor's file order; the file order of
    a donor that keeps module order; the key-name heuristic.
    """
    a = recipe.anchor
    anchor = sources[a]
    own = dict(metas[a])
    how = getattr(anchor, "order", "file")
    if recipe.order_from is not None:
        n = recipe.order_from
        reference = [rename(k, recipe.renames().get(n, ())) for k in _stored_order(sources[n])]
        keys = order_like(list(own), reference)
        return {k: own[k] for k in keys}, f"layer order (depth): model {n}'s key order as stored (order_from)", None
    if not isinstance(anchor, Checkpoint):
        found = forward_order(list(own))
        if found is not None:
            return {k: own[k] for k in found.keys}, _forward_note(f"forward ({', '.join(found.families)})"), None
        return own, None, None
    if how != "key-names":
        return own, _forward_note(how), None
    for i, s in enumerate(sources):
        if i == a or isinstance(s, ConvertedSource) or getattr(s, "order", "file") == "key-names":
            continue
        reference = [rename(k, recipe.renames().get(i, ())) for k in metas[i]]
        if len(set(reference) & set(own)) >= 0.5 * len(own):
            keys = order_like(list(own), reference)
            note = f"layer order (depth): taken from model {i} ({s.label}), whose file keeps module order"
            return {k: own[k] for k in keys}, note, None
    warning = (
        f"{anchor.label}: stores its keys sorted by name and no profile or other input gives their order; "
        "layer order (and so depth) was rebuilt from the key names - check the plan's layer list "
        "(--order-from N takes it from model N)"
    )
    return own, "layer order (depth): rebuilt from the key names", warning


def _forward_note(how: str) -> str | None:
    """A note for a forward order from the profiles; none for a file's own order (the default)."""
    if how.startswith("forward"):
        return f"layer order (depth): the forward pass, from the profiles {how.removeprefix('forward ')}"
    return None


def _stored_order(source) -> list[str]:
    """A model's keys in the order its file stores them (its chosen network's, prefix removed)."""
    if not isinstance(source, Checkpoint):
        return list(source.metas())
    prefix = source.prefix
    return [k[len(prefix) :] for k in source.source.metas() if k.startswith(prefix)]


def network_notes(sources: Sequence, recipe: Recipe) -> list[str]:
    """What the plan says about files holding one network several times (UDA training files)."""
    notes = []
    for i, s in enumerate(sources):
        s = s.source if isinstance(s, ConvertedSource) else s
        chosen = getattr(s, "chosen_network", None)
        if chosen is None:
            continue
        others = [n for n in s.networks if n is not chosen]
        fate = (
            "written unchanged from the anchor"
            if recipe.keep_wrapper and i == recipe.anchor
            else "not in the output"
            if i == recipe.anchor
            else "not used"
        )
        listed = "; ".join(f"{n.prefix} ({n.description}): {fate}" for n in others)
        notes.append(
            f"m{i} {s.label}: a training file holding {len(s.networks)} copies of one network; merging "
            f"{chosen.prefix} ({chosen.description}, {chosen.keys} tensors, depth counted within it); {listed}"
            + ("" if recipe.network else " (--network teacher|imagenet|PREFIX|all chooses another)")
        )
    return notes


def _open_path(recipe: Recipe, path: str, trust_pickle: bool) -> Checkpoint:
    """Open a checkpoint a recipe names; a recipe file's relative paths are relative to its folder."""
    resolved = recipe.resolve(path)
    if not resolved.exists() and recipe.where(path):
        raise CheckpointError(f"{resolved}: no such file or folder{recipe.where(path)}")
    return open_checkpoint(resolved, trust_pickle, recipe.network)


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
        check_related(opened)
    return opened.plan


def check_related(opened: Opened) -> None:
    """Read (a sample of) every merged tensor and warn, in the plan, about unrelated layers."""
    sims = layer_similarities(opened.plan, opened.sources)
    opened.plan.warnings += unrelated_layer_warnings(sims, opened.plan.models)


def refuse_few(plan: MergePlan) -> None:
    """Refuse a merge whose output would be (almost) the anchor, with the hints that could fix it."""
    if plan.merged_share >= FEW_MERGED:
        return
    counts = plan.counts()
    hints = f" and the {len(plan.hints)} rename hints (plan.hints)" if plan.hints else ""
    raise MergeError(
        f"only {plan.merged_share:.1%} of the anchor's values would be merged ({counts.get('merged', 0)} of "
        f"{sum(counts.values())} keys): the output would be (almost) the anchor. See `segmerge plan`{hints}; "
        "pass --allow-few (recipe 'allow_few: true') to write it anyway"
    )


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
    opened: Opened,
    output: Path,
    overwrite: bool,
    tensors: Mapping[str, torch.Tensor] | None = None,
    check_relatedness: bool = False,
) -> Path:
    """Write the merge; ``tensors`` (under the anchor's names) stand in for running the plan when the
    merged values were changed afterwards (``segmerge tune --adabn`` re-estimates BatchNorm statistics).
    ``check_relatedness``: :func:`check_related` on the tensors the merge reads (no second read); its
    warnings join ``opened.plan.warnings`` once the output is written."""
    inputs = [s.source if isinstance(s, ConvertedSource) else s for s in opened.sources]
    inputs = [s for s in inputs if isinstance(s, Checkpoint)]
    if len(inputs) != len(opened.sources):
        raise SegmergeError("writing a merge needs every model as a file or folder, not an in-memory state dict")
    _refuse_overwriting_inputs(output, [*inputs, *([opened.base] if opened.base else [])], overwrite)
    recipe = opened.recipe
    if not recipe.allow_few:
        refuse_few(opened.plan)
    provenance = Provenance(
        recipe.to_yaml(with_output=False),
        [(spec.path, c.path) for spec, c in zip(recipe.models, inputs, strict=True)],
        (str(recipe.base), opened.base.path) if opened.base else None,
    )
    anchor = opened.anchor
    metas: dict[str, TensorMeta] = {k.key: anchor.metas()[k.key] for k in opened.plan.keys}
    tally = SimilarityTally() if check_relatedness and tensors is None else None
    merged = (
        execute(opened.plan, opened.sources, opened.method, opened.base, tally) if tensors is None else tensors.items()
    )
    if recipe.keep_wrapper and anchor.prefix:
        merged, metas = _in_wrapper(anchor, merged, metas)
    written = write_checkpoint(output, metas, merged, provenance, anchor, overwrite)
    if tally is not None:
        opened.plan.warnings += unrelated_layer_warnings(tally.similarities(), opened.plan.models)
    return written


def _in_wrapper(anchor: Checkpoint, merged, metas: Mapping[str, TensorMeta]):
    """The merged network back under its prefix, followed by the anchor's other networks unchanged."""
    others = anchor.other_keys()
    all_metas = {anchor.prefix + k: m for k, m in metas.items()} | {k: anchor.raw_meta(k) for k in others}

    def tensors():
        for key, tensor in merged:
            yield anchor.prefix + key, tensor
        for key in others:
            yield key, anchor.raw_get(key)

    return tensors(), all_metas


def _refuse_overwriting_inputs(output: Path, inputs: Sequence[Checkpoint], overwrite: bool) -> None:
    target = output.resolve()
    for c in inputs:
        src = c.path.resolve()
        if target == src or src.is_relative_to(target) or (src.is_dir() and target.is_relative_to(src)):
            raise MergeError(f"{output}: is (or contains) the input {c.path}; write the merge elsewhere")
    if output.exists() and not overwrite:
        raise MergeError(f"{output}: already exists; pass --overwrite (overwrite=True) to replace it")


def convert(
    path: str | Path,
    output: str | Path,
    to: str,
    trust_pickle: bool = False,
    network: str | None = None,
    overwrite: bool = False,
) -> tuple[Path, str, list[str]]:
    """Write a checkpoint's MiT encoder (and SegFormer MLP head) in another layout: ``mmseg``
    (0.x, DAFormer's), ``mmseg1`` or ``hf``. Returns the path written, the layout read, and the
    keys written unchanged because the target layout has no name for them."""
    from segmerge.checkpoints.hf_folder import segformer_config
    from segmerge.checkpoints.provenance import make_provenance
    from segmerge.merging.layouts import LAYOUTS, detect_layout, plan_conversion, target_metas

    if to not in LAYOUTS:
        raise SegmergeError(f"--to {to!r}: expected one of {', '.join(LAYOUTS)}")
    source = open_checkpoint(path, trust_pickle, network)
    metas = source.metas()
    layout = detect_layout(metas)
    if layout is None:
        raise SegmergeError(f"{path}: holds no MiT encoder in a layout segmerge knows ({', '.join(LAYOUTS)})")
    output = Path(output)
    _refuse_overwriting_inputs(output, [source], overwrite)
    conversions = plan_conversion(layout, metas, to, target_metas(layout, metas, to)) if layout != to else {}
    used = {s.key for c in conversions.values() for s in c.slices}
    kept = [k for k in metas if k not in used]
    out_metas = {k: TensorMeta(c.shape, c.dtype) for k, c in conversions.items()} | {k: metas[k] for k in kept}
    found = forward_order(list(out_metas))
    if found is not None:
        out_metas = {k: out_metas[k] for k in found.keys}

    def tensors():
        for key in out_metas:
            conversion = conversions.get(key)
            yield key, source.get(key) if conversion is None else conversion.build(source.get)

    provenance = make_provenance("", [], None) | {"converted": {"from": str(path), "layout": layout, "to": to}}
    # a Hugging Face folder gets a SegFormer config.json (unless the input folder's is copied),
    # written into the folder before it appears, like everything else in it
    wanted = to == "hf" and output_format(output) == "hf-folder"
    config = {"config.json": lambda: segformer_config(out_metas)} if wanted else {}
    written = write_checkpoint(output, out_metas, tensors(), provenance, source, overwrite, extra_files=config)
    unchanged = kept if layout != to else []
    return written, layout, [k for k in unchanged if metas[k].is_float or k.endswith("num_batches_tracked")]

"""The merge plan: every key of every model classified, grouped into layers, weighted.

Built from shapes and dtypes alone (no tensor data), so ``segmerge plan`` is instant and
shows exactly what ``segmerge merge`` will do. docs/method.md rules 1-5 live here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum

from segmerge.merging.keys import (
    RenameRule,
    common_prefix_rename,
    layer_of,
    rename,
    suggest_rename_flag,
)
from segmerge.merging.methods.base import MergeMethod
from segmerge.merging.schedule import normalised_depth
from segmerge.merging.sources import TensorMeta


class Action(str, Enum):
    MERGED = "merged"
    KEPT = "kept"  # eligible, but an override pins it to the anchor
    ANCHOR_ONLY = "anchor-only"
    SHAPE_MISMATCH = "shape-mismatch"
    NON_FLOAT = "non-float"
    NOT_IN_BASE = "not-in-base"
    DONOR_UNMATCHED = "donor-unmatched"


@dataclass(frozen=True)
class Override:
    """Keys matching ``pattern`` (re.search) are kept from the anchor, or get explicit weights."""

    pattern: str
    keep: bool = False
    weights: tuple[float, ...] | None = None

    def matches(self, key: str) -> bool:
        return re.search(self.pattern, key) is not None


@dataclass
class KeyPlan:
    key: str
    action: Action
    layer: str | None = None
    depth: float | None = None
    #: (model index, that model's key) for every model that contributes, anchor first.
    sources: tuple[tuple[int, str], ...] = ()
    weights: tuple[float, ...] = ()
    note: str = ""


@dataclass
class DonorKey:
    model: int
    key: str
    renamed: str
    action: Action
    note: str = ""


@dataclass
class LayerPlan:
    index: int
    name: str
    depth: float
    #: Every model's weight at this layer (0 for models that hold none of its keys).
    weights: tuple[float, ...]
    action: Action
    keys: list[str] = field(default_factory=list)


@dataclass
class MergePlan:
    models: list[str]
    anchor: int
    method: str
    parameters: dict
    keys: list[KeyPlan]
    layers: list[LayerPlan]
    donor_keys: list[DonorKey]
    hints: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    base: str | None = None
    #: The share of the anchor's floating-point values the merge changes.
    merged_share: float = 1.0
    #: What was found in the inputs and what the merge does about it (not a problem).
    notes: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for k in self.keys:
            out[k.action.value] = out.get(k.action.value, 0) + 1
        return out

    def donor_counts(self) -> dict[int, dict[str, int]]:
        out: dict[int, dict[str, int]] = {}
        for d in self.donor_keys:
            per = out.setdefault(d.model, {})
            per[d.action.value] = per.get(d.action.value, 0) + 1
        return out

    def to_dict(self) -> dict:
        def clean(obj):
            if isinstance(obj, Enum):
                return obj.value
            if isinstance(obj, dict):
                return {k: clean(v) for k, v in obj.items()}
            if isinstance(obj, list | tuple):
                return [clean(v) for v in obj]
            return obj

        return clean(
            {
                "models": self.models,
                "anchor": self.anchor,
                "base": self.base,
                "method": self.method,
                "parameters": self.parameters,
                "counts": self.counts(),
                "donor_counts": {str(k): v for k, v in self.donor_counts().items()},
                "layers": [asdict(layer) for layer in self.layers],
                "keys": [asdict(k) for k in self.keys],
                "donor_keys": [asdict(d) for d in self.donor_keys],
                "hints": self.hints,
                "warnings": self.warnings,
                "notes": self.notes,
                "merged_share": self.merged_share,
            }
        )


#: Below this share of the anchor's floating-point values merged, a merge is refused unless
#: allowed (``--allow-few``): its output would be (nearly) the anchor.
FEW_MERGED = 0.1

#: (a merged key's plan, the donors that hold it): what rules 3 and 4 work on.
Eligible = tuple[KeyPlan, list[int]]


def build_plan(
    metas: Sequence[Mapping[str, TensorMeta]],
    method: MergeMethod,
    anchor: int = 0,
    labels: Sequence[str] | None = None,
    renames: Mapping[int, Sequence[RenameRule]] | None = None,
    model_weights: Sequence[float | None] | None = None,
    overrides: Sequence[Override] = (),
    base: Mapping[str, TensorMeta] | None = None,
    base_label: str | None = None,
) -> MergePlan:
    """Classify every key, group eligible keys into layers and weigh them (docs/method.md 1-4)."""
    num_models = len(metas)
    labels = list(labels) if labels is not None else [f"model{i}" for i in range(num_models)]
    model_weights = list(model_weights) if model_weights is not None else [None] * num_models
    donor_maps, collisions = rename_donor_keys(metas, anchor, renames or {})
    keys, eligible, matched = classify_anchor_keys(metas, anchor, donor_maps, labels)
    layers = group_into_layers(eligible)
    weigh_keys(eligible, layers, method, anchor, model_weights, overrides, base, metas[anchor], donor_maps)
    settle_layer_actions(layers, keys)
    result = MergePlan(
        models=labels,
        anchor=anchor,
        method=method.name,
        parameters=method.params.model_dump(mode="json"),
        keys=keys,
        layers=list(layers.values()),
        donor_keys=report_donor_keys(metas, donor_maps, matched, collisions),
        base=base_label,
    )
    result.hints = rename_hints(result, metas)
    result.merged_share = merged_share(keys, metas[anchor])
    result.warnings = plan_warnings(eligible) + partial_module_warnings(keys)
    return result


def merged_share(keys: Sequence[KeyPlan], anchor_metas: Mapping[str, TensorMeta]) -> float:
    """The share of the anchor's floating-point values that the merge changes (0 to 1)."""
    total = merged = 0
    for k in keys:
        meta = anchor_metas[k.key]
        if not meta.is_float:
            continue
        size = math.prod(meta.shape)
        total += size
        if k.action == Action.MERGED:
            merged += size
    return merged / total if total else 0.0


def partial_module_warnings(keys: Sequence[KeyPlan], shown: int = 5) -> list[str]:
    """Modules (a layer's parent: an attention block, an MLP) of which some layers are merged and
    others keep the anchor's values because no donor holds them in that shape."""
    merged: dict[str, set[str]] = {}
    unmerged: dict[str, set[str]] = {}
    for k in keys:
        layer = layer_of(k.key)
        module = layer_of(layer) if "." in layer else layer
        if k.action == Action.MERGED:
            merged.setdefault(module, set()).add(layer.rpartition(".")[2])
        elif k.action in (Action.ANCHOR_ONLY, Action.SHAPE_MISMATCH):
            unmerged.setdefault(module, set()).add(layer.rpartition(".")[2])
    partial = [m for m in merged if m in unmerged]
    warnings = _part_of_top_module(keys)
    if not partial:
        return warnings
    listed = ", ".join(
        f"{m} (merged {'/'.join(sorted(merged[m]))}; kept {'/'.join(sorted(unmerged[m] - merged[m]) or ['some keys'])})"
        for m in partial[:shown]
    )
    more = f" and {len(partial) - shown} more" if len(partial) > shown else ""
    return [
        f"{len(partial)} modules are merged only in part, the rest keeping the anchor's values: {listed}{more}. "
        "A module half from a blend and half from the anchor may not work as either; check the layouts "
        "(see the shape mismatches and anchor-only keys)",
        *warnings,
    ]


def _part_of_top_module(keys: Sequence[KeyPlan]) -> list[str]:
    """Top-level modules (an encoder, a decode head) of which only a few keys are merged: e.g. two
    different heads that happen to share a classifier's name and shape."""
    merged: dict[str, list[str]] = {}
    total: dict[str, int] = {}
    for k in keys:
        if k.action == Action.NON_FLOAT:
            continue
        top = k.key.split(".", 1)[0]
        total[top] = total.get(top, 0) + 1
        if k.action == Action.MERGED:
            merged.setdefault(top, []).append(layer_of(k.key))
    out = []
    for top, layers in merged.items():
        if len(layers) < 0.5 * total[top]:
            shown = ", ".join(dict.fromkeys(layers[:4])) + (", ..." if len(layers) > 4 else "")
            out.append(
                f"{top}: only {len(layers)} of its {total[top]} keys are merged ({shown}); "
                "the rest differ in the donors, so these layers are blended while what feeds them is not - "
                f"pin them to the anchor (--keep '^{top}\\.') unless the modules really are the same"
            )
    return out


def rename_donor_keys(
    metas: Sequence[Mapping[str, TensorMeta]], anchor: int, renames: Mapping[int, Sequence[RenameRule]]
) -> tuple[dict[int, dict[str, str]], list[DonorKey]]:
    """Rule 1: every donor's keys renamed onto the anchor's names.

    Returns, per donor model, renamed key -> original key, and the donor keys that were
    renamed onto a name an earlier key of the same donor already took (only the first is used).
    """
    donor_maps: dict[int, dict[str, str]] = {}
    collisions: list[DonorKey] = []
    for i, model_metas in enumerate(metas):
        if i == anchor:
            continue
        mapping: dict[str, str] = {}
        for key in model_metas:
            new = rename(key, renames.get(i, ()))
            if new in mapping:
                note = f"renamed onto {new!r} as {mapping[new]!r} was; only the first is used"
                collisions.append(DonorKey(i, key, new, Action.DONOR_UNMATCHED, note))
                continue
            mapping[new] = key
        donor_maps[i] = mapping
    return donor_maps, collisions


def classify_anchor_keys(
    metas: Sequence[Mapping[str, TensorMeta]],
    anchor: int,
    donor_maps: Mapping[int, Mapping[str, str]],
    labels: Sequence[str],
) -> tuple[list[KeyPlan], list[Eligible], dict[int, dict[str, Action]]]:
    """Rule 2: which anchor keys are eligible (float, and a donor holds one of the same shape and
    float dtype), and the fate of every other anchor key and of every matched donor key.

    Returns every anchor key's plan in the anchor's order, the eligible ones with the donors
    that hold them, and per donor its matched keys' actions.
    """
    keys: list[KeyPlan] = []
    eligible: list[Eligible] = []
    matched: dict[int, dict[str, Action]] = {i: {} for i in donor_maps}
    for key, meta in metas[anchor].items():
        holders, mismatched = _match_donors(key, meta, metas, donor_maps, labels, matched)
        plan = _classify_anchor_key(key, meta, holders, mismatched)
        keys.append(plan)
        if plan.action == Action.MERGED:
            eligible.append((plan, holders))
    return keys, eligible, matched


def _match_donors(
    key: str,
    meta: TensorMeta,
    metas: Sequence[Mapping[str, TensorMeta]],
    donor_maps: Mapping[int, Mapping[str, str]],
    labels: Sequence[str],
    matched: dict[int, dict[str, Action]],
) -> tuple[list[int], list[str]]:
    """The donors holding a mergeable tensor for anchor ``key``, and the shapes of those whose
    tensor of that name has another shape; records each donor key's action in ``matched``."""
    holders: list[int] = []
    mismatched: list[str] = []
    for i, mapping in donor_maps.items():
        donor_key = mapping.get(key)
        if donor_key is None:
            continue
        donor_meta = metas[i][donor_key]
        if donor_meta.shape != meta.shape:
            matched[i][donor_key] = Action.SHAPE_MISMATCH
            mismatched.append(f"{labels[i]} {list(donor_meta.shape)}")
        elif not (meta.is_float and donor_meta.is_float):
            matched[i][donor_key] = Action.NON_FLOAT
        else:
            matched[i][donor_key] = Action.MERGED
            holders.append(i)
    return holders, mismatched


def _classify_anchor_key(key: str, meta: TensorMeta, holders: list[int], mismatched: list[str]) -> KeyPlan:
    if not meta.is_float:
        return KeyPlan(key, Action.NON_FLOAT, note=f"dtype {_dtype_name(meta)}: anchor's value")
    if holders:
        return KeyPlan(key, Action.MERGED, layer=layer_of(key))
    if mismatched:
        return KeyPlan(key, Action.SHAPE_MISMATCH, note=f"anchor {list(meta.shape)} vs " + ", ".join(mismatched))
    return KeyPlan(key, Action.ANCHOR_ONLY)


def report_donor_keys(
    metas: Sequence[Mapping[str, TensorMeta]],
    donor_maps: Mapping[int, Mapping[str, str]],
    matched: Mapping[int, Mapping[str, Action]],
    collisions: Sequence[DonorKey],
) -> list[DonorKey]:
    """Every donor key's fate, in donor then file order: its matched action, or donor-unmatched
    when no anchor key has its (renamed) name."""
    donor_keys = list(collisions)
    for i, mapping in donor_maps.items():
        for new, key in mapping.items():
            donor_keys.append(DonorKey(i, key, new, matched[i].get(key, Action.DONOR_UNMATCHED)))
    position = {i: {key: n for n, key in enumerate(metas[i])} for i in {d.model for d in donor_keys}}
    donor_keys.sort(key=lambda d: (d.model, position[d.model][d.key]))
    return donor_keys


def group_into_layers(eligible: Sequence[Eligible]) -> dict[str, LayerPlan]:
    """Rule 3: layers of eligible keys, in order of first appearance in the anchor, each at its
    normalised depth; every eligible key takes its layer's depth."""
    layer_order: dict[str, int] = {}
    for plan, _ in eligible:
        layer_order.setdefault(plan.layer, len(layer_order))
    num_layers = len(layer_order)
    layers = {
        name: LayerPlan(idx, name, normalised_depth(idx, num_layers), (), Action.MERGED)
        for name, idx in layer_order.items()
    }
    for plan, _ in eligible:
        layer = layers[plan.layer]
        plan.depth = layer.depth
        layer.keys.append(plan.key)
    return layers


def weigh_keys(
    eligible: Sequence[Eligible],
    layers: Mapping[str, LayerPlan],
    method: MergeMethod,
    anchor: int,
    model_weights: Sequence[float | None],
    overrides: Sequence[Override],
    base: Mapping[str, TensorMeta] | None,
    anchor_metas: Mapping[str, TensorMeta],
    donor_maps: Mapping[int, Mapping[str, str]],
) -> None:
    """Rule 4: every model's weight per layer (the method's at the layer's depth, or an
    override's), renormalised per key over the models that hold it. A layer shows the
    weights of its first key. Keys an override keeps, the base lacks, or whose holders'
    weights sum to 0 keep the anchor's value."""
    for plan, holders in eligible:
        layer = layers[plan.layer]
        override = next((o for o in overrides if o.matches(plan.key)), None)
        if override is not None and override.weights is not None:
            full = list(override.weights)
            plan.note = f"weights from override {override.pattern!r}"
        else:
            full = method.model_weights(layer.depth, anchor, model_weights)
        if not layer.weights:
            layer.weights = tuple(full)
        present = [anchor, *holders]
        sources = tuple((i, key_in(i, plan.key, anchor, donor_maps)) for i in present)
        base_meta = base.get(plan.key) if base is not None else None
        not_in_base = base is not None and (base_meta is None or base_meta.shape != anchor_metas[plan.key].shape)
        _weigh_key(plan, sources, full, method.normalise_weights, override, not_in_base)


def _weigh_key(
    plan: KeyPlan,
    sources: tuple[tuple[int, str], ...],
    full: Sequence[float],
    normalise: bool,
    override: Override | None,
    not_in_base: bool,
) -> None:
    """One eligible key's fate: kept, not in the base, or merged from ``sources`` (the anchor,
    then the donors holding it) with their weights of ``full``, renormalised if ``normalise``."""
    if override is not None and override.keep:
        plan.action = Action.KEPT
        plan.note = f"kept from the anchor by override {override.pattern!r}"
        return
    if not_in_base:
        plan.action = Action.NOT_IN_BASE
        plan.note = "the base has no tensor of this name and shape: anchor's value"
        return
    weights = [full[i] for i, _ in sources]
    if normalise:
        total = sum(weights)
        if total <= 0:
            plan.action = Action.KEPT
            plan.note = "weights of the models holding this key sum to 0: anchor's value"
            return
        weights = [w / total for w in weights]
    plan.sources = sources
    plan.weights = tuple(weights)


def settle_layer_actions(layers: Mapping[str, LayerPlan], keys: Sequence[KeyPlan]) -> None:
    """A layer is merged if any of its keys is; otherwise it shows the first of its keys' actions in
    :class:`Action`'s order (a fixed order: a set's iteration order would depend on the hash seed)."""
    order = list(Action)
    actions: dict[str, set[Action]] = {}
    for k in keys:
        actions.setdefault(k.layer, set()).add(k.action)
    for layer in layers.values():
        layer.action = min(actions[layer.name], key=order.index)


def plan_warnings(eligible: Sequence[Eligible]) -> list[str]:
    if eligible:
        return []
    return ["no key is shared by the anchor and any donor: the output would be the anchor; check --rename (see hints)"]


def key_in(model: int, anchor_key: str, anchor: int, donor_maps: Mapping[int, Mapping[str, str]]) -> str:
    return anchor_key if model == anchor else donor_maps[model][anchor_key]


def rename_hints(plan: MergePlan, metas: Sequence[Mapping[str, TensorMeta]] | None = None) -> list[str]:
    """Suggest a prefix rename for each donor whose unmatched keys would then match.

    With ``metas``, a rename under which any key would land on an anchor key of another shape
    is not suggested: it would only turn unmatched keys into shape mismatches.
    """
    hints = []
    unmatched_anchor = [k.key for k in plan.keys if k.action == Action.ANCHOR_ONLY]
    for i in range(len(plan.models)):
        if i == plan.anchor:
            continue
        unmatched = [d.renamed for d in plan.donor_keys if d.model == i and d.action == Action.DONOR_UNMATCHED]
        if not unmatched or not unmatched_anchor:
            continue
        found = common_prefix_rename(unmatched, unmatched_anchor)
        if found is None:
            continue
        src, dst, count = found
        if metas is not None:
            count = _same_shape_matches(plan, metas, i, src, dst)
            if count is None:
                continue
        hints.append(
            f"{count} unmatched keys of model {i} ({plan.models[i]}) would match the anchor's with "
            f"{suggest_rename_flag(i, src, dst)}"
        )
    return hints


def _same_shape_matches(
    plan: MergePlan, metas: Sequence[Mapping[str, TensorMeta]], model: int, src: str, dst: str
) -> int | None:
    """How many of donor ``model``'s unmatched keys the prefix rename src -> dst lands on an
    unmatched anchor key of the same shape; None when any lands on one of another shape."""
    anchor_metas = metas[plan.anchor]
    open_keys = {k.key for k in plan.keys if k.action == Action.ANCHOR_ONLY}
    count = 0
    for d in plan.donor_keys:
        if d.model != model or d.action != Action.DONOR_UNMATCHED or not d.renamed.startswith(src):
            continue
        target = dst + d.renamed[len(src) :]
        if target not in open_keys:
            continue
        if anchor_metas[target].shape != metas[model][d.key].shape:
            return None
        count += 1
    return count or None


def _dtype_name(meta: TensorMeta) -> str:
    return str(meta.dtype).removeprefix("torch.")

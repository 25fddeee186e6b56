"""Every key of every model is classified and grouped into layers as docs/method.md defines."""

from __future__ import annotations

import pytest
import torch
from tiny_models import tiny_state

from segmerge import api
from segmerge.merging.keys import common_prefix_rename, layer_of
from segmerge.merging.plan import Action


def test_layer_is_the_module_path():
    assert layer_of("a.block.3.mlp.fc1.weight") == "a.block.3.mlp.fc1"
    assert layer_of("cls_token") == "cls_token"


def test_layers_follow_the_anchors_order_and_depth_spans_0_to_1():
    a, b = tiny_state(1), tiny_state(2)
    p = api.plan([a, b])
    names = [layer.name for layer in p.layers]
    assert names == ["stem.conv", "stem.bn", "block.0.fc1", "block.0.fc2", "block.1.fc1", "block.1.fc2", "head"]
    assert [layer.depth for layer in p.layers] == [j / 6 for j in range(7)]


def test_every_key_is_classified():
    a = tiny_state(1)
    b = tiny_state(2, head_classes=5)
    b["extra.weight"] = torch.zeros(2)
    del b["block.1.fc2.weight"]
    p = api.plan([a, b])
    actions = {k.key: k.action for k in p.keys}
    assert actions["stem.conv.weight"] == Action.MERGED
    assert actions["stem.bn.num_batches_tracked"] == Action.NON_FLOAT
    assert actions["head.weight"] == Action.SHAPE_MISMATCH
    assert actions["block.1.fc2.weight"] == Action.ANCHOR_ONLY
    donor = {d.key: d.action for d in p.donor_keys}
    assert donor["extra.weight"] == Action.DONOR_UNMATCHED
    assert donor["head.weight"] == Action.SHAPE_MISMATCH
    assert donor["stem.conv.weight"] == Action.MERGED
    assert len(p.keys) == len(a)
    assert len(p.donor_keys) == len(b)


def test_only_eligible_keys_make_layers():
    a = tiny_state(1)
    b = tiny_state(2, head_classes=5)
    p = api.plan([a, b])
    assert "head" not in [layer.name for layer in p.layers]  # head.weight and head.bias both mismatch
    assert p.layers[-1].depth == 1.0


def test_rename_maps_a_donor_onto_the_anchor_and_heads_stay_whole():
    a = tiny_state(1, prefix="segformer.encoder.")
    b = tiny_state(2, prefix="backbone.", head_classes=7)
    p = api.plan([a, b])
    assert p.counts().get("merged", 0) == 0
    assert any("--rename '1:^backbone\\.=segformer.encoder.'" in h for h in p.hints)
    p = api.plan([a, b], rename={1: [(r"^backbone\.", "segformer.encoder.")]})
    actions = {k.key: k.action for k in p.keys}
    assert actions["segformer.encoder.stem.conv.weight"] == Action.MERGED
    assert actions["head.weight"] == Action.SHAPE_MISMATCH
    out = api.merge([a, b], rename={1: [(r"^backbone\.", "segformer.encoder.")]}, ramp_start=1.0)
    assert torch.equal(out["head.weight"], a["head.weight"])
    expected = (a["segformer.encoder.stem.conv.weight"] + b["backbone.stem.conv.weight"]) / 2
    assert torch.allclose(out["segformer.encoder.stem.conv.weight"], expected, atol=1e-6)


def test_prefix_hint_finds_the_common_rename():
    donor = ["backbone.block1.0.attn.q.weight", "backbone.block1.0.attn.q.bias", "backbone.norm1.weight"]
    anchor = [
        "model.encoder.block1.0.attn.q.weight",
        "model.encoder.block1.0.attn.q.bias",
        "model.encoder.norm1.weight",
    ]
    assert common_prefix_rename(donor, anchor) == ("backbone.", "model.encoder.", 3)


def test_plan_json_is_serialisable(family):
    import json

    _, models = family
    d = api.plan(models).to_dict()
    json.dumps(d)
    assert d["counts"]["merged"] == len(models[0]) - 1
    assert d["layers"][0]["weights"] == pytest.approx([1 / 3, 1 / 3, 1 / 3])


def test_unrelated_layers_are_warned_about():
    a = tiny_state(1)
    b = {k: v.clone() for k, v in a.items()}
    b["block.1.fc1.weight"] = torch.randn(8, 4, generator=torch.Generator().manual_seed(9))
    p = api.plan([a, b], check_relatedness=True)
    assert any("block.1.fc1" in w and "unrelated" in w for w in p.warnings)
    p = api.plan([a, {k: v.clone() for k, v in a.items()}], check_relatedness=True)
    assert not p.warnings


def test_a_layer_without_merged_keys_shows_one_action_whatever_the_hash_seed():
    from segmerge.merging.plan import Action, KeyPlan, LayerPlan, settle_layer_actions

    for actions in ([Action.NOT_IN_BASE, Action.KEPT], [Action.KEPT, Action.NOT_IN_BASE]):
        layers = {"l": LayerPlan(0, "l", 0.0, (0.5, 0.5), Action.MERGED)}
        settle_layer_actions(layers, [KeyPlan(f"l.{i}", a, layer="l") for i, a in enumerate(actions)])
        assert layers["l"].action == Action.KEPT
    layers = {"l": LayerPlan(0, "l", 0.0, (0.5, 0.5), Action.KEPT)}
    settle_layer_actions(layers, [KeyPlan("l.w", Action.KEPT, layer="l"), KeyPlan("l.b", Action.MERGED, layer="l")])
    assert layers["l"].action == Action.MERGED

"""Properties of the layer-wise rule (docs/method.md rules 2-6) on generated models."""

from __future__ import annotations

import pytest
import torch
from tiny_models import tiny_state

from segmerge import api
from segmerge.merging.plan import Action


def merged(models, **options):
    return api.merge(models, **options)


def test_identical_models_merge_to_the_model():
    m = tiny_state(1)
    out = merged([m, {k: v.clone() for k, v in m.items()}, {k: v.clone() for k, v in m.items()}])
    for k, v in m.items():
        assert torch.allclose(out[k], v, atol=1e-6), k
        assert out[k].dtype == v.dtype


def test_ramp_start_one_is_the_plain_average(family):
    _, models = family
    out = merged(models, ramp_start=1.0)
    for k, v in out.items():
        if v.is_floating_point() and not k.endswith("running_var"):
            expected = sum(m[k] for m in models) / 3
            assert torch.allclose(v, expected, atol=1e-6), k


def test_linear_without_weights_is_the_uniform_soup(family):
    _, models = family
    soup = merged(models, method="linear")
    layerwise_flat = merged(models, ramp_start=1.0)
    for k in soup:
        assert torch.allclose(soup[k], layerwise_flat[k], atol=1e-6)


def test_default_gives_the_anchor_the_end_weight_at_the_last_layer_and_unifies_the_first(family):
    _, models = family
    out = merged(models, anchor=1)
    last = 0.75 * models[1]["head.weight"] + 0.125 * (models[0]["head.weight"] + models[2]["head.weight"])
    assert torch.allclose(out["head.weight"], last, atol=1e-6)  # depth 1, default end weight 0.75
    assert torch.equal(merged(models, anchor=1, end_weight=1.0)["head.weight"], models[1]["head.weight"])
    first = sum(m["stem.conv.weight"] for m in models) / 3
    assert torch.allclose(out["stem.conv.weight"], first, atol=1e-6)


def test_middle_layer_follows_the_schedule(family):
    _, models = family
    p = api.plan(models, anchor=0, ramp_start=0.5, end_weight=1.0)
    layer = next(layer for layer in p.layers if layer.name == "block.1.fc1")
    t = layer.depth
    h = 1 / 3 + (1 - 1 / 3) * (t - 0.5) / 0.5
    assert layer.weights == pytest.approx((h, (1 - h) / 2, (1 - h) / 2))
    out = merged(models, end_weight=1.0)
    expected = h * models[0]["block.1.fc1.weight"] + (1 - h) / 2 * (
        models[1]["block.1.fc1.weight"] + models[2]["block.1.fc1.weight"]
    )
    assert torch.allclose(out["block.1.fc1.weight"], expected, atol=1e-6)


def test_donor_order_does_not_matter(family):
    _, (a, b, c) = family
    one = merged([a, b, c], end_weight=0.8)
    two = merged([a, c, b], end_weight=0.8)
    for k in one:
        assert torch.allclose(one[k].double(), two[k].double(), atol=1e-6), k


def test_per_key_weights_sum_to_one(family):
    _, models = family
    p = api.plan(models, ramp_start=0.2, end_weight=0.7, ramp="cosine")
    for k in p.keys:
        if k.action == Action.MERGED:
            assert sum(k.weights) == pytest.approx(1.0)


def test_running_var_is_moment_matched():
    a, b = tiny_state(1), tiny_state(2)
    out = merged([a, b], method="linear", weights=[0.25, 0.75])
    mu = 0.25 * a["stem.bn.running_mean"] + 0.75 * b["stem.bn.running_mean"]
    var = 0.25 * (a["stem.bn.running_var"] + (a["stem.bn.running_mean"] - mu) ** 2) + 0.75 * (
        b["stem.bn.running_var"] + (b["stem.bn.running_mean"] - mu) ** 2
    )
    assert torch.allclose(out["stem.bn.running_mean"], mu, atol=1e-6)
    assert torch.allclose(out["stem.bn.running_var"], var, atol=1e-6)
    # ... which is the variance of the mixture, checked by sampling it directly.
    g = torch.Generator().manual_seed(0)
    n = 400_000
    pick_b = torch.rand(n, generator=g) < 0.75
    samples = torch.where(
        pick_b[:, None],
        b["stem.bn.running_mean"] + b["stem.bn.running_var"].sqrt() * torch.randn(n, 4, generator=g),
        a["stem.bn.running_mean"] + a["stem.bn.running_var"].sqrt() * torch.randn(n, 4, generator=g),
    )
    assert torch.allclose(samples.var(0), var, rtol=0.02)


def test_integer_tensors_come_from_the_anchor(family):
    _, models = family
    for anchor in range(3):
        out = merged(models, anchor=anchor)
        assert torch.equal(out["stem.bn.num_batches_tracked"], models[anchor]["stem.bn.num_batches_tracked"])


def test_weights_renormalise_over_the_models_holding_a_key(family):
    _, (a, b, c) = family
    c = {k: v for k, v in c.items() if not k.startswith("stem.conv")}
    out = merged([a, b, c], ramp_start=1.0)
    assert torch.allclose(out["stem.conv.weight"], (a["stem.conv.weight"] + b["stem.conv.weight"]) / 2, atol=1e-6)


def test_head_with_other_classes_stays_the_anchors():
    a, b = tiny_state(1, head_classes=3), tiny_state(2, head_classes=5)
    p = api.plan([a, b])
    assert {k.key: k.action for k in p.keys}["head.weight"] == Action.SHAPE_MISMATCH
    out = merged([a, b], ramp_start=1.0)
    assert torch.equal(out["head.weight"], a["head.weight"])


def test_half_precision_accumulates_in_float32_and_keeps_the_anchor_dtype():
    a = {"x.weight": torch.full((1000,), 1.0, dtype=torch.float16)}
    b = {"x.weight": torch.full((1000,), 1.0 + 2**-11, dtype=torch.float32)}
    out = merged([a, b], method="linear")
    assert out["x.weight"].dtype == torch.float16
    assert torch.allclose(out["x.weight"].float(), torch.full((1000,), 1.0 + 2**-12), atol=1e-3)


def test_float64_inputs_accumulate_in_float64():
    a = {"x.weight": torch.tensor([1.0, 2.0], dtype=torch.float64)}
    b = {"x.weight": torch.tensor([1.0 + 1e-12, 2.0], dtype=torch.float64)}
    out = merged([a, b], method="linear")
    assert out["x.weight"][0].item() == pytest.approx(1.0 + 5e-13, abs=1e-15)


def test_keep_override_pins_keys_to_the_anchor(family):
    _, models = family
    out = merged(models, ramp_start=1.0, keep=[r"^stem\."])
    assert torch.equal(out["stem.conv.weight"], models[0]["stem.conv.weight"])
    assert not torch.equal(out["block.0.fc1.weight"], models[0]["block.0.fc1.weight"])


def test_explicit_layer_weights_override(family):
    _, models = family
    out = merged(models, overrides=[{"pattern": r"^block\.0\.", "weights": [0, 1, 0]}])
    assert torch.allclose(out["block.0.fc1.weight"], models[1]["block.0.fc1.weight"])


def test_nan_in_a_tensor_to_merge_is_an_error_naming_the_key(family):
    _, models = family
    models[1]["block.0.fc2.weight"][0, 0] = float("nan")
    with pytest.raises(Exception, match=r"block\.0\.fc2\.weight.*NaN"):
        merged(models)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_input_is_refused_even_with_weight_zero(family, bad):
    """The merge checks the weighted sum, not each input: an input's NaN/Inf must reach the sum
    whatever its weight, and the error must still name that input and key."""
    _, models = family
    models[0]["block.0.fc1.weight"][0, 0] = bad
    models[2]["block.0.fc1.weight"][0, 1] = -bad
    with pytest.raises(Exception, match=r"model0: tensor 'block\.0\.fc1\.weight' holds 1 NaN/Inf"):
        merged(models, method="linear", overrides=[{"pattern": r"^block\.0\.", "weights": [0, 1, 0]}])


def test_finite_inputs_whose_sum_overflows_are_merged():
    """As before the sum was checked instead of each input: finite inputs are accepted even
    when their weighted sum overflows."""
    from segmerge.merging.execute import streamed_weighted_sum
    from segmerge.merging.plan import KeyPlan
    from segmerge.merging.sources import StateDictSource

    sources = [StateDictSource({"w": torch.full((2,), 3e38)}, f"m{i}") for i in range(2)]
    plan = KeyPlan("w", Action.MERGED, sources=((0, "w"), (1, "w")), weights=(1.0, 1.0))
    out = streamed_weighted_sum(plan, sources, [s.metas() for s in sources])
    assert torch.isinf(out).all()

"""The task-vector family against direct computations on hand-built tensors."""

from __future__ import annotations

import pytest
import torch

from segmerge import api
from segmerge.errors import RecipeError
from segmerge.merging.methods.task_vectors import sign_consensus, trim_to_top


def test_task_arithmetic_adds_scaled_task_vectors(family):
    from segmerge.merging.methods import build_method

    base, models = family

    m = build_method("task-arithmetic", {"scaling": 0.5})
    k = "block.0.fc1.weight"
    got = m.combine([x[k] for x in models], [1.0, 1.0, 1.0], base[k], k)
    expected = base[k] + 0.5 * sum(x[k] - base[k] for x in models)
    assert torch.allclose(got, expected, atol=1e-6)


def test_trim_keeps_the_largest_magnitudes():
    tau = torch.tensor([0.1, -3.0, 0.5, 2.0, -0.2])
    assert trim_to_top(tau, 0.4).tolist() == [0.0, -3.0, 0.0, 2.0, 0.0]


def test_ties_elects_signs_and_averages_the_agreeing_entries():
    t1 = torch.tensor([1.0, -2.0, 0.0, 3.0])
    t2 = torch.tensor([3.0, 1.0, 0.0, -1.0])
    out = sign_consensus([t1, t2], [1.0, 1.0])
    # entry 0: both +, mean 2; entry 1: sum -1 -> '-', only t1 agrees: -2; entry 3: sum 2 -> '+': 3
    assert out.tolist() == [2.0, -2.0, 0.0, 3.0]


def test_dare_with_no_drop_is_task_arithmetic_and_is_seeded(family):
    from segmerge.merging.methods import build_method

    base, models = family
    k = "block.0.fc1.weight"
    tensors = [x[k] for x in models]
    dare0 = build_method("dare", {"drop_rate": 0.0, "scaling": 0.3}).combine(tensors, [1, 1, 1], base[k], k)
    ta = build_method("task-arithmetic", {"scaling": 0.3}).combine(tensors, [1, 1, 1], base[k], k)
    assert torch.allclose(dare0, ta, atol=1e-6)
    d1 = build_method("dare", {"drop_rate": 0.5}, seed=1).combine(tensors, [1, 1, 1], base[k], k)
    d2 = build_method("dare", {"drop_rate": 0.5}, seed=1).combine(tensors, [1, 1, 1], base[k], k)
    d3 = build_method("dare", {"drop_rate": 0.5}, seed=2).combine(tensors, [1, 1, 1], base[k], k)
    assert torch.equal(d1, d2) and not torch.equal(d1, d3)


def test_dare_rescaling_keeps_the_expected_task_vector():
    from segmerge.merging.methods import build_method

    base = torch.zeros(200_000)
    model = torch.ones(200_000)
    out = build_method("dare", {"drop_rate": 0.9, "scaling": 1.0}).combine([model], [1.0], base, "k")
    assert out.mean().item() == pytest.approx(1.0, rel=0.05)
    assert (out == 0).float().mean().item() == pytest.approx(0.9, abs=0.01)


@pytest.mark.parametrize("method", ["task-arithmetic", "ties", "dare"])
def test_task_vector_methods_need_a_base(method, family):
    _, models = family
    with pytest.raises(RecipeError, match="needs a base"):
        api.plan(models, method=method)


def test_unknown_parameter_is_named(family):
    _, models = family
    with pytest.raises(RecipeError, match="ramp_start"):
        api.plan(models, method="linear", ramp_start=0.3)

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from segmerge.merging.schedule import anchor_weight, layer_weights, normalised_depth


def test_depth_spans_zero_to_one():
    assert [normalised_depth(j, 5) for j in range(5)] == [0, 0.25, 0.5, 0.75, 1.0]
    assert normalised_depth(0, 1) == 0.0


@pytest.mark.parametrize("ramp", ["linear", "cosine", "step"])
def test_anchor_weight_is_uniform_before_the_ramp_and_end_weight_at_the_last_layer(ramp):
    for t in (0.0, 0.2, 0.5):
        assert anchor_weight(t, 3, ramp_start=0.5, end_weight=0.9, ramp=ramp) == pytest.approx(1 / 3)
    assert anchor_weight(1.0, 3, ramp_start=0.5, end_weight=0.9, ramp=ramp) == pytest.approx(0.9)


def test_ramp_shapes_at_midpoint():
    # Halfway up the ramp: linear is halfway, cosine too (symmetric), step is already at the end.
    assert anchor_weight(0.75, 2, 0.5, 1.0, "linear") == pytest.approx(0.75)
    assert anchor_weight(0.75, 2, 0.5, 1.0, "cosine") == pytest.approx(0.75)
    assert anchor_weight(0.6, 2, 0.5, 1.0, "cosine") < anchor_weight(0.6, 2, 0.5, 1.0, "linear")
    assert anchor_weight(0.51, 2, 0.5, 1.0, "step") == 1.0


def test_ramp_start_one_is_the_uniform_soup():
    assert all(anchor_weight(t, 4, ramp_start=1.0) == 0.25 for t in (0, 0.5, 1))


@given(
    m=st.integers(2, 6),
    t=st.floats(0, 1),
    t0=st.floats(0, 1),
    h=st.floats(0, 1),
    ramp=st.sampled_from(["linear", "cosine", "step"]),
    anchor=st.integers(0, 5),
)
def test_weights_sum_to_one_and_donors_share_equally(m, t, t0, h, ramp, anchor):
    anchor %= m
    w = layer_weights(t, m, anchor, None, t0, h, ramp)
    assert math.isclose(sum(w), 1.0, abs_tol=1e-12)
    donors = [w[i] for i in range(m) if i != anchor]
    assert max(donors) - min(donors) < 1e-12


def test_donor_shares_split_the_rest():
    w = layer_weights(1.0, 3, anchor=0, donor_shares=[None, 1.0, 3.0], ramp_start=0.5, end_weight=0.6)
    assert w == pytest.approx([0.6, 0.1, 0.3])

"""TIES and DARE against mergekit's definitions, the reference users compare against.

The reference is written out here from mergekit 0.1.x (``merge_methods/generalized_task_arithmetic.py``
and ``sparsify.py``) in a few lines of torch, without depending on mergekit: task vectors from the
base; magnitude sparsification keeping ``int(density * numel)`` entries by ``argsort`` of |value|;
DARE's Bernoulli masks rescaled by 1 / density; a sign election on the weighted task vectors (``sum``
or ``count``, zero counting as +); normalisation by the sum of the agreeing weights where asked.
segmerge must give the same tensors to float tolerance on the same inputs (for DARE, the same masks).
"""

from __future__ import annotations

import pytest
import torch
from tiny_models import shared_start_family

from segmerge.merging.methods import build_method
from segmerge.merging.methods.task_vectors import _seed_for, dare_mask


def reference_magnitude(delta: torch.Tensor, density: float) -> torch.Tensor:
    if density >= 1:
        return delta
    k = int(density * delta.numel())
    assert k > 0, "mergekit refuses to zero a whole tensor"
    mask = torch.zeros_like(delta)
    mask.view(-1)[torch.argsort(delta.abs().view(-1).float(), descending=True)[:k]] = 1
    return delta * mask


def reference(base, models, weights, *, density=None, masks=None, keep=None, consensus=None, normalize=False):
    """mergekit's generalized task arithmetic: ties = (magnitude, sum, normalize); dare_linear =
    (random, no consensus, no normalize); dare_ties = (random, sum, no normalize)."""
    deltas = [m - base for m in models]
    if density is not None:
        deltas = [reference_magnitude(d, density) for d in deltas]
    if masks is not None:
        deltas = [d * m / keep for d, m in zip(deltas, masks, strict=True)]
    deltas = torch.stack(deltas)
    w = torch.tensor(weights, dtype=deltas.dtype)
    while w.dim() < deltas.dim():
        w = w.unsqueeze(-1)
    weighted = deltas * w
    if consensus:
        sign = weighted.sign()
        votes = weighted.sum(0) if consensus == "sum" else sign.sum(0)
        mask = sign == (votes >= 0).to(weighted.dtype) * 2 - 1
        mixed = (weighted * mask).sum(0)
        divisor = (w * mask).sum(0)
        divisor[divisor == 0] = 1
    else:
        mixed = weighted.sum(0)
        divisor = w.sum(0)
        divisor[divisor.abs() < 1e-8] = 1
    if normalize:
        mixed = mixed / divisor
    return base + mixed


SHAPES = [(1,), (5,), (7,), (32,), (64,), (3, 7), (16, 24), (4, 3, 3, 3)]


def cases(seed: int, integer: bool = False):
    """Random inputs: a base and 2-4 models, as float32; ``integer`` task vectors make many
    magnitudes tie (at the trimming threshold too) and weighted sums cancel to exactly zero."""
    g = torch.Generator().manual_seed(seed)
    for shape in SHAPES:
        n = int(torch.randint(2, 5, (1,), generator=g))
        base = torch.randn(shape, generator=g)
        if integer:
            base = base.round()
            models = [base + torch.randint(-2, 3, shape, generator=g).float() for _ in range(n)]
            weights = [1.0] * n
        else:
            models = [base + torch.randn(shape, generator=g) for _ in range(n)]
            weights = [float(w) for w in torch.rand(n, generator=g) * 2 - 0.5]  # a negative weight at times
        yield base, models, weights


@pytest.mark.parametrize("integer", [False, True])
@pytest.mark.parametrize("election", ["sum", "count"])
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("density", [0.1, 0.2, 0.3, 0.5, 0.9, 1.0])
def test_ties_is_mergekits(density, normalize, election, integer):
    method = build_method("ties", {"density": density, "scaling": 1.0, "election": election, "normalize": normalize})
    for base, models, weights in cases(int(density * 100) + 7 * integer, integer):
        if int(density * base.numel()) == 0 and density < 1:
            continue  # mergekit refuses these (see the next test)
        got = method.combine(models, weights, base, "k")
        want = reference(base, models, weights, density=density, consensus=election, normalize=normalize)
        assert got.dtype == torch.float32 and got.shape == base.shape
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6, msg=f"{tuple(base.shape)}")


def test_ties_counts_entries_as_mergekit_rounds_them():
    """int(density * numel), rounded down: 0.3 of a 32-entry bias keeps 9 entries, not round()'s 10."""
    from segmerge.merging.methods.task_vectors import trim_to_top

    tau = torch.arange(1.0, 33.0)
    assert int((trim_to_top(tau, 0.3) != 0).sum()) == 9
    ties = torch.tensor([3.0, -1.0, 1.0, 1.0, -1.0, 0.5])  # four entries tied at the threshold
    kept = trim_to_top(ties, 0.5)  # int(3.0) = 3: the 3.0 and two of the tied ones
    assert int((kept != 0).sum()) == 3 and kept[0] == 3.0
    torch.testing.assert_close(kept, reference_magnitude(ties, 0.5))


def test_a_tensor_too_small_for_its_density_keeps_its_largest_entry():
    """mergekit stops with an assertion where int(density * numel) == 0; segmerge keeps one entry."""
    from segmerge.merging.methods.task_vectors import trim_to_top

    assert trim_to_top(torch.tensor([0.1, -2.0, 0.5]), 0.2).tolist() == [0.0, -2.0, 0.0]


@pytest.mark.parametrize("consensus, normalize", [("sum", False), ("ties", False), ("ties", True), ("sum", True)])
@pytest.mark.parametrize("election", ["sum", "count"])
@pytest.mark.parametrize("drop_rate", [0.0, 0.5, 0.9])
def test_dare_is_mergekits_on_the_same_masks(drop_rate, election, consensus, normalize):
    params = {"drop_rate": drop_rate, "scaling": 1.0, "consensus": consensus, "election": election}
    method = build_method("dare", {**params, "normalize": normalize}, seed=3)
    for base, models, weights in cases(11, integer=election == "count"):
        masks = [dare_mask(base.shape, drop_rate, _seed_for(3, "k", i)) for i in range(len(models))]
        got = method.combine(models, weights, base, "k")
        want = reference(
            base, models, weights, masks=masks, keep=1 - drop_rate,
            consensus=election if consensus == "ties" else None, normalize=normalize,
        )  # fmt: skip
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5, msg=f"{tuple(base.shape)}")


def test_dare_masks_keep_each_entry_with_probability_one_minus_the_drop_rate():
    mask = dare_mask(torch.Size([200_000]), 0.9, _seed_for(0, "k", 0))
    assert mask.float().mean().item() == pytest.approx(0.1, abs=0.005)
    assert torch.equal(mask, dare_mask(torch.Size([200_000]), 0.9, _seed_for(0, "k", 0)))


def test_a_whole_merge_is_mergekits_key_by_key(tmp_path):
    """Through files and the API, as a user runs it: every float key is the reference's, except
    BatchNorm statistics, which follow segmerge's rule for them (docs/method.md, rule 7)."""
    from safetensors.torch import save_file

    from segmerge import api

    base, models = shared_start_family(3)
    save_file(base, tmp_path / "base.safetensors")
    paths = []
    for i, model in enumerate(models):
        save_file(model, tmp_path / f"m{i}.safetensors")
        paths.append(str(tmp_path / f"m{i}.safetensors"))
    merged = api.merge(paths, method="ties", base=str(tmp_path / "base.safetensors"), density=0.3, weights=[1, 0.5, 2])
    for key, value in base.items():
        if value.is_floating_point() and value.numel() * 0.3 >= 1 and "running_" not in key:
            want = reference(
                value, [m[key] for m in models], [1.0, 0.5, 2.0], density=0.3, consensus="sum", normalize=True
            )
            torch.testing.assert_close(merged[key], want, rtol=1e-6, atol=1e-6, msg=key)

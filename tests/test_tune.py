"""segmerge tune: label-free criteria, learned merge weights on the simplex, search and learn end to end."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch
from tiny_models import shared_start_family
from typer.testing import CliRunner

from segmerge import api
from segmerge.recipe import Recipe
from segmerge.tuning import FunctionalMerge, TuningModels, candidate_grid, learn, load_images, search
from segmerge.tuning.criteria import (
    CriteriaMeter,
    agreement,
    best_index,
    mean_entropy,
    photometric_augment,
    rank_average,
)
from segmerge.tuning.learn import pixel_loss
from segmerge.tuning.output import recipe_path
from segmerge.tuning.search import default_anchors
from segmerge_bench.synthetic import SyntheticDataset

os.environ.setdefault("HF_HUB_OFFLINE", "1")
DAFORMER_ONTO_SEGFORMER = {1: [(r"^backbone\.", "segformer.encoder.")]}


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# --- criteria on hand-built predictions -------------------------------------------------------


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(labels, num_classes).permute(0, 3, 1, 2).float()


def test_entropy_is_log_c_for_uniform_and_zero_for_one_hot():
    assert mean_entropy(torch.full((2, 5, 3, 4), 0.2)) == pytest.approx(math.log(5), rel=1e-6)
    labels = torch.randint(0, 5, (2, 3, 4), generator=torch.Generator().manual_seed(0))
    assert mean_entropy(one_hot(labels, 5)) == pytest.approx(0.0, abs=1e-9)


def test_agreement_is_100_for_identical_predictions_and_an_iou_otherwise():
    labels = torch.tensor([[[0, 0, 1, 1], [2, 2, 2, 2]]])
    probs = one_hot(labels, 4)
    assert agreement(probs, probs) == pytest.approx(100.0)
    other = labels.clone()
    other[0, 0, 0] = 1  # one pixel of class 0 -> class 1
    # class 0: 1/2, class 1: 2/3, class 2: 4/4 (class 3 absent from both: not counted)
    assert agreement(one_hot(other, 4), probs) == pytest.approx(100 * (1 / 2 + 2 / 3 + 1) / 3)


def test_meter_accumulates_over_batches_like_one_pass():
    g = torch.Generator().manual_seed(1)
    probs = torch.rand(4, 3, 5, 5, generator=g).softmax(1)
    ens = torch.rand(4, 3, 5, 5, generator=g).softmax(1)
    aug = torch.rand(4, 3, 5, 5, generator=g).softmax(1)
    whole, parts = CriteriaMeter(3), CriteriaMeter(3)
    whole.update(probs, ens, aug)
    parts.update(probs[:1], ens[:1], aug[:1])
    parts.update(probs[1:], ens[1:], aug[1:])
    assert whole.compute().as_dict() == pytest.approx(parts.compute().as_dict())
    assert whole.compute().agreement == pytest.approx(agreement(probs, ens))


def test_photometric_augmentation_is_deterministic_for_a_seed_and_keeps_geometry():
    images = torch.randint(0, 256, (3, 8, 10, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    a, b, c = photometric_augment(images, 5), photometric_augment(images, 5), photometric_augment(images, 6)
    assert a.dtype == torch.uint8 and a.shape == images.shape
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_selection_rules_pick_the_best_row_and_rank_average_shares_ties():
    rows = [
        {"entropy": 0.5, "agreement": 60.0, "consistency": 80.0},
        {"entropy": 0.2, "agreement": 70.0, "consistency": 80.0},
        {"entropy": 0.9, "agreement": 50.0, "consistency": 90.0},
    ]
    assert best_index(rows, "entropy") == 1
    assert best_index(rows, "agreement") == 1
    assert best_index(rows, "consistency") == 2
    ranks = rank_average(rows)
    assert ranks == pytest.approx([(2 + 2 + 2.5) / 3, (1 + 1 + 2.5) / 3, (3 + 3 + 1) / 3])
    assert best_index(rows, "rank") == 1


def test_rank_average_is_the_mean_rank_by_definition_with_ties_and_nan_last():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 9))
        # few distinct values, so ties are common; some NaN
        rows = [
            {name: float(rng.choice([np.nan, 0.1, 0.2, 0.3])) for name in ("entropy", "agreement", "consistency")}
            for _ in range(n)
        ]
        expected = []
        for row in rows:
            total = 0.0
            for name, higher_better in (("entropy", False), ("agreement", True), ("consistency", True)):

                def key(r, name=name, higher_better=higher_better):
                    v = r[name]
                    return math.inf if math.isnan(v) else (-v if higher_better else v)

                better = sum(key(other) < key(row) for other in rows)
                equal = sum(key(other) == key(row) for other in rows)
                total += 1 + better + (equal - 1) / 2
            expected.append(total / 3)
        assert rank_average(rows) == pytest.approx(expected)


def test_pixel_losses():
    logits = torch.zeros(1, 4, 2, 2)
    assert float(pixel_loss(logits, None, "entropy")) == pytest.approx(math.log(4))
    same = logits.softmax(1)
    assert float(pixel_loss(logits, same, "distill")) == pytest.approx(0.0, abs=1e-6)


def test_candidate_grid_lists_subsets_and_no_duplicate_soup():
    grid = candidate_grid(3, anchors=(0, 1))
    names = [c.name for c in grid]
    assert len(names) == len(set(names))
    assert names.count("uniform soup") == 1
    assert any(c.models == (0, 2) for c in grid)  # a donor subset
    assert all(c.anchor in c.models for c in grid)
    # a candidate's options make a valid recipe with donors re-indexed
    subset = next(c for c in grid if c.models == (1, 2) and c.anchor == 1 and c.options.get("method") == "layerwise")
    recipe = subset.recipe(["a.pth", "b.pth", "c.pth"], {2: [("^x", "y")]})
    assert [m.path for m in recipe.models] == ["b.pth", "c.pth"] and recipe.anchor == 0
    assert recipe.models[1].rename[0].pattern == "^x"


# --- the functional merge -------------------------------------------------------------------


def test_functional_merge_equals_the_streamed_merge_and_stays_on_the_simplex():
    _, models = shared_start_family(3)
    options = {"anchor": 1, "end_weight": 0.8}  # no zero weight: the logits start at log(w), floored at 1e-4
    merge = FunctionalMerge(api.open_merge(models, **options).plan, models)
    merged = merge()
    reference = api.merge(models, **options)
    for key, tensor in merged.items():  # weights, BN means and moment-matched variances
        torch.testing.assert_close(tensor, reference[key].float(), rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        merge.logits.copy_(torch.randn(merge.logits.shape, generator=torch.Generator().manual_seed(0)) * 5)
    weights = merge.weights()
    assert (weights >= 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(len(merge.layers)))


# --- tiny networks end to end -----------------------------------------------------------------


def finetuned(architecture: str, seed: int, scale: float = 0.05):
    """A network from the shared initialisation, moved as fine-tuning would (seeded noise)."""
    from segmerge_bench.zoo.models import build_model

    model = build_model(architecture, seed=0)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return model


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    from segmerge_bench.zoo.models import save_model

    root = tmp_path_factory.mktemp("zoo")
    paths = {
        "seg_a": save_model(finetuned("segformer", 1), root / "seg_a"),
        "seg_b": save_model(finetuned("segformer", 2), root / "seg_b"),
        "daformer": save_model(finetuned("daformer", 3), root / "daformer.pth"),
    }
    return {k: str(v) for k, v in paths.items()}


@pytest.fixture(scope="module")
def target_images():
    return load_images(SyntheticDataset("target", n=8, seed=0, split="train"))


def test_learn_lowers_its_loss_and_its_recipe_reproduces_the_merge(zoo, target_images):
    from segmerge.checkpoints import load_checkpoint

    models = [zoo["seg_a"], zoo["seg_b"]]
    result = learn(models, target_images, steps=6, batch_size=4, lr=0.2, seed=0)
    assert len(result.losses) == 6
    assert result.final_loss < result.initial_loss
    for weights in result.layer_weights.values():  # on the simplex, as written to the recipe
        assert min(weights) >= 0 and sum(weights) == pytest.approx(1.0, abs=1e-5)
    # the recipe round-trips through YAML and api.merge gives the learned merge
    text = result.recipe.to_yaml()
    again = api.merge(Recipe.from_yaml(text))
    assert again.keys() == result.state_dict.keys()
    for key in again:
        torch.testing.assert_close(again[key], result.state_dict[key], rtol=0, atol=0)
    # ... which is the functional merge at the learned weights (up to the recipe's 6 decimals)
    states = [load_checkpoint(m) for m in models]
    functional = FunctionalMerge(api.open_merge(states, method="linear").plan, states)
    learned = torch.tensor([result.layer_weights[name] for name in functional.layers])
    with torch.no_grad():
        functional.logits.copy_(learned.log())
    for key, tensor in functional().items():
        torch.testing.assert_close(tensor, again[key].float(), rtol=1e-4, atol=1e-5)
    # the same seed gives the same result
    twice = learn(models, target_images, steps=6, batch_size=4, lr=0.2, seed=0)
    assert twice.losses == result.losses and twice.layer_weights == result.layer_weights


def test_learn_with_a_daformer_anchor_and_a_renamed_donor(zoo, target_images):
    models = [zoo["seg_a"], zoo["daformer"]]
    result = learn(models, target_images, rename=DAFORMER_ONTO_SEGFORMER, loss="both", steps=2, batch_size=4)
    layers = list(result.layer_weights)
    assert layers and all(name.startswith("segformer.encoder.") for name in layers)  # heads differ: not merged
    assert result.recipe.models[1].rename[0].pattern == r"^backbone\."
    # and the DAFormer as anchor, the SegFormer renamed onto its names, with AdaBN on its BN decoder
    flipped = learn(
        [zoo["daformer"], zoo["seg_a"]],
        target_images,
        rename={1: [(r"^segformer\.encoder\.", "backbone.")]},
        steps=1,
        batch_size=4,
        adabn=True,
    )
    assert all(name.startswith("backbone.") for name in flipped.layer_weights)
    assert flipped.adabn and any("AdaBN" in n for n in flipped.notes)


def test_search_scores_every_candidate_and_returns_the_chosen_merge(zoo, target_images):
    models = TuningModels.open([zoo["seg_a"], zoo["seg_b"]])
    before = {k: v.clone() for k, v in models.segmenters[0].module.state_dict().items()}
    grid = candidate_grid(2, anchors=(0, 1), ramp_starts=(0.5,), end_weights=(1.0,), ramps=("linear",))
    result = search(models, target_images[:4], candidates=grid, criterion="agreement", adabn=True)
    assert len(result.rows) == len(grid)
    after = models.segmenters[0].module.state_dict()  # the networks are the models' own again
    assert all(torch.equal(before[k], after[k]) for k in before)
    best = max(range(len(grid)), key=lambda i: (result.rows[i].agreement, -i))
    assert result.best == best
    expected = api.merge(result.best_recipe)
    for key in expected:  # AdaBN changed the BatchNorm statistics only
        same = torch.equal(result.state_dict[key], expected[key])
        statistic = key.startswith("decode_head.batch_norm.") and not key.endswith(("weight", "bias"))
        assert same != statistic, key
    alone = next(r for r in result.rows if r.candidate.name == "model 0 alone")
    assert 0 <= alone.agreement <= 100 and 0 <= alone.consistency <= 100
    assert json.loads(result.to_json())["chosen"] == result.chosen.candidate.name
    assert "| **>** |" in result.to_markdown()


def test_mixed_precision_learns_and_searches_and_keeps_the_checkpoint_dtype(zoo, target_images):
    """--amp (bfloat16 autocast; on CPU here, the same code path as on a GPU): the loss still falls,
    the merge is written in the checkpoints' float32, and the search scores every candidate."""
    models = [zoo["seg_a"], zoo["seg_b"]]
    result = learn(models, target_images, steps=6, batch_size=4, lr=0.2, seed=0, amp=True)
    assert result.final_loss < result.initial_loss
    assert all(t.dtype == torch.float32 for t in result.state_dict.values() if t.is_floating_point())
    grid = candidate_grid(2, anchors=(0,), ramp_starts=(0.5,), end_weights=(1.0,), ramps=("linear",))
    found = search(models, target_images[:4], candidates=grid, amp=True)
    assert len(found.rows) == len(grid) and all(0 <= r.agreement <= 100 for r in found.rows)


def test_rules_for_both_models_let_the_search_try_each_as_anchor(zoo, target_images):
    both = {0: [(r"^segformer\.encoder\.", "backbone.")], **DAFORMER_ONTO_SEGFORMER}
    models = TuningModels.open([zoo["seg_a"], zoo["daformer"]])
    assert default_anchors(models, 0, DAFORMER_ONTO_SEGFORMER) == [0]  # the SegFormer has no rules: only it anchors
    assert default_anchors(models, 0, both) == [0, 1]
    grid = candidate_grid(2, anchors=(0, 1), ramp_starts=(0.5,), end_weights=(1.0,), ramps=("linear",))
    result = search(models, target_images[:4], rename=both, candidates=grid)
    for row in result.rows:  # a model's rules apply only when it is a donor
        renamed = [i for i, m in enumerate(row.recipe.models) if m.rename]
        assert renamed == [1 - row.candidate.anchor], row.candidate.name
    flipped = next(
        r for r in result.rows if r.candidate.anchor == 1 and r.candidate.options.get("method") == "layerwise"
    )
    merged = api.merge(flipped.recipe)
    assert any(k.startswith("backbone.") for k in merged) and not any(k.startswith("segformer.") for k in merged)
    learned = learn(models, target_images[:4], anchor=1, rename=both, steps=1, batch_size=4)
    assert [bool(m.rename) for m in learned.recipe.models] == [True, False]


# --- the command ------------------------------------------------------------------------------


def run(*args):
    from segmerge.cli.app import app

    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_cli_search_and_learn_write_checkpoint_recipe_and_report(zoo, tmp_path):
    from segmerge.checkpoints import load_checkpoint

    target = "synthetic:target,n=4"
    out = tmp_path / "searched.pth"
    rename = "1:^segformer\\.encoder\\.=backbone."
    found = run("tune", zoo["daformer"], zoo["seg_a"], "--target-images", target, "-o", out,
                "--rename", rename, "--report", tmp_path / "search", "--budget", "2")  # fmt: skip
    assert found.exit_code == 0, found.output
    assert out.is_file() and recipe_path(out).is_file()
    table = json.loads((tmp_path / "search" / "tune.json").read_text())
    assert sum(row["chosen"] for row in table["candidates"]) == 1
    assert "agreement" in (tmp_path / "search" / "tune.md").read_text()
    # segmerge merge -r OUT.recipe.yaml reproduces the checkpoint
    again = run("merge", "-r", recipe_path(out), "-o", tmp_path / "again.pth")
    assert again.exit_code == 0, again.output
    a, b = load_checkpoint(out), load_checkpoint(tmp_path / "again.pth")
    assert all(torch.equal(a[k], b[k]) for k in a)

    learned = tmp_path / "learned"
    done = run("tune", zoo["seg_a"], zoo["seg_b"], "--target-images", target, "-o", learned, "--learn",
               "--budget", "2", "--batch-size", "2", "--report", tmp_path / "learn")  # fmt: skip
    assert done.exit_code == 0, done.output
    assert (learned / "config.json").is_file()
    report = json.loads((tmp_path / "learn" / "tune.json").read_text())
    assert report["steps"] == 2 and report["layer_weights"]
    replay = run("merge", "-r", recipe_path(learned), "-o", tmp_path / "replay")
    assert replay.exit_code == 0, replay.output
    a, b = load_checkpoint(learned), load_checkpoint(tmp_path / "replay")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cli_bad_input_exits_2_naming_the_file(zoo, tmp_path):
    missing = tmp_path / "nope.pth"
    result = run("tune", zoo["seg_a"], missing, "--target-images", "synthetic:target,n=2", "-o", tmp_path / "x.pth")
    assert result.exit_code == 2
    assert str(missing) in result.output and "Traceback" not in result.output
    no_images = tmp_path / "no_such_folder"
    result = run("tune", zoo["seg_a"], zoo["seg_b"], "--target-images", no_images, "-o", tmp_path / "y")
    assert result.exit_code == 2 and str(no_images) in result.output
    assert not (tmp_path / "x.pth").exists() and not (tmp_path / "y").exists()

"""The built-in panoptic network: post-processing, PQ, checkpoints, training, eval, and merging across tasks.

What users rely on: centre/offset outputs group into the segments they describe; outputs
derived from the ground truth score PQ 100 (so PQ measures the model, not the plumbing);
a panoptic .pth rebuilds and evaluates without user code; training lowers the loss and
self-training never reads target labels; and a semantic SegFormer merges into a panoptic
anchor with only the shared encoder blended.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

import segmerge
from segmerge.cli.app import app
from segmerge.errors import SegmergeError
from segmerge.metrics import PanopticMetric
from segmerge.segmenters import load_segmenter
from segmerge_bench.synthetic import SyntheticDataset
from segmerge_bench.training import TrainConfig, TrainingData, pretrain
from segmerge_bench.training.panoptic import train_panoptic_supervised, train_panoptic_uda
from segmerge_bench.training.panoptic_loss import instance_targets
from segmerge_bench.zoo.daformer import build_daformer
from segmerge_bench.zoo.models import build_model, decoder_of, encoder_of, load_model, save_model, segment
from segmerge_bench.zoo.panoptic import PanopticModel
from segmerge_bench.zoo.panoptic_postprocess import PostprocessConfig, find_centers, fuse, panoptic_segmentation
from segmerge_bench.zoo.segformer import build_segformer

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROAD, SIDEWALK, CAR, TRUCK = 0, 1, 13, 14
THINGS = set(range(11, 19))


def _logits(semantic: torch.Tensor, num_classes: int = 19) -> torch.Tensor:
    return torch.nn.functional.one_hot(semantic, num_classes).permute(2, 0, 1).float() * 10


def _pointing_at(centres: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
    """Offsets [2,H,W] from every pixel to ``centres[owner - 1]`` (0 where owner is 0)."""
    height, width = owner.shape
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    target = centres[(owner - 1).clamp_min(0)].float()
    offset = torch.stack([target[..., 0] - ys, target[..., 1] - xs])
    return offset * (owner > 0)


def test_hand_built_centres_and_offsets_give_the_expected_segments():
    semantic = torch.full((12, 20), ROAD)
    semantic[:, 15:] = SIDEWALK
    semantic[2:6, 2:6] = CAR  # object 1 (16 px)
    semantic[2:6, 9:13] = CAR  # object 2 (16 px), 3 of its pixels look like a truck
    semantic[2, 9:12] = TRUCK
    semantic[10, 0] = SIDEWALK  # a 1-pixel stuff fragment of sidewalk is part of the sidewalk segment
    owner = torch.zeros_like(semantic)
    owner[2:6, 2:6], owner[2:6, 9:13] = 1, 2
    centres = torch.tensor([[3, 3], [4, 10]])
    heatmap = torch.zeros(1, 12, 20)
    heatmap[0, 3, 3], heatmap[0, 4, 10] = 0.9, 0.8
    heatmap[0, 4, 4] = 0.5  # a weaker peak next to the first: suppressed by NMS
    heatmap[0, 10, 18] = 0.05  # below the threshold
    offset = _pointing_at(centres, owner)
    offset[:, 5, 5] += 0.4  # noisy offsets still point nearest to their own centre

    ids, segments = panoptic_segmentation(_logits(semantic), heatmap, offset, (12, 20), THINGS)

    assert find_centers(heatmap[0]).tolist() == [[3, 3], [4, 10]]
    by_id = {s["id"]: s for s in segments}
    assert [(s["category_id"], s["isthing"], s["area"]) for s in segments] == [
        (CAR, True, 16),
        (CAR, True, 16),  # majority vote: 13 car pixels outvote 3 truck pixels
        (ROAD, False, 12 * 20 - 32 - 5 * 12 - 1),
        (SIDEWALK, False, 5 * 12 + 1),
    ]
    assert torch.equal(ids[2:6, 2:6], torch.full((4, 4), segments[0]["id"]))
    assert torch.equal(ids[2:6, 9:13], torch.full((4, 4), segments[1]["id"]))
    assert set(ids.unique().tolist()) == set(by_id)


def test_stuff_below_the_area_threshold_and_thing_pixels_without_centre_are_void():
    semantic = torch.full((8, 8), ROAD)
    semantic[0, 0:3] = SIDEWALK  # 3 pixels
    semantic[5:7, 5:7] = CAR
    ids, segments = fuse(semantic, torch.zeros_like(semantic), THINGS, stuff_area=4)
    assert [(s["category_id"], s["area"]) for s in segments] == [(ROAD, 64 - 3 - 4)]
    assert (ids[0, 0:3] == 0).all() and (ids[5:7, 5:7] == 0).all()
    assert find_centers(torch.zeros(8, 8)).shape == (0, 2)
    with pytest.raises(SegmergeError, match="odd"):
        PostprocessConfig(nms_kernel=4)


def test_top_k_keeps_the_strongest_centres():
    heatmap = torch.zeros(10, 30)
    for i, x in enumerate(range(2, 30, 6)):
        heatmap[5, x] = 0.2 + 0.1 * i
    assert find_centers(heatmap, PostprocessConfig(top_k=2)).tolist() == [[5, 26], [5, 20]]


def _ground_truth_outputs(sample):
    """What a perfect network would output for ``sample``: its labels as logits, its instances' targets."""
    data = TrainingData.from_samples([sample], instances=True)
    labels = data.labels.long()
    targets = instance_targets(data.instances, labels, sigma=3.0)
    semantic = labels[0].clone()
    semantic[semantic == 255] = ROAD  # void pixels are not scored, whatever they are called
    return _logits(semantic), targets.center[0], targets.offset[0]


def test_outputs_derived_from_the_ground_truth_score_pq_100():
    dataset = SyntheticDataset("target", 6, split="val")
    metric = PanopticMetric(dataset.categories)
    for sample in dataset:
        semantic, center, offset = _ground_truth_outputs(sample)
        ids, segments = panoptic_segmentation(
            semantic, center, offset, sample.label.shape, THINGS, PostprocessConfig(stuff_area=0)
        )
        metric.update(sample.panoptic.ids, sample.panoptic.segments_info, ids, segments)
    result = metric.compute()
    assert result.n_things > 0 and result.n_stuff > 0
    assert result.pq == pytest.approx(100.0) and result.pq_things == pytest.approx(100.0)


def test_instance_targets_put_a_unit_peak_at_each_centre_and_offsets_on_things():
    instances = torch.zeros(1, 9, 9, dtype=torch.long)
    instances[0, 1:4, 1:4] = 1  # centre (2, 2)
    instances[0, 6:9, 5:9] = 2  # centre of mass (7, 6.5) -> rounded (7, 6)
    labels = torch.zeros(1, 9, 9, dtype=torch.long)
    targets = instance_targets(instances, labels, sigma=1.0)
    assert targets.center[0, 0, 2, 2] == 1.0 and targets.center[0, 0, 7, 6] == 1.0
    assert torch.equal(
        find_centers(targets.center[0, 0], PostprocessConfig(nms_kernel=3)), torch.tensor([[2, 2], [7, 6]])
    )
    assert targets.offset[0, :, 1, 1].tolist() == [1.0, 1.0] and targets.offset[0, :, 8, 8].tolist() == [-1.0, -2.0]
    assert (targets.offset[0, :, 0, 0] == 0).all() and targets.offset_weight.sum() == 9 + 12


# -- the network and its checkpoint -------------------------------------------------------------


def test_outputs_at_stride_4_and_semantic_head_initialised_as_a_daformer():
    model = build_model("panoptic", num_classes=7, seed=2).eval()
    with torch.no_grad():
        output = model(torch.randn(2, 3, 64, 96))
        assert torch.equal(segment(model, torch.zeros(1, 3, 64, 96)), model(torch.zeros(1, 3, 64, 96)).semantic)
    assert [tuple(x.shape) for x in output] == [(2, 7, 16, 24), (2, 1, 16, 24), (2, 2, 16, 24)]
    daformer = build_daformer(num_classes=7, seed=2)
    assert _same(encoder_of(model), encoder_of(daformer)) and _same(model.decode_head, daformer.decode_head)
    heads = decoder_of(model).state_dict()
    assert {k.split(".")[0] for k in heads} == {"decode_head", "instance_head"}


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("panoptic")
    model = build_model("panoptic", seed=1).eval()
    return {"model": model, "path": save_model(model, folder / "panoptic.pth"), "folder": folder}


def test_checkpoint_round_trips_with_mmseg_names(saved):
    content = torch.load(saved["path"], map_location="cpu", weights_only=True)
    keys = list(content["state_dict"])
    assert keys[0] == "backbone.patch_embeddings.0.proj.weight"
    assert keys[-1] == "instance_head.offset_conv.bias"
    assert {k.split(".")[0] for k in keys} == {"backbone", "decode_head", "instance_head"}
    spec = content["meta"]["segmerge_model"]
    assert spec["architecture"] == "panoptic" and spec["instance"] == {"embed_dim": 16, "channels": 32}
    reloaded = load_model(saved["path"])
    assert isinstance(reloaded, PanopticModel) and _same(reloaded, saved["model"])
    pixels = torch.randn(1, 3, 96, 192)
    segmenter = load_segmenter(str(saved["path"]))
    with torch.no_grad():
        assert torch.equal(segmenter.scores(pixels), saved["model"].semantic(pixels))
        ids, segments = segmenter.panoptic(pixels, (96, 192), THINGS)
    assert ids.shape == (96, 192) and {s["id"] for s in segments} == set(ids.unique().tolist()) - {0}


def test_a_checkpoint_with_foreign_keys_is_refused(saved, tmp_path):
    content = torch.load(saved["path"], map_location="cpu", weights_only=True)
    content["state_dict"]["aux_head.weight"] = torch.zeros(1)
    torch.save(content, tmp_path / "extra.pth")
    with pytest.raises(SegmergeError, match="unexpected keys.*aux_head"):
        load_model(tmp_path / "extra.pth")


# -- training ---------------------------------------------------------------------------


FAST = TrainConfig(steps=8, batch_size=4, lr=2e-3, warmup_steps=2, threads=1, progress=False)


@pytest.fixture(scope="module")
def scenes():
    return TrainingData.from_samples(SyntheticDataset("target", 8, split="train"), name="target", instances=True)


def test_supervised_panoptic_training_lowers_the_loss_and_repeats(scenes):
    start = build_model("panoptic", seed=0)
    model, log = train_panoptic_supervised(start, scenes, FAST)
    assert log["final_loss"] < 0.5 * log["first_loss"]
    assert {"mean_semantic_loss", "mean_center_loss", "mean_offset_loss"} <= set(log)
    assert _same(model, train_panoptic_supervised(start, scenes, FAST)[0])
    assert _same(start, build_model("panoptic", seed=0))


@pytest.mark.parametrize("pseudo_instances", [True, False])
def test_panoptic_uda_learns_and_never_reads_target_labels(scenes, pseudo_instances):
    source = TrainingData.from_samples(SyntheticDataset("appearance-a", 8), name="source", instances=True)
    start = build_model("panoptic", seed=0)
    model, log = train_panoptic_uda(start, source, scenes, FAST, pseudo_instances=pseudo_instances)
    assert log["final_loss"] < log["first_loss"] and 0.0 <= log["mean_pseudo_weight"] <= 1.0
    poisoned = TrainingData(
        scenes.images, torch.full_like(scenes.labels, 3), "target", torch.ones_like(scenes.instances)
    )
    again, _ = train_panoptic_uda(start, source, poisoned, FAST, pseudo_instances=pseudo_instances)
    assert _same(model, again)


def test_the_shared_start_holds_a_panoptic_init_whose_semantic_head_is_the_daformers(scenes):
    shared, _ = pretrain(scenes, FAST.replace(steps=2, decoder_lr_mult=1.0), architectures=("daformer", "panoptic"))
    model, daformer = shared.model("panoptic"), shared.model("daformer")
    assert isinstance(model, PanopticModel) and _same(model.decode_head, daformer.decode_head)
    assert _same(encoder_of(model), encoder_of(daformer))


def test_panoptic_training_needs_instances():
    labels_only = TrainingData.from_samples(SyntheticDataset("target", 2), name="plain")
    with pytest.raises(SegmergeError, match="instances=True"):
        train_panoptic_supervised(build_model("panoptic"), labels_only, FAST)
    with pytest.raises(SegmergeError, match="panoptic network"):
        train_panoptic_supervised(build_model("daformer"), labels_only, FAST)


# -- evaluation -------------------------------------------------------------------------


def test_eval_cli_scores_pq_and_miou_of_a_panoptic_checkpoint(saved):
    out = saved["folder"] / "report"
    args = ["eval", str(saved["path"]), "--data", "synthetic:target,n=3", "--panoptic", "--out", str(out), "--json"]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)["models"][0]
    assert 0.0 <= row["miou"] <= 100.0
    assert {"pq", "sq", "rq", "pq_things", "pq_stuff", "per_class"} <= set(row["panoptic"])
    assert any(p.suffix == ".png" for p in out.iterdir())
    table = CliRunner().invoke(app, args[:-3], catch_exceptions=False).stdout
    assert "PQ" in table and "mIoU" in table


# -- merging a semantic model into a panoptic one -------------------------------------------


def test_semantic_segformer_merges_into_a_panoptic_anchor_with_heads_untouched(saved, tmp_path):
    """Real-world layouts: the donor's encoder is ``segformer.encoder.*`` (a Hugging Face folder),
    the anchor's ``backbone.*``; the donor's head (``decode_head.linear_c...``) shares no key with
    the anchor's semantic or instance heads."""
    segformer = build_segformer(seed=5)
    segformer.save_pretrained(tmp_path / "semantic")
    rename = {0: [(r"^segformer\.encoder\.", "backbone.")]}
    models = [str(tmp_path / "semantic"), str(saved["path"])]
    merged = segmerge.merge(models, anchor=1, rename=rename)
    plan = segmerge.plan(models, anchor=1, rename=rename)

    anchor = torch.load(saved["path"], map_location="cpu", weights_only=True)["state_dict"]
    donor = load_file(tmp_path / "semantic" / "model.safetensors")
    assert list(merged) == list(anchor)
    heads = [k for k in anchor if not k.startswith("backbone.")]
    assert heads and all(torch.equal(merged[k], anchor[k]) for k in heads)
    blended = [p for p in plan.keys if p.action.value == "merged"]
    assert {p.key for p in blended} == {
        k for k in anchor if k.startswith("backbone.") and anchor[k].is_floating_point()
    }
    # the first layer is unified (weights 1/2, 1/2 under the default schedule): neither input, their mean
    first = blended[0]
    key = first.key
    donor_key = "segformer.encoder." + key[len("backbone.") :]
    assert first.weights == pytest.approx((0.5, 0.5))
    assert not torch.equal(merged[key], anchor[key]) and not torch.equal(merged[key], donor[donor_key])
    assert torch.allclose(merged[key], 0.5 * anchor[key] + 0.5 * donor[donor_key], atol=1e-7)
    # and every blended key is the plan's weighted sum of its sources
    for p in blended:
        theirs = donor["segformer.encoder." + p.key[len("backbone.") :]]
        expected = p.weights[0] * anchor[p.key].double() + p.weights[1] * theirs.double()
        assert torch.allclose(merged[p.key].double(), expected, atol=1e-6)
    assert np.isclose(sum(first.weights), 1.0)

"""The benchmark's model zoo (SegFormer, DAFormer-style) and its training loops.

What the merging benchmark relies on: both architectures predict at stride 4 from one
MiT encoder; their checkpoints carry the names users' files carry (a Hugging Face folder,
an mmseg-style .pth) so merging them needs exactly the documented rename; a DAFormer .pth
evaluates without user code; every training loop learns and is reproducible for a seed,
and self-training never reads target labels.
"""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import load_file

import segmerge
from segmerge.errors import SegmergeError
from segmerge.segmenters import load_segmenter
from segmerge_bench.training import (
    SharedStart,
    TrainConfig,
    TrainingData,
    pretrain,
    train_source_only,
    train_target_oracle,
    train_uda,
)
from segmerge_bench.training.classmix import class_mix
from segmerge_bench.training.teacher import EMATeacher
from segmerge_bench.zoo.daformer import build_daformer, load_daformer
from segmerge_bench.zoo.models import build_model, encoder_of, load_model, save_model, segment
from segmerge_bench.zoo.segformer import build_segformer

os.environ.setdefault("HF_HUB_OFFLINE", "1")

RENAME = {1: [(r"^backbone\.", "segformer.encoder.")]}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """One SegFormer folder and one DAFormer .pth that share an encoder (the DAFormer's)."""
    folder = tmp_path_factory.mktemp("zoo")
    daformer = build_daformer(seed=1).eval()
    segformer = build_segformer(seed=2).eval()
    encoder_of(segformer).load_state_dict(encoder_of(daformer).state_dict())
    return {
        "segformer": save_model(segformer, folder / "segformer"),
        "daformer": save_model(daformer, folder / "daformer.pth"),
        "daformer_model": daformer,
    }


def _scene_data(n: int, domain: str = "target", labelled: bool = True) -> TrainingData:
    """A few tiny scenes: random blocks of colour, each colour one class (learnable in a few steps)."""
    generator = torch.Generator().manual_seed(sum(domain.encode()))
    palette = torch.randint(0, 256, (19, 3), generator=generator, dtype=torch.uint8)
    coarse = torch.randint(0, 6, (n, 4, 8), generator=generator)
    labels = coarse.repeat_interleave(8, 1).repeat_interleave(8, 2)
    labels[:, -4:] = 255  # an ignored strip, as the ego vehicle's bonnet
    images = palette[labels.clamp(max=18)]
    return TrainingData(images, labels.to(torch.uint8) if labelled else None, domain)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("architecture", ["segformer", "daformer"])
def test_both_architectures_predict_at_stride_4(architecture):
    model = build_model(architecture, num_classes=7, seed=0).eval()
    with torch.no_grad():
        logits = segment(model, torch.randn(2, 3, 64, 96))
    assert logits.shape == (2, 7, 16, 24)


def test_same_seed_same_network_and_encoders_are_interchangeable():
    assert _same_weights(build_daformer(seed=3), build_daformer(seed=3))
    assert not _same_weights(build_daformer(seed=3), build_daformer(seed=4))
    a, b = encoder_of(build_segformer(seed=0)), encoder_of(build_daformer(seed=0))
    assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}


def test_checkpoints_carry_the_names_users_files_carry(saved):
    hf_keys = list(load_file(saved["segformer"] / "model.safetensors"))
    assert all(k.startswith(("segformer.encoder.", "decode_head.")) for k in hf_keys)
    content = torch.load(saved["daformer"], map_location="cpu", weights_only=True)
    assert set(content) == {"state_dict", "meta"}
    keys = list(content["state_dict"])
    assert all(k.startswith(("backbone.", "decode_head.")) for k in keys)
    # encoder first, in forward order (stage by stage), then the head
    assert keys[0] == "backbone.patch_embeddings.0.proj.weight" and keys[-1] == "decode_head.conv_seg.bias"
    hf_encoder = {k[len("segformer.encoder.") :] for k in hf_keys if k.startswith("segformer.encoder.")}
    assert {k[len("backbone.") :] for k in keys if k.startswith("backbone.")} == hf_encoder
    spec = content["meta"]["segmerge_model"]
    assert spec["architecture"] == "daformer" and spec["num_classes"] == 19
    assert spec["encoder"]["hidden_sizes"] == [16, 32, 64, 128] and spec["decoder"]["dilations"] == [1, 2, 4, 6]


def test_daformer_checkpoint_round_trips_through_load_segmenter(saved):
    segmenter = load_segmenter(str(saved["daformer"]))
    assert segmenter.num_classes == 19
    pixels = torch.randn(2, 3, 96, 192)
    with torch.no_grad():
        assert torch.equal(segmenter.scores(pixels), saved["daformer_model"](pixels))
        assert torch.equal(load_model(saved["daformer"])(pixels), saved["daformer_model"](pixels))
    reloaded = load_model(saved["segformer"])
    assert type(reloaded).__name__ == "SegformerForSemanticSegmentation"


def test_other_pth_files_get_the_clear_error(tmp_path):
    torch.save({"conv.weight": torch.zeros(2, 3, 1, 1)}, tmp_path / "plain.pth")
    with pytest.raises(SegmergeError, match="cannot tell which network"):
        load_segmenter(str(tmp_path / "plain.pth"))
    with pytest.raises(SegmergeError, match="not a DAFormer checkpoint"):
        load_daformer(tmp_path / "plain.pth")


def test_atrous_convolution_equals_a_dilated_one():
    from segmerge_bench.zoo.daformer import AtrousConv2d

    for dilation in (2, 4, 6):
        reference = torch.nn.Conv2d(8, 8, 3, padding=dilation, dilation=dilation, groups=8)
        atrous = AtrousConv2d(8, 8, 3, padding=dilation, dilation=dilation, groups=8)
        atrous.load_state_dict(reference.state_dict())
        x = torch.randn(2, 8, 13, 22)
        assert torch.allclose(atrous(x), reference(x), atol=1e-5)


def test_segformer_and_daformer_merge_every_encoder_key_and_keep_both_heads(saved):
    plan = segmerge.plan([str(saved["segformer"]), str(saved["daformer"])], rename=RENAME)
    actions = {k.key: k.action.value for k in plan.keys}
    encoder = [k for k in actions if k.startswith("segformer.encoder.")]
    assert encoder and all(actions[k] == "merged" for k in encoder)
    assert all(a in ("anchor-only", "non-float") for k, a in actions.items() if k.startswith("decode_head."))
    unmatched = [d.key for d in plan.donor_keys if d.action.value == "donor-unmatched"]
    assert unmatched and all(k.startswith("decode_head.") for k in unmatched)
    # the other way round: the DAFormer as anchor, the SegFormer's names renamed onto it
    reverse = segmerge.plan(
        [str(saved["daformer"]), str(saved["segformer"])], rename={1: [(r"^segformer\.encoder\.", "backbone.")]}
    )
    merged = [k.key for k in reverse.keys if k.action.value == "merged"]
    assert len(merged) == len(encoder) and all(k.startswith("backbone.") for k in merged)


def test_classmix_pastes_half_the_source_classes_with_their_labels():
    source_labels = torch.tensor([[[0, 0, 1, 1], [2, 2, 3, 255]]])
    source, target = torch.ones(1, 3, 2, 4), torch.zeros(1, 3, 2, 4)
    pseudo = torch.full((1, 2, 4), 9)
    mixed = class_mix(source, source_labels, target, pseudo, 0.25, torch.Generator().manual_seed(0))
    pasted = mixed.pixels[0, 0] == 1
    assert len(source_labels[0][pasted].unique()) == 2 and not (source_labels[0][pasted] == 255).any()
    assert torch.equal(mixed.labels[0][pasted], source_labels[0][pasted])
    assert (mixed.labels[0][~pasted] == 9).all()
    assert (mixed.weight[0][pasted] == 1).all() and (mixed.weight[0][~pasted] == 0.25).all()


def test_ema_teacher_follows_the_student_then_averages():
    student = build_segformer(seed=0)
    teacher = EMATeacher(build_segformer(seed=1), alpha=0.9)
    teacher.update(student, step=0)  # alpha_0 = 0: a copy
    assert _same_weights(teacher.model, student)
    before = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    teacher.update(student, step=100)
    key = "segformer.stages.0.patch_embeddings.proj.weight"
    assert torch.allclose(teacher.model.state_dict()[key], before[key] + 0.1, atol=1e-5)


FAST = TrainConfig(steps=8, batch_size=4, lr=2e-3, warmup_steps=2, threads=1, progress=False)


@pytest.fixture(scope="module")
def start():
    shared, log = pretrain(_scene_data(8, "pretrain"), FAST.replace(decoder_lr_mult=1.0, seed=1))
    assert log["steps"] == 8 and log["final_loss"] < log["first_loss"]
    return shared


@pytest.mark.parametrize("keep", ["none", "features", "all"])
def test_continued_pretraining_trains_the_encoder_on_and_keeps_what_is_asked_of_the_decoder(start, keep):
    from segmerge_bench.training import continue_pretraining

    further, log = continue_pretraining(start, _scene_data(8, "pretrain"), FAST.replace(decoder_lr_mult=1.0), keep)
    assert log["steps"] == FAST.steps and further.log["kept_head"] == keep
    assert any(not torch.equal(further.encoder[k], v) for k, v in start.encoder.items())
    before, after = start.decoders["segformer"], further.decoders["segformer"]
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    classifier = {k for k in before if k.startswith("classifier.")}
    assert classifier and moved <= set(before)
    if keep == "none":
        assert not moved
    elif keep == "features":
        assert moved and not moved & classifier
    else:
        assert classifier <= moved and moved - classifier
    for arch in ("daformer", "panoptic"):  # the other architectures' inits stay
        assert all(torch.equal(v, further.decoders[arch][k]) for k, v in start.decoders[arch].items())
    assert _same_weights(encoder_of(further.model("daformer")), encoder_of(further.model("segformer")))


def test_continued_pretraining_refuses_an_unknown_choice_of_what_to_keep(start):
    from segmerge_bench.training import continue_pretraining

    with pytest.raises(SegmergeError, match="keep must be one of none, features, all, not 'head'"):
        continue_pretraining(start, _scene_data(4, "pretrain"), FAST.replace(steps=1), "head")


def test_pretrain_gives_one_encoder_and_one_decoder_init_per_architecture(start, tmp_path):
    a, b = start.model("daformer"), start.model("daformer")
    assert _same_weights(a, b) and a is not b
    assert _same_weights(encoder_of(start.model("segformer")), encoder_of(a))
    again = SharedStart.load(start.save(tmp_path / "start.pt"))
    assert _same_weights(again.model("segformer"), start.model("segformer"))


@pytest.mark.parametrize("architecture", ["segformer", "daformer"])
def test_supervised_loops_learn_and_repeat_for_a_seed(start, architecture):
    data = _scene_data(8)
    config = FAST.replace(steps=12)
    model, log = train_source_only(start.model(architecture), data, config)
    assert log["final_loss"] < 0.8 * log["first_loss"]
    assert {"steps", "seconds", "final_loss"} <= set(log)
    again, _ = train_source_only(start.model(architecture), data, config)
    assert _same_weights(model, again)
    other, _ = train_target_oracle(start.model(architecture), data, config.replace(seed=1))
    assert not _same_weights(model, other)


def test_uda_learns_repeats_and_never_reads_target_labels(start):
    source, target = _scene_data(8, "source"), _scene_data(8, "target")
    config = FAST.replace(steps=10)
    initial = start.model("segformer")
    model, log = train_uda(initial, source, target, config)
    assert log["final_loss"] < log["first_loss"] and 0.0 <= log["mean_pseudo_weight"] <= 1.0
    assert _same_weights(initial, start.model("segformer"))  # the start is left unchanged
    blind, _ = train_uda(start.model("segformer"), source, target.unlabelled(), config)
    assert _same_weights(model, blind)
    poisoned = TrainingData(target.images, torch.full_like(target.labels, 3), "target")
    assert _same_weights(model, train_uda(start.model("segformer"), source, poisoned, config)[0])


def test_bad_settings_are_refused():
    with pytest.raises(SegmergeError, match="steps"):
        TrainConfig(steps=0)
    with pytest.raises(SegmergeError, match="schedule"):
        TrainConfig(schedule="step")
    with pytest.raises(SegmergeError, match="needs labels"):
        train_source_only(build_segformer(), _scene_data(2, labelled=False), FAST)
    with pytest.raises(SegmergeError, match="architecture"):
        build_model("hrda")


def test_snapshots_along_a_run_are_the_model_at_those_steps(start):
    data = _scene_data(8)
    config = FAST.replace(steps=6, snapshots=(3, 6))
    model, log = train_source_only(start.model("segformer"), data, config)
    assert sorted(log["snapshots"]) == [3, 6]
    final = {k: v for k, v in model.state_dict().items()}
    assert all(torch.equal(final[k], v) for k, v in log["snapshots"][6].items())
    shorter, _ = train_source_only(
        start.model("segformer"), data, config.replace(steps=3, warmup_steps=2, snapshots=())
    )
    # the same seed sees the same batches; a 3-step run decays its rate differently, so only the
    # first snapshot differs from the end of the 6-step run, not from nothing
    assert not all(torch.equal(final[k], v) for k, v in log["snapshots"][3].items())
    assert set(log["snapshots"][3]) == set(shorter.state_dict())
    with pytest.raises(SegmergeError, match="snapshots"):
        FAST.replace(snapshots=(9,))


def test_mic_hides_blocks_and_adds_a_masked_loss(start):
    from segmerge_bench.training.masking import block_mask

    generator = torch.Generator().manual_seed(0)
    mask = block_mask(64, 96, 192, 12, 0.7, generator)
    assert mask.shape == (64, 1, 96, 192) and set(mask.unique().tolist()) == {0.0, 1.0}
    assert abs(float(mask.mean()) - 0.3) < 0.02  # 70% hidden
    blocks = mask[0, 0, ::12, ::12]
    assert torch.equal(mask[0, 0], blocks.repeat_interleave(12, 0).repeat_interleave(12, 1))  # whole blocks
    source, target = _scene_data(8, "source"), _scene_data(8, "target")
    config = FAST.replace(steps=4)
    dacs, dacs_log = train_uda(start.model("segformer"), source, target, config)
    mic, mic_log = train_uda(start.model("segformer"), source, target, config, method="mic")
    assert "mean_masked_loss" in mic_log and "mean_masked_loss" not in dacs_log
    assert not _same_weights(dacs, mic)
    with pytest.raises(SegmergeError, match="UDA method"):
        train_uda(start.model("segformer"), source, target, config, method="fda")


def test_strong_augmentation_jitters_and_blurs_like_dacs():
    from segmerge_bench.training.augment import gaussian_blur, strong_augment
    from segmerge_bench.training.data import normalise

    images = _scene_data(16).images
    pixels = normalise(images)
    out = strong_augment(pixels, torch.Generator().manual_seed(0))
    assert out.shape == pixels.shape and not torch.equal(out, pixels)
    again = strong_augment(pixels, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)  # seeded
    changed = [not torch.allclose(o, p, atol=1e-5) for o, p in zip(out, pixels, strict=True)]
    assert 12 <= sum(changed) <= 16  # 80% jittered, 50% blurred: few images escape both
    flat = torch.ones(1, 3, 9, 9)
    assert torch.allclose(gaussian_blur(flat, 1.0), flat, atol=1e-6)  # a blur keeps a flat image
    spike = torch.zeros(1, 1, 9, 9)
    spike[0, 0, 4, 4] = 1
    blurred = gaussian_blur(spike, 1.0)
    assert abs(float(blurred.sum()) - 1) < 1e-5 and blurred[0, 0, 4, 4] < 0.2


def test_resize_and_crop_keeps_the_size_and_pads_with_ignore():
    from segmerge.labels import IGNORE_INDEX
    from segmerge_bench.training.data import batches

    data = _scene_data(4)
    generator = torch.Generator().manual_seed(0)
    shrunk = next(batches(data, 4, generator, flip=False, scales=(0.5, 0.5)))
    assert shrunk.pixels.shape[-2:] == data.images.shape[1:3] and shrunk.labels.shape == data.labels.shape
    h, w = data.labels.shape[1:]
    padded = shrunk.labels == IGNORE_INDEX
    assert padded.float().mean() >= 0.7  # three quarters of each image is padding (some labels are ignore anyway)
    grown = next(batches(data, 4, torch.Generator().manual_seed(0), flip=False, scales=(2.0, 2.0)))
    assert grown.pixels.shape[-2:] == (h, w) and not (grown.labels == IGNORE_INDEX).all()
    plain = next(batches(data, 4, torch.Generator().manual_seed(0), flip=False))
    same = next(batches(data, 4, torch.Generator().manual_seed(0), flip=False, scales=(1.0, 1.0)))
    assert torch.equal(plain.labels, same.labels)
    with pytest.raises(SegmergeError, match="scales"):
        FAST.replace(scales=(2.0, 1.0))


def test_thing_cells_are_the_cells_a_thing_class_fills_to_three_quarters():
    from segmerge_bench.training.feature_distance import thing_cells

    labels = torch.zeros(1, 8, 8, dtype=torch.long)  # road
    labels[0, :4, :4] = 11  # person fills the top-left cell
    labels[0, :4, 4:7] = 13  # car fills 12 of 16 pixels of the top-right cell: exactly 0.75
    labels[0, 4:, :2] = 13  # car fills half of the bottom-left cell
    labels[0, 4:, 4:] = 255  # the bottom-right cell is ignored
    labels[0, 4:, 4] = 11  # ... but for one column of person: 0.25 of the cell
    cells = thing_cells(labels, (2, 2), classes=(11, 13))
    assert cells.tolist() == [[[True, True], [False, False]]]
    assert thing_cells(labels, (2, 2), classes=(13,)).tolist() == [[[False, True], [False, False]]]  # person not asked
    assert not thing_cells(labels, (2, 2), classes=(11, 13), min_share=0.8)[0, 0, 1]


def test_feature_distance_pulls_thing_features_back_to_the_start(start):
    from segmerge_bench.training.data import normalise
    from segmerge_bench.training.feature_distance import FeatureDistance, captured_bottleneck

    data = _scene_data(4)
    pixels = normalise(data.images)
    labels = torch.full_like(data.labels.long(), 11)  # every cell a person
    distance = FeatureDistance(start.model("segformer"), weight=2.0)
    student = start.model("segformer")
    with captured_bottleneck(student) as box:
        segment(student, pixels)
    assert float(distance(box["features"], pixels, labels).detach()) == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        for p in encoder_of(student).parameters():
            p.add_(0.05 * torch.randn_like(p))
    with captured_bottleneck(student) as box:
        segment(student, pixels)
    loss = distance(box["features"], pixels, labels)
    assert float(loss) > 0.01
    assert float(distance(box["features"], pixels, torch.zeros_like(labels))) == 0.0  # road: not a thing class
    loss.backward()
    with torch.no_grad():
        for p in encoder_of(student).parameters():
            p.sub_(0.1 * p.grad)
    with captured_bottleneck(student) as box:
        segment(student, pixels)
    assert float(distance(box["features"], pixels, labels)) < float(loss)
    source, target = _scene_data(8, "source"), _scene_data(8, "target")
    things = torch.where(source.labels == 255, source.labels, 11)  # persons, filling every feature cell
    source = TrainingData(source.images, things, "source")
    plain, plain_log = train_uda(start.model("segformer"), source, target, FAST.replace(steps=4))
    pulled, log = train_uda(start.model("segformer"), source, target, FAST.replace(steps=4, feature_distance=0.5))
    assert "mean_feature_distance_loss" in log and "mean_feature_distance_loss" not in plain_log
    assert not _same_weights(plain, pulled)
    assert all(bool(p.isfinite().all()) for p in pulled.parameters())  # the distance is 0 at step 1: no NaN
    with pytest.raises(SegmergeError, match="feature_distance"):
        FAST.replace(feature_distance=-1.0)


def test_pixel_pseudo_label_weights_are_the_confident_pixels(start):
    teacher = EMATeacher(start.model("segformer"), 0.99)
    from segmerge_bench.training.data import normalise

    pixels = normalise(_scene_data(4).images)
    with torch.no_grad():
        from segmerge_bench.training.loss import upsample

        top = upsample(segment(teacher.model, pixels), pixels.shape[-2:]).softmax(1).max(1).values
    threshold = float(top.median())  # about half the pixels confident
    pseudo = teacher.pseudo_labels(pixels, threshold)
    assert 0.2 < pseudo.weight < 0.8
    weights = pseudo.pixel_weights("pixel")
    assert weights.shape == pseudo.labels.shape and set(weights.unique().tolist()) <= {0.0, 1.0}
    assert float(weights.mean()) == pytest.approx(pseudo.weight)
    assert pseudo.pixel_weights("batch") == pseudo.weight
    source, target = _scene_data(8, "source"), _scene_data(8, "target")
    config = FAST.replace(steps=4, pseudo_label_threshold=threshold)
    batch, _ = train_uda(start.model("segformer"), source, target, config)
    pixel, log = train_uda(start.model("segformer"), source, target, config.replace(pseudo_label_weighting="pixel"))
    mic, _ = train_uda(start.model("segformer"), source, target, config.replace(pseudo_label_weighting="pixel"), "mic")
    assert not _same_weights(batch, pixel) and not _same_weights(pixel, mic)
    with pytest.raises(SegmergeError, match="pseudo_label_weighting"):
        FAST.replace(pseudo_label_weighting="soft")


def _rare_class_labels() -> torch.Tensor:
    """20 images of road (0); images 0 and 1 hold a block of class 5 (4% of each), image 2 a
    speck of class 7 (0.05%, under DAFormer's 0.15%)."""
    labels = torch.zeros(20, 32, 64, dtype=torch.uint8)
    labels[0:2, :8, :10] = 5
    labels[2, 0, 0] = 7
    labels[3, -4:] = 255  # ignored pixels count for no class
    return labels


def test_rare_class_sampling_draws_classes_by_daformers_formula():
    from segmerge_bench.training.rare_classes import RareClassSampler

    labels = _rare_class_labels()
    sampler = RareClassSampler.of(labels, temperature=0.01)
    assert sampler.classes == (0, 5)  # the speck of 7 is too small to draw an image for
    share = 2 * 80 / (20 * 32 * 64 - 4 * 64)  # class 5's share of the labelled pixels
    expected = torch.softmax(torch.tensor([1 - (1 - share), 1 - share], dtype=torch.float64) / 0.01, 0)
    assert torch.allclose(sampler.probabilities, expected)
    drawn = sampler(4000, torch.Generator().manual_seed(0))
    holding = (drawn < 2).double().mean()  # images 0 and 1: drawn for class 5, or for road like any other
    assert abs(holding - (expected[1] + expected[0] * 2 / 20)) < 0.03
    assert holding > 0.9  # a rare class nearly always wins at DAFormer's temperature; uniform draws give 0.1
    with pytest.raises(SegmergeError, match="temperature"):
        RareClassSampler.of(labels, temperature=0.0)
    with pytest.raises(SegmergeError, match="nothing to draw"):
        RareClassSampler.of(torch.full_like(labels, 255), temperature=0.01)  # every pixel ignored


def test_loops_draw_labelled_batches_by_rare_class_when_configured():
    from segmerge_bench.training.data import labelled_batches

    labels = _rare_class_labels()
    data = TrainingData(torch.zeros(*labels.shape, 3, dtype=torch.uint8), labels, "rare")

    def class_five_share(config):
        stream = labelled_batches(data, config, torch.Generator().manual_seed(0))
        return sum(float((next(stream).labels == 5).any(dim=(1, 2)).float().mean()) for _ in range(50)) / 50

    assert class_five_share(FAST.replace(rare_class_temperature=0.01)) > 0.8
    assert class_five_share(FAST) < 0.3
    with pytest.raises(SegmergeError, match="rare_class"):
        FAST.replace(rare_class_temperature=-1.0)

"""Built-in MiT networks (SegFormer, DAFormer) read from checkpoints, factory verification, panoptic factories."""

from __future__ import annotations

import json
import os
import re

import pytest
import real_layouts as R
import torch
from test_evaluation import make_folder_dataset
from typer.testing import CliRunner

from segmerge.cli.app import app
from segmerge.errors import SegmergeError
from segmerge.evaluation.prediction import InferenceConfig, predict, rescaled_size, with_model_defaults
from segmerge.segmenters import load_segmenter
from segmerge.segmenters.networks import build_network, config_test_settings, encoder_state
from segmerge.segmenters.networks.mit import MiTConfig, MixVisionTransformer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
runner = CliRunner()


def tiny_hf_config(**extra):
    from transformers import SegformerConfig

    return SegformerConfig(
        num_channels=3, num_encoder_blocks=4, depths=[2, 1, 2, 1], sr_ratios=[8, 4, 2, 1],
        hidden_sizes=[8, 16, 40, 32], patch_sizes=[7, 3, 3, 3], strides=[4, 2, 2, 2],
        num_attention_heads=[1, 2, 5, 8], mlp_ratios=[4, 4, 4, 4], hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, drop_path_rate=0.0, decoder_hidden_size=16, num_labels=7, **extra,
    )  # fmt: skip


def _randomised(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random values everywhere (LayerNorm/BatchNorm too), so a misplaced tensor shows."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=gen) * 0.5 + (1.0 if name.endswith("running_var") else 0))
                if name.endswith("running_var"):
                    t.abs_()
    return model.eval()


def _hf_saved(tmp_path, seed: int = 0):
    """A random transformers SegFormer and its weights as ``save_pretrained`` writes them (the hub's
    names: transformers 5 renames modules in memory but saves the legacy keys)."""
    from safetensors.torch import load_file
    from transformers import SegformerForSemanticSegmentation

    hf = _randomised(SegformerForSemanticSegmentation(tiny_hf_config()), seed)
    hf.save_pretrained(tmp_path / "hf")
    return hf, tmp_path / "hf" / "model.safetensors", load_file(tmp_path / "hf" / "model.safetensors")


def test_mit_encoder_equals_transformers_segformer_encoder(tmp_path):
    hf, _, state = _hf_saved(tmp_path)
    layout, encoder = encoder_state({k: _Meta(v) for k, v in state.items()}, state.__getitem__)
    assert layout == "hf"
    config = MiTConfig.from_state_dict({k: tuple(v.shape) for k, v in encoder.items()})
    assert config.depths == (2, 1, 2, 1) and config.heads == (1, 2, 5, 8) and config.sr_ratios == (8, 4, 2, 1)
    mit = MixVisionTransformer(config).eval()
    mit.load_state_dict({k[len("backbone.") :]: v for k, v in encoder.items()}, strict=True)
    x = torch.randn(2, 3, 61, 83, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = mit(x)
        theirs = hf.segformer(pixel_values=x, output_hidden_states=True).hidden_states
    assert len(ours) == len(theirs) == 4
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == b.shape
        assert torch.allclose(a, b, atol=1e-5, rtol=0), (a - b).abs().max()


class _Meta:
    def __init__(self, t: torch.Tensor):
        self.shape, self.dtype = tuple(t.shape), t.dtype


def test_hf_segformer_file_gives_the_logits_of_transformers(tmp_path):
    hf, path, _ = _hf_saved(tmp_path, seed=3)
    segmenter = load_segmenter(str(path))
    assert segmenter.num_classes == 7 and "Hugging Face SegFormer" in segmenter.extra["family"]
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.allclose(segmenter.scores(x), hf(pixel_values=x).logits, atol=1e-4, rtol=1e-4)


def _daformer_variant(kind: str, seed: int = 0) -> dict:
    """DAFormer's head with the ``conv`` (daformer_conv1_mitb5.py) or non-separable ``aspp``
    (daformer_aspp_mitb5.py) fusion instead of the fixture's sepaspp, same names otherwise."""
    state = R.daformer(seed)
    state = {k: v for k, v in state.items() if not k.startswith("decode_head.fuse_layer.")}
    gen = torch.Generator().manual_seed(seed + 7)
    c = R.CHANNELS

    def conv_module(prefix, shape):
        state[f"{prefix}.conv.weight"] = torch.randn(*shape, generator=gen)
        R._bn(state, f"{prefix}.bn", shape[0], gen)

    if kind == "conv":
        conv_module("decode_head.fuse_layer", (c, 4 * c, 1, 1))
    else:
        conv_module("decode_head.fuse_layer.aspp_modules.0", (c, 4 * c, 1, 1))
        for j in (1, 2, 3):
            conv_module(f"decode_head.fuse_layer.aspp_modules.{j}", (c, 4 * c, 3, 3))
        conv_module("decode_head.fuse_layer.bottleneck", (c, 4 * c, 3, 3))
    return state


def _built(state: dict, text: str = ""):
    return build_network({k: _Meta(v) for k, v in state.items()}, state.__getitem__, text)


@pytest.mark.parametrize("kind", ["sepaspp", "aspp", "conv"])
def test_daformer_heads_are_recognised_and_give_logits_at_a_quarter(kind):
    state = R.daformer() if kind == "sepaspp" else _daformer_variant(kind)
    built = _built(state)
    assert built.family.startswith(f"DAFormer ({kind})")
    assert built.inference == {"mode": "whole", "scale": (1024, 512)}
    with torch.no_grad():
        out = built.module.eval()(torch.randn(2, 3, 64, 96))
    assert out.shape == (2, R.NUM_CLASSES, 16, 24)
    loaded = built.module.state_dict()
    for key, value in state.items():  # every tensor arrived where it belongs
        assert torch.equal(loaded[key], value), key


def test_the_three_mit_layouts_build_the_same_network():
    head = R.daformer_head()
    x = torch.randn(1, 3, 64, 64)
    outs = []
    for encoder in (R.mit_mmseg0(), R.mit_mmseg1(), _hf_names(R.hf_segformer())):
        with torch.no_grad():
            outs.append(_built({**encoder, **head}).module.eval()(x))
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


def test_an_mmseg1_segformer_checkpoint_builds_with_its_own_head():
    built = _built({**R.mit_mmseg1(), **R.segformer_head_mmseg1()})
    assert built.family.startswith("mmsegmentation SegformerHead")
    with torch.no_grad():
        assert built.module.eval()(torch.randn(1, 3, 64, 64)).shape == (1, R.NUM_CLASSES, 16, 16)


def _hf_names(state: dict) -> dict:
    return {k: v for k, v in state.items() if k.startswith("segformer.")}


def test_mmcv_config_text_sets_heads_dilations_and_test_settings():
    text = (
        "model = dict(backbone=dict(type='mit_b5', num_heads=[1, 2, 4, 8]), decode_head=dict(decoder_params=dict("
        "fusion_cfg=dict(type='aspp', sep=True, dilations=(1, 2, 3, 4)))), "
        "test_cfg=dict(mode='slide', batched_slide=True, stride=[512, 512], crop_size=[1024, 1024]))\n"
        "test_pipeline = [dict(type='LoadImageFromFile'), dict(type='MultiScaleFlipAug', img_scale=(2048, 1024))]"
    )
    assert config_test_settings(text) == {
        "mode": "slide",
        "crop": (1024, 1024),
        "stride": (512, 512),
        "scale": (2048, 1024),
    }
    built = _built(R.daformer(), text)
    assert built.module.backbone.config.heads == (1, 2, 4, 8)
    dilations = [m.depthwise_conv.conv.dilation[0] for m in list(built.module.decode_head.fuse_layer.aspp_modules)[1:]]
    assert dilations == [2, 3, 4]
    assert built.inference["mode"] == "slide" and built.inference["scale"] == (2048, 1024)


def test_an_hrda_head_without_its_attention_is_named_not_misread():
    state = {**R.mit_mmseg0(), **{f"decode_head.head.{k[12:]}": v for k, v in R.daformer_head().items()}}
    state["decode_head.scale_attention.conv_seg.weight"] = torch.zeros(19, 16, 1, 1)
    with pytest.raises(SegmergeError, match="HRDA"):
        _built(state)


@pytest.fixture
def uda_file(tmp_path):
    path = tmp_path / "daformer_iter_40000.pth"
    torch.save(R.mmcv_checkpoint(R.uda_wrapper()), path)
    return path


def test_a_uda_training_file_loads_as_its_student_or_teacher(uda_file):
    from segmerge.segmenters.networks import from_builtin

    student = load_segmenter(str(uda_file))
    assert "the student" in student.extra["description"]
    expected = R.daformer(0)
    assert torch.equal(
        student.module.state_dict()["backbone.block1.0.attn.q.weight"], expected["backbone.block1.0.attn.q.weight"]
    )
    teacher = from_builtin(uda_file, "t", network="teacher")
    assert torch.equal(
        teacher.module.state_dict()["decode_head.conv_seg.weight"], R.daformer(50)["decode_head.conv_seg.weight"]
    )


def test_eval_network_teacher_evaluates_the_ema_teacher(uda_file, tmp_path):
    teacher = load_segmenter(str(uda_file), network="teacher")
    key = "decode_head.conv_seg.weight"
    assert torch.equal(teacher.module.state_dict()[key], R.daformer(50)[key])
    spec = make_folder_dataset(tmp_path / "data", n=1, size=(32, 64))
    result = runner.invoke(app, ["eval", str(uda_file), "--data", spec, "--network", "teacher", "--json"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["eval", str(uda_file), "--data", spec, "--network", "nosuch"])
    assert result.exit_code == 2 and "nosuch" in result.output


def test_eval_runs_a_uda_training_file_without_model_and_with_family_defaults(uda_file, tmp_path):
    spec = make_folder_dataset(tmp_path / "data", n=2, size=(32, 64))
    result = runner.invoke(app, ["eval", str(uda_file), "--data", spec, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)["models"][0]
    assert row["name"] == "daformer_iter_40000.pth" and 0 <= row["miou"] <= 100
    segmenter = load_segmenter(str(uda_file))
    config = with_model_defaults(InferenceConfig(), [segmenter], {"mode", "scale"})
    assert config.mode == "whole" and config.scale == (1024, 512)
    assert with_model_defaults(InferenceConfig(), [segmenter], set()).scale is None  # the user's choice wins


def test_rescaling_follows_mmcv_keep_ratio():
    assert rescaled_size(1024, 2048, (1024, 512)) == (512, 1024)
    assert rescaled_size(1052, 1914, (1024, 512)) == (512, 932)  # GTA's 1914x1052
    images = torch.randint(0, 255, (1, 64, 128, 3), dtype=torch.uint8)
    seg = load_segmenter_fixture()
    [batch] = list(predict([seg], images, InferenceConfig(scale=(64, 32))))
    assert batch.probabilities[0].shape == (1, R.NUM_CLASSES, 64, 128)  # back at the label's size


def load_segmenter_fixture():
    from segmerge.segmenters.base import Segmenter

    built = _built(R.daformer())
    return Segmenter("d", built.module.eval(), R.NUM_CLASSES, lambda x: x)


def test_slide_with_one_window_equals_whole_image_inference():
    seg = load_segmenter_fixture()
    images = torch.randint(0, 255, (1, 64, 96, 3), dtype=torch.uint8)
    [whole] = list(predict([seg], images, InferenceConfig("whole")))
    [slide] = list(predict([seg], images, InferenceConfig("slide", crop=(64, 96), stride=(32, 32))))
    assert torch.allclose(whole.probabilities[0], slide.probabilities[0], atol=1e-6)


# -- factories are verified -------------------------------------------------------------------------

FACTORY = '''
import re, torch
from segmerge.segmenters.networks import build_network


class Meta:
    def __init__(self, t):
        self.shape, self.dtype = tuple(t.shape), t.dtype


def _network(state):
    return build_network({k: Meta(v) for k, v in state.items()}, state.__getitem__).module


def _file(path):
    return torch.load(path, weights_only=True)["state_dict"]


class Logits(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)


def like_init_segmentor(path):
    """mmseg's default revise_keys strip module. only: the student's model. stays, nothing loads."""
    state = _file(path)
    student = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    net = _network(student)
    for p in net.parameters():  # a fresh network's initialisation (not the fixture's random stream)
        torch.nn.init.uniform_(p)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
    revised = {re.sub(r"^module\\.", "", k): v for k, v in state.items()}
    net.load_state_dict(revised, strict=False)
    return Logits(net)


def like_tools_test(path):
    """DAFormer's tools/test.py way: revise_keys, module. then model. removed."""
    revised = {}
    for k, v in _file(path).items():
        for pattern, repl in [(r"^module\\.", ""), ("model.", "")]:
            k = re.sub(pattern, repl, k)
        revised[k] = v
    student = {k: v for k, v in revised.items() if k.startswith(("backbone.", "decode_head."))}
    return Logits(_network(student))
'''


@pytest.fixture
def factory_file(tmp_path):
    path = tmp_path / "daformer_factory.py"
    path.write_text(FACTORY)
    return path


def test_a_factory_that_loaded_nothing_is_refused_with_counts_and_examples(uda_file, factory_file):
    with pytest.raises(SegmergeError) as info:
        load_segmenter(str(uda_file), f"{factory_file}:like_init_segmentor")
    message = str(info.value)
    total = len(R.daformer())
    assert re.search(rf"\b0 of {total}\b", message) and f"{total} differ" in message
    assert "backbone.patch_embed1.proj.weight" in message and "--allow-unverified" in message
    s = load_segmenter(str(uda_file), f"{factory_file}:like_init_segmentor", verify=False)
    assert s.num_classes == R.NUM_CLASSES


def test_a_factory_loading_as_tools_test_does_passes(uda_file, factory_file):
    from segmerge.checkpoints import open_checkpoint
    from segmerge.segmenters.verify import check_weights

    s = load_segmenter(str(uda_file), f"{factory_file}:like_tools_test")
    check = check_weights(s.module, open_checkpoint(uda_file))
    assert check.ok and check.prefix == "model." and len(check.arrived) == len(R.daformer())


def test_eval_cli_refuses_an_unverified_factory_with_exit_2(uda_file, factory_file, tmp_path):
    spec = make_folder_dataset(tmp_path / "data", n=1, size=(32, 64))
    args = ["eval", str(uda_file), "--model", f"{factory_file}:like_init_segmentor", "--data", spec]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "does not hold its weights" in result.output
    result = runner.invoke(app, [*args, "--allow-unverified", "--json"])
    assert result.exit_code == 0, result.output


def _module_of(state: dict) -> torch.nn.Module:
    """A module whose state dict is ``state`` (names and values), as a network built elsewhere would be."""
    root = torch.nn.Module()
    for key, value in state.items():
        *path, leaf = key.split(".")
        node = root
        for part in path:
            if not hasattr(node, part):
                node.add_module(part, torch.nn.Module())
            node = getattr(node, part)
        node.register_buffer(leaf, value.clone())
    return root


def test_verification_sees_through_a_layout_conversion(tmp_path):
    """A network in the mmseg 1.x layout checked against the mmseg 0.x file it was loaded from."""
    from segmerge.checkpoints import open_checkpoint
    from segmerge.segmenters.verify import check_weights

    torch.save(R.mmcv_checkpoint(R.mit_mmseg0()), tmp_path / "mit.pth")
    loaded = check_weights(_module_of(R.mit_mmseg1()), open_checkpoint(tmp_path / "mit.pth"))
    assert loaded.ok and len(loaded.arrived) == len(R.mit_mmseg1())
    other = check_weights(_module_of(R.mit_mmseg1(seed=5)), open_checkpoint(tmp_path / "mit.pth"))
    assert not other.ok and len(other.differ) == len(R.mit_mmseg1())


# -- panoptic factories ---------------------------------------------------------------------------

PANOPTIC_FACTORY = '''
import torch


class ToyPanoptic(torch.nn.Module):
    """Semantic logits from colour; panoptic: one segment per predicted class, classes >= 11 as things."""

    num_classes = 19

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 19, 1)

    def forward(self, x):
        return {"logits": self.conv(x)}

    def panoptic(self, outputs, index, size, thing_ids):
        logits = torch.nn.functional.interpolate(outputs["logits"][index : index + 1], size=size, mode="bilinear")
        classes = logits[0].argmax(0)
        ids = torch.zeros(size, dtype=torch.int64)
        segments = []
        for n, c in enumerate(classes.unique().tolist(), start=1):
            ids[classes == c] = n
            segments.append({"id": n, "category_id": c, "isthing": c in thing_ids})
        return ids, segments


def build(path):
    net = ToyPanoptic()
    net.load_state_dict(torch.load(path, weights_only=True))
    return net
'''


def test_a_panoptic_factory_is_scored_for_pq_as_the_metric_scores_its_output(tmp_path):
    from segmerge.evaluation.runner import EvaluationConfig, evaluate
    from segmerge.labels import class_names
    from segmerge.metrics import PanopticMetric
    from segmerge_bench.synthetic import SyntheticDataset

    (tmp_path / "toy.py").write_text(PANOPTIC_FACTORY)
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 19, 1)
    torch.save({"conv.weight": conv.weight.data, "conv.bias": conv.bias.data}, tmp_path / "toy.pth")
    segmenter = load_segmenter(str(tmp_path / "toy.pth"), f"{tmp_path / 'toy.py'}:build")
    assert segmenter.panoptic_head is not None
    dataset = SyntheticDataset("target", 3, split="val")
    config = EvaluationConfig(19, class_names(19), panoptic=True, progress=False, qualitative=0)
    row = evaluate([segmenter], dataset, config).rows[0]
    thing_ids = {c["id"] for c in dataset.categories if c.get("isthing")}
    metric = PanopticMetric(dataset.categories)
    for sample in dataset:
        image = torch.from_numpy(sample.image.copy() if hasattr(sample.image, "copy") else sample.image)
        [batch] = list(predict([segmenter], image[None], keep_outputs=True))
        [(ids, segments)] = batch.panoptic(0, thing_ids)
        metric.update(sample.panoptic.ids, sample.panoptic.segments_info, ids, segments)
    assert row.panoptic["pq"] == pytest.approx(metric.compute().as_dict()["pq"])


def test_the_merge_of_two_uda_files_evaluates_without_model(tmp_path):
    a, b = tmp_path / "a.pth", tmp_path / "b.pth"
    torch.save(R.mmcv_checkpoint(R.uda_wrapper(1)), a)
    torch.save(R.mmcv_checkpoint(R.uda_wrapper(2)), b)
    merged = tmp_path / "merged.pth"
    result = runner.invoke(app, ["merge", str(a), str(b), "-o", str(merged)])
    assert result.exit_code == 0, result.output
    segmenter = load_segmenter(str(merged))
    key = "backbone.block1.0.attn.q.weight"
    expected = 0.5 * R.daformer(1)[key] + 0.5 * R.daformer(2)[key]
    assert torch.allclose(segmenter.module.state_dict()[key], expected)
    spec = make_folder_dataset(tmp_path / "data", n=1, size=(32, 64))
    result = runner.invoke(app, ["eval", str(merged), str(a), "--data", spec, "--ensemble", "--json"])
    assert result.exit_code == 0, result.output
    assert [m["name"] for m in json.loads(result.stdout)["models"]] == ["merged.pth", "a.pth", "ensemble"]


# -- HRDA ---------------------------------------------------------------------------------------


def _hrda_state(seed: int = 0) -> dict:
    """An HRDA (``HRDAEncoderDecoder`` with ``HRDAHead``, lhoyer/HRDA ``hrda_head.py`` l. 33-90): the
    DAFormer head under ``decode_head.head.``, the scale attention (a DAFormer head whose ASPP fusion
    becomes a 1x1 conv, classwise) under ``decode_head.scale_attention.``; ``HRDAHead`` deletes its
    own ``conv_seg``."""
    main = R.daformer_head(seed, prefix="decode_head.head.")
    attention = {
        k.replace("decode_head.", "decode_head.scale_attention.", 1): v
        for k, v in _daformer_variant("conv", seed + 3).items()
        if k.startswith("decode_head.")
    }
    return {**R.mit_mmseg0(seed), **main, **attention}


def _hrda_with_attention(bias: float, text: str):
    state = _hrda_state()
    state["decode_head.scale_attention.conv_seg.weight"] = torch.zeros_like(
        state["decode_head.scale_attention.conv_seg.weight"]
    )
    state["decode_head.scale_attention.conv_seg.bias"] = torch.full((R.NUM_CLASSES,), bias)
    return _built(state, text).module.eval()


def test_hrda_is_built_with_its_test_settings_and_gives_logits_at_the_image_size():
    built = _built(_hrda_state(), "model = dict(scales=[1, 0.5], hr_crop_size=[32, 32])")
    assert built.family.startswith("HRDA (sepaspp, scales 0.5/1.0)")
    assert built.inference == {"mode": "slide", "crop": (1024, 1024), "stride": (512, 512), "scale": (2048, 1024)}
    assert built.module.hr_crop == (32, 32)
    with torch.no_grad():
        assert built.module.eval()(torch.randn(2, 3, 64, 64)).shape == (2, R.NUM_CLASSES, 64, 64)
    state = _hrda_state()
    loaded = built.module.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_hrda_scale_attention_picks_the_detail_or_the_context_branch():
    """att = 1: the fused logits are the detail branch (one crop covering the image: the head on the
    full-resolution features); att = 0: the context branch, upsampled."""
    x = torch.randn(1, 3, 64, 64)
    detail = _hrda_with_attention(30.0, "hr_crop_size=[64, 64]")
    context = _hrda_with_attention(-30.0, "hr_crop_size=[64, 64]")
    up = lambda t, size: torch.nn.functional.interpolate(t, size=size, mode="bilinear", align_corners=False)  # noqa: E731
    with torch.no_grad():
        head, backbone = detail.decode_head.head, detail.backbone
        expected_detail = up(head(backbone(x)), (64, 64))
        lr = head(backbone(up(x, (32, 32))))
        expected_context = up(up(lr, (16, 16)), (64, 64))
        assert torch.allclose(detail(x), expected_detail, atol=1e-5)
        assert torch.allclose(context(x), expected_context, atol=1e-5)


def test_tune_runs_on_uda_training_files_without_model(tmp_path):
    import numpy as np
    from PIL import Image

    a, b = tmp_path / "a.pth", tmp_path / "b.pth"
    torch.save(R.mmcv_checkpoint(R.uda_wrapper(1)), a)
    torch.save(R.mmcv_checkpoint(R.uda_wrapper(2)), b)
    (tmp_path / "img").mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (64, 128, 3), dtype=np.uint8)).save(tmp_path / "img" / f"{i}.png")
    args = ["tune", str(a), str(b), "--target-images", str(tmp_path / "img"), "-o", str(tmp_path / "tuned.pth")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "tuned.pth").exists()

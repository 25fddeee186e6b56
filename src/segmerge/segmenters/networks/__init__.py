"""Built-in networks: a MiT checkpoint (SegFormer, DAFormer, HRDA, MIC, their merges) runs with
no code from the user and no mmcv/mmseg.

The network is read from the checkpoint itself: the MiT encoder's layout (mmseg 0.x, mmseg 1.x or
Hugging Face, :mod:`segmerge.merging.layouts`), its widths, depths and reduction ratios from the
tensors' shapes; the decode head from its key names (DAFormer's head and its ``aspp`` /
``sepaspp`` / ``conv`` fusion, SegFormer's MLP head in its three namings, mmsegmentation's
``SegformerHead``; HRDA's head with its scale attention, :mod:`.hrda`); and, when an mmcv
file carries its training config in ``meta['config']``, that text is searched (as text, never
run) for the number of heads, ASPP dilations and the test-time settings. A UDA training file
(student, EMA teacher, ImageNet model) is read as its student, as the merge reads it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from segmerge.errors import SegmergeError
from segmerge.merging import layouts
from segmerge.segmenters.networks.heads import (
    ASPPWrapper,
    ConvModule,
    DAFormerHead,
    EncoderDecoder,
    MmsegSegformerHead,
    SegFormerHead,
)
from segmerge.segmenters.networks.mit import MiTConfig, MixVisionTransformer

#: Test-time settings of the DAFormer family on Cityscapes, used when the file's own config does not
#: say: whole-image inference (lhoyer/DAFormer ``configs/_base_/models/daformer_conv1_mitb5.py``,
#: ``test_cfg=dict(mode='whole')``) on images rescaled to fit 1024x512 keeping the aspect ratio
#: (``configs/_base_/datasets/uda_gta_to_cityscapes_512x512.py``, test ``img_scale=(1024, 512)``),
#: ImageNet mean/std (``img_norm_cfg`` there).
DAFORMER_TEST = {"mode": "whole", "scale": (1024, 512)}


@dataclass
class BuiltNetwork:
    module: torch.nn.Module
    family: str  # e.g. "DAFormer (sepaspp) on MiT-B5"
    inference: dict = field(default_factory=dict)  # test-time defaults: mode, crop, stride, scale


def encoder_state(metas: Mapping, get: Callable[[str], torch.Tensor]) -> tuple[str, dict[str, torch.Tensor]] | None:
    """The MiT encoder's tensors in the mmseg 0.x layout (``backbone.patch_embed1...``), converted
    from whichever layout the checkpoint uses; ``None`` when it holds no MiT encoder."""
    layout = layouts.detect_layout(metas)
    if layout is None:
        return None
    if layout == "mmseg":
        return layout, {k: get(k) for k in metas if k.startswith("backbone.")}
    target = layouts.target_metas(layout, metas, "mmseg")
    conversions = layouts.plan_conversion(layout, metas, "mmseg", target)
    return layout, {k: c.build(get) for k, c in conversions.items() if k.startswith("backbone.")}


def _config_tuple(text: str, name: str) -> tuple[int, ...] | None:
    m = re.search(rf"{name}\s*=\s*[\[(]([\d,\s]+)[\])]", text or "")
    return tuple(int(v) for v in m.group(1).replace(" ", "").split(",") if v) if m else None


def config_test_settings(text: str) -> dict:
    """Test-time settings an mmcv config text states: ``test_cfg`` mode, crop_size and stride, and
    the test pipeline's ``img_scale`` (read as text; nothing is executed)."""
    out: dict = {}
    m = re.search(r"test_cfg\s*=\s*dict\(([^)]*)\)", text or "")
    if m:
        body = m.group(1)
        mode = re.search(r"mode\s*=\s*['\"](\w+)['\"]", body)
        if mode:
            out["mode"] = mode.group(1)
        for key, name in (("crop", "crop_size"), ("stride", "stride")):
            value = _config_tuple(body, name)
            if value and len(value) == 2:
                out[key] = value
    pipeline = (text or "").split("test_pipeline", 1)
    if len(pipeline) == 2:
        scale = _config_tuple(pipeline[1][:600], "img_scale")
        if scale and len(scale) == 2:
            out["scale"] = scale
    return out


def _head_keys(metas) -> dict[str, tuple[int, ...]]:
    return {k[len("decode_head.") :]: tuple(m.shape) for k, m in metas.items() if k.startswith("decode_head.")}


def _daformer_head(head: dict, in_dims, classes: int, config_text: str) -> tuple[DAFormerHead, str]:
    embed = [head[f"embed_layers.{i}.proj.weight"][0] for i in range(len(in_dims))]
    channels = head["conv_seg.weight"][1]
    if "fuse_layer.conv.weight" in head:
        kernel = head["fuse_layer.conv.weight"][2]
        return DAFormerHead(in_dims, embed, ConvModule(sum(embed), channels, kernel), channels, classes), "conv"
    count = len({m.group(1) for k in head if (m := re.match(r"fuse_layer\.aspp_modules\.(\d+)\.", k))})
    if count == 0 or "fuse_layer.bottleneck.conv.weight" not in head:
        raise SegmergeError("a DAFormer head whose fusion layer segmerge does not know (not conv, aspp or sepaspp)")
    dilations = _config_tuple(config_text, "dilations")
    if dilations is None or len(dilations) != count:
        dilations = (1, 6, 12, 18)[:count] if count <= 4 else None  # daformer_sepaspp_mitb5.py, l. 13
    if dilations is None:
        raise SegmergeError(f"a DAFormer ASPP head with {count} branches and no dilations in the file's config")
    separable = [f"fuse_layer.aspp_modules.{j}.depthwise_conv.conv.weight" in head for j in range(count)]
    pool = "fuse_layer.image_pool.1.conv.weight" in head
    branches = list(zip(dilations, separable, strict=True))
    fuse = ASPPWrapper(sum(embed), channels, branches, pool)
    kind = "sepaspp" if any(separable) else "aspp"
    return DAFormerHead(in_dims, embed, fuse, channels, classes), kind


def _segformer_head(get, head: dict, in_dims) -> tuple[SegFormerHead, dict, str]:
    """SegFormer's MLP head in any of its namings, and its tensors under this module's names."""
    n = len(in_dims)
    if "linear_c1.proj.weight" in head:  # NVlabs/SegFormer (mmseg 0.x): linear_c1..4, cat c4..c1
        names = {f"linear_c{i + 1}.proj": f"linear_c.{i}.proj" for i in range(n)}
        reverse, kind = True, "NVlabs SegFormer"
    elif "classifier.weight" in head:  # transformers: cat reversed, linear_fuse/batch_norm/classifier
        names = {f"linear_c.{i}.proj": f"linear_c.{i}.proj" for i in range(n)}
        names |= {"linear_fuse": "linear_fuse.conv", "batch_norm": "linear_fuse.bn", "classifier": "conv_seg"}
        reverse, kind = True, "Hugging Face SegFormer"
    else:  # DAFormer's segformer_head.py: a ModuleDict linear_c.0..3, cat in stage order
        names = {f"linear_c.{i}.proj": f"linear_c.{i}.proj" for i in range(n)}
        reverse, kind = False, "DAFormer-repo SegFormer"
    names |= {"linear_fuse.conv": "linear_fuse.conv", "linear_fuse.bn": "linear_fuse.bn"}
    names |= {"linear_pred": "conv_seg"} if "linear_pred.weight" in head else {"conv_seg": "conv_seg"}
    state = {}
    for key in head:
        module, _, leaf = key.rpartition(".")
        if module in names:
            state[f"{names[module]}.{leaf}"] = get(f"decode_head.{key}")
    channels = state["linear_c.0.proj.weight"].shape[0]
    classes = state["conv_seg.weight"].shape[0]
    kernel = state["linear_fuse.conv.weight"].shape[2]
    return SegFormerHead(in_dims, channels, classes, reverse, kernel), state, kind


def build_network(metas: Mapping, get: Callable[[str], torch.Tensor], config_text: str = "") -> BuiltNetwork | None:
    """The network a MiT checkpoint holds, with its weights loaded (every one of them, checked by a
    strict ``load_state_dict``); ``None`` when the checkpoint holds no MiT encoder."""
    found = encoder_state(metas, get)
    if found is None:
        return None
    _, encoder = found
    config = MiTConfig.from_state_dict({k: tuple(v.shape) for k, v in encoder.items()}, "backbone.", config_text)
    backbone = MixVisionTransformer(config)
    backbone.load_state_dict({k[len("backbone.") :]: v for k, v in encoder.items()}, strict=True)
    head = _head_keys(metas)
    inference = config_test_settings(config_text)
    if "head.embed_layers.0.proj.weight" in head and "scale_attention.embed_layers.0.proj.weight" in head:
        return _hrda(backbone, config, head, get, config_text, inference)
    if any(k.startswith(("scale_attention", "head.")) for k in head):
        raise SegmergeError(
            "an HRDA head segmerge does not build (only HRDA with DAFormer heads and a learned scale attention "
            "is built in); pass --model FILE.py:function (docs/evaluation.md shows one)"
        )
    if "embed_layers.0.proj.weight" in head:
        classes = head["conv_seg.weight"][0]
        decode, kind = _daformer_head(head, config.dims, classes, config_text)
        state = {k: get(f"decode_head.{k}") for k in head}
        family = f"DAFormer ({kind}) on {config.variant}"
        inference = {**DAFORMER_TEST, **inference}
    elif any(k.startswith(("linear_c", "linear_fuse")) for k in head):
        decode, state, kind = _segformer_head(get, head, config.dims)
        classes = decode.conv_seg.out_channels
        family = f"{kind} on {config.variant}"
        if kind == "DAFormer-repo SegFormer":
            inference = {**DAFORMER_TEST, **inference}
    elif "convs.0.conv.weight" in head and "fusion_conv.conv.weight" in head:
        classes = head["conv_seg.weight"][0]
        decode = MmsegSegformerHead(config.dims, head["conv_seg.weight"][1], classes)
        state = {k: get(f"decode_head.{k}") for k in head}
        family = f"mmsegmentation SegformerHead on {config.variant}"
    else:
        examples = ", ".join(sorted(head)[:3]) or "none"
        raise SegmergeError(
            f"a {config.variant} encoder with a decode head segmerge does not know (decode_head keys: {examples}); "
            "built in are DAFormer's and SegFormer's heads - pass --model FILE.py:function for others"
        )
    try:
        decode.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise SegmergeError(f"{family}: the checkpoint's head does not fit the network built for it: {exc}") from None
    return BuiltNetwork(EncoderDecoder(backbone, decode, int(classes)), family, inference)


def _sub(head: dict, prefix: str) -> dict:
    return {k[len(prefix) :]: v for k, v in head.items() if k.startswith(prefix)}


def _hrda(backbone, config: MiTConfig, head: dict, get, config_text: str, inference: dict) -> BuiltNetwork:
    from segmerge.segmenters.networks.hrda import HRDA_CROP, HRDA_SCALES, HRDA_TEST, HRDAEncoderDecoder

    classes = head["head.conv_seg.weight"][0]
    main, kind = _daformer_head(_sub(head, "head."), config.dims, classes, config_text)
    attention, _ = _daformer_head(
        _sub(head, "scale_attention."), config.dims, head["scale_attention.conv_seg.weight"][0], ""
    )
    scales = _config_floats(config_text, "scales") or HRDA_SCALES
    crop = _config_tuple(config_text, "hr_crop_size") or HRDA_CROP
    if len(scales) != 2 or len(crop) != 2:
        raise SegmergeError(f"HRDA with scales {scales} and detail crop {crop}: segmerge builds two scales only")
    module = HRDAEncoderDecoder(backbone, main, attention, int(classes), scales, crop)
    state = {f"decode_head.{k}": get(f"decode_head.{k}") for k in head}
    state |= {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise SegmergeError(f"HRDA: the checkpoint's head does not fit the network built for it: {exc}") from None
    family = f"HRDA ({kind}, scales {'/'.join(str(s) for s in sorted(scales))}) on {config.variant}"
    return BuiltNetwork(module, family, {**HRDA_TEST, **inference})


def _config_floats(text: str, name: str) -> tuple[float, ...] | None:
    m = re.search(rf"\b{name}\s*=\s*[\[(]([\d.,\s]+)[\])]", text or "")
    return tuple(float(v) for v in m.group(1).replace(" ", "").split(",") if v) if m else None


CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors")


def from_builtin(path: Path, label: str, network: str | None = None):
    """The loader segmerge tries last: a :class:`Segmenter` for a MiT checkpoint, else ``None``."""
    from segmerge.checkpoints import open_checkpoint
    from segmerge.errors import CheckpointError
    from segmerge.segmenters.base import Segmenter

    try:
        checkpoint = open_checkpoint(path, network=network)
    except CheckpointError:
        # A file that is a checkpoint by its name but unreadable (unsafe, damaged, an LFS pointer...):
        # its own message says what to do; anything else is simply not this loader's.
        if network is not None or (path.is_file() and path.suffix in CHECKPOINT_SUFFIXES):
            raise
        return None
    content = checkpoint.pth_content
    config_text = ""
    if content is not None and isinstance((content.meta or {}).get("config"), str):
        config_text = content.meta["config"]
    built = build_network(checkpoint.metas(), checkpoint.get, config_text)
    if built is None:
        return None
    chosen = checkpoint.chosen_network
    description = f"{built.family}{', ' + chosen.description if chosen else ''}"
    return Segmenter(
        label,
        built.module,
        built.module.num_classes,
        lambda logits: logits,
        True,
        source=str(path),
        extra={"inference": built.inference, "family": built.family, "description": description},
    )

"""State dicts laid out as the field's projects save them, at reduced width, random values.

Names, nesting, registration order and tensor layouts follow the origin source code,
read from these repositories (lines as of the commits mirrored when the fixtures were
written):

* MiT, mmseg 0.x / original SegFormer layout: lhoyer/DAFormer
  ``mmseg/models/backbones/mix_transformer.py`` - ``Mlp`` (fc1, dwconv, fc2; l. 33-36),
  ``Attention`` (registers q, kv, proj, then sr and norm when sr_ratio > 1; l. 68-78; the
  forward runs q, sr, norm, kv, proj; l. 80-105), ``Block`` (norm1, attn, norm2, mlp;
  l. 125-140), ``OverlapPatchEmbed`` (proj conv, norm; l. 171-177), and
  ``MixVisionTransformer`` registering patch_embed1..4 (l. 227-245) before block1/norm1 ..
  block4/norm4 (l. 259-320), while ``forward_features`` runs patch_embed1, block1, norm1,
  patch_embed2, ... (l. 397-433).
* DAFormer head: lhoyer/DAFormer ``mmseg/models/decode_heads/decode_head.py`` registers
  ``conv_seg`` in ``BaseDecodeHead.__init__`` (l. 87), before the subclass's layers;
  ``daformer_head.py`` ``DAFormerHead`` registers ``embed_layers`` (a ModuleDict of MLPs with
  ``proj``; l. 144-153) and ``fuse_layer`` (l. 155), ``ASPPWrapper`` (l. 20-66) with
  ``aspp_modules`` and a 3x3 ``bottleneck`` ConvModule; config
  ``configs/_base_/models/daformer_sepaspp_mitb5.py`` (sep=True, dilations (1, 6, 12, 18),
  pool=False). A separable ASPP branch (mmseg ``sep_aspp_head.py``) is a 1x1 ConvModule
  for dilation 1 and a ``DepthwiseSeparableConvModule`` (depthwise_conv, pointwise_conv)
  otherwise; ConvModule = conv (no bias) + bn (weight, bias, running stats,
  num_batches_tracked).
* UDA wrappers: lhoyer/DAFormer ``mmseg/models/uda/uda_decorator.py`` (``self.model``,
  l. 34) and ``mmseg/models/uda/dacs.py`` (``self.ema_model``, l. 80; ``self.imnet_model``,
  l. 83), saved by mmcv's ``save_checkpoint`` as ``{meta, state_dict, optimizer}``; the
  origin's ``tools/test.py`` loads with ``revise_keys=[(r'^module\\.', ''), ('model.', '')]``
  (l. 153). lhoyer/MIC ``seg/mmseg/models/uda/dacs.py`` (l. 94-101) keeps the same names.
* MiT, mmseg 1.x layout: open-mmlab/mmsegmentation ``mmseg/models/backbones/mit.py``
  (commit 027eca06): ``MixFFN.layers`` = Sequential(fc1 1x1 conv, pe_conv 3x3 depthwise,
  act, drop, fc2 1x1 conv, drop), so keys ``ffn.layers.0/1/4``; ``EfficientMultiheadAttention``
  is mmcv's ``MultiheadAttention`` (``attn.attn`` = ``nn.MultiheadAttention``:
  ``in_proj_weight`` = cat(q, k, v), ``in_proj_bias``, ``out_proj``) plus ``sr`` and ``norm``
  registered after it, run before it; ``TransformerEncoderLayer`` registers norm1, attn,
  norm2, ffn; ``MixVisionTransformer.layers[i]`` = ModuleList([PatchEmbed (``projection``,
  ``norm``), ModuleList of layers, norm]). Decode head: mmseg 1.x
  ``mmseg/models/decode_heads/segformer_head.py`` (``convs`` of ConvModules, ``fusion_conv``,
  and ``conv_seg`` registered first by ``BaseDecodeHead``).
* Hugging Face SegFormer, as hub files and ``save_pretrained`` name it: huggingface/transformers
  ``src/transformers/models/segformer/convert_segformer_original_to_pytorch.py`` (the renames
  ``patch_embed{i}`` -> ``patch_embeddings.{i-1}``, ``block{i}`` -> ``block.{i-1}``,
  ``attn.q`` -> ``attention.self.query``, ``attn.kv`` split into ``key``/``value``,
  ``attn.proj`` -> ``attention.output.dense``, ``norm1/2`` -> ``layer_norm_1/2``, ``fc1/2`` ->
  ``dense1/2``, ``linear_c{i}`` -> ``linear_c.{i-1}``, ``linear_pred`` -> ``classifier``) and
  transformers 4.x ``modeling_segformer.py`` (encoder registers patch_embeddings, block,
  layer_norm; decode head linear_c, linear_fuse (no bias), batch_norm, classifier).
"""

from __future__ import annotations

import re

import torch

#: Reduced MiT: 4 stages, 2 blocks each (MiT-B5: 3, 6, 40, 3; widths 64, 128, 320, 512).
DIMS = (8, 16, 24, 32)
DEPTHS = (2, 2, 2, 2)
SR = (8, 4, 2, 1)
MLP_RATIO = 4
CHANNELS = 16  # DAFormer: 256
NUM_CLASSES = 19


def _t(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=gen)


def _bn(out: dict, prefix: str, c: int, gen: torch.Generator) -> None:
    out[f"{prefix}.weight"] = _t(gen, c)
    out[f"{prefix}.bias"] = _t(gen, c)
    out[f"{prefix}.running_mean"] = _t(gen, c)
    out[f"{prefix}.running_var"] = _t(gen, c).abs()
    out[f"{prefix}.num_batches_tracked"] = torch.tensor(40000, dtype=torch.int64)


def mit_mmseg0(seed: int = 0, prefix: str = "backbone.") -> dict[str, torch.Tensor]:
    """The MiT encoder as DAFormer's ``mix_transformer.py`` registers it (module order)."""
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    in_ch = 3
    for s, dim in enumerate(DIMS, 1):
        k = 7 if s == 1 else 3
        out[f"{prefix}patch_embed{s}.proj.weight"] = _t(gen, dim, in_ch, k, k)
        out[f"{prefix}patch_embed{s}.proj.bias"] = _t(gen, dim)
        out[f"{prefix}patch_embed{s}.norm.weight"] = _t(gen, dim)
        out[f"{prefix}patch_embed{s}.norm.bias"] = _t(gen, dim)
        in_ch = dim
    for s, (dim, depth, sr) in enumerate(zip(DIMS, DEPTHS, SR, strict=True), 1):
        hidden = dim * MLP_RATIO
        for b in range(depth):
            p = f"{prefix}block{s}.{b}."
            out[p + "norm1.weight"], out[p + "norm1.bias"] = _t(gen, dim), _t(gen, dim)
            out[p + "attn.q.weight"], out[p + "attn.q.bias"] = _t(gen, dim, dim), _t(gen, dim)
            out[p + "attn.kv.weight"], out[p + "attn.kv.bias"] = _t(gen, 2 * dim, dim), _t(gen, 2 * dim)
            out[p + "attn.proj.weight"], out[p + "attn.proj.bias"] = _t(gen, dim, dim), _t(gen, dim)
            if sr > 1:
                out[p + "attn.sr.weight"], out[p + "attn.sr.bias"] = _t(gen, dim, dim, sr, sr), _t(gen, dim)
                out[p + "attn.norm.weight"], out[p + "attn.norm.bias"] = _t(gen, dim), _t(gen, dim)
            out[p + "norm2.weight"], out[p + "norm2.bias"] = _t(gen, dim), _t(gen, dim)
            out[p + "mlp.fc1.weight"], out[p + "mlp.fc1.bias"] = _t(gen, hidden, dim), _t(gen, hidden)
            out[p + "mlp.dwconv.dwconv.weight"] = _t(gen, hidden, 1, 3, 3)
            out[p + "mlp.dwconv.dwconv.bias"] = _t(gen, hidden)
            out[p + "mlp.fc2.weight"], out[p + "mlp.fc2.bias"] = _t(gen, dim, hidden), _t(gen, dim)
        out[f"{prefix}norm{s}.weight"], out[f"{prefix}norm{s}.bias"] = _t(gen, dim), _t(gen, dim)
    return out


def daformer_head(seed: int = 0, prefix: str = "decode_head.", num_classes: int = NUM_CLASSES) -> dict:
    """DAFormer's sep-ASPP decode head in registration order (``conv_seg`` first)."""
    gen = torch.Generator().manual_seed(seed + 1000)
    c = CHANNELS
    out: dict[str, torch.Tensor] = {}
    out[f"{prefix}conv_seg.weight"] = _t(gen, num_classes, c, 1, 1)
    out[f"{prefix}conv_seg.bias"] = _t(gen, num_classes)
    for i, dim in enumerate(DIMS):
        out[f"{prefix}embed_layers.{i}.proj.weight"] = _t(gen, c, dim)
        out[f"{prefix}embed_layers.{i}.proj.bias"] = _t(gen, c)
    a = f"{prefix}fuse_layer.aspp_modules."
    out[a + "0.conv.weight"] = _t(gen, c, 4 * c, 1, 1)
    _bn(out, a + "0.bn", c, gen)
    for j in (1, 2, 3):
        out[a + f"{j}.depthwise_conv.conv.weight"] = _t(gen, 4 * c, 1, 3, 3)
        _bn(out, a + f"{j}.depthwise_conv.bn", 4 * c, gen)
        out[a + f"{j}.pointwise_conv.conv.weight"] = _t(gen, c, 4 * c, 1, 1)
        _bn(out, a + f"{j}.pointwise_conv.bn", c, gen)
    out[f"{prefix}fuse_layer.bottleneck.conv.weight"] = _t(gen, c, 4 * c, 3, 3)
    _bn(out, f"{prefix}fuse_layer.bottleneck.bn", c, gen)
    return out


def daformer(seed: int = 0, num_classes: int = NUM_CLASSES) -> dict[str, torch.Tensor]:
    """A DAFormer segmentor (``EncoderDecoder``: backbone, then decode_head)."""
    return {**mit_mmseg0(seed), **daformer_head(seed, num_classes=num_classes)}


def uda_wrapper(seed: int = 0, imnet: bool = True) -> dict[str, torch.Tensor]:
    """A DACS training state dict: student, EMA teacher, ImageNet model, in that order."""
    out = {f"model.{k}": v for k, v in daformer(seed).items()}
    out.update({f"ema_model.{k}": v for k, v in daformer(seed + 50).items()})
    if imnet:
        out.update({f"imnet_model.{k}": v for k, v in daformer(seed + 90).items()})
    return out


def mmcv_checkpoint(state_dict: dict) -> dict:
    """What mmcv 1.x ``save_checkpoint`` writes (``mmcv/runner/checkpoint.py``)."""
    return {
        "meta": {"mmcv_version": "1.3.7", "time": "Mon Jan 10 12:00:00 2022", "iter": 40000, "epoch": 1},
        "state_dict": state_dict,
        "optimizer": {"state": {}, "param_groups": [{"lr": 6e-05, "params": [0, 1]}]},
    }


def revise_and_check(saved: dict, reference: dict) -> list[str]:
    """The origin ``tools/test.py`` way of loading: apply revise_keys, return missing keys."""
    state = saved.get("state_dict", saved)
    revised = {}
    for key, value in state.items():
        for pattern, repl in [(r"^module\.", ""), ("model.", "")]:
            key = re.sub(pattern, repl, key)
        revised[key] = value
    return [k for k in reference if k not in revised]


def mit_mmseg1(seed: int = 0, prefix: str = "backbone.") -> dict[str, torch.Tensor]:
    """The same MiT as mmseg 1.x ``mit.py`` registers it (module order, its tensor layouts)."""
    out: dict[str, torch.Tensor] = {}
    old = mit_mmseg0(seed, "")
    for s, (depth, sr) in enumerate(zip(DEPTHS, SR, strict=True)):
        pe, ly = f"{prefix}layers.{s}.0.", f"{prefix}layers.{s}.1."
        out[pe + "projection.weight"] = old[f"patch_embed{s + 1}.proj.weight"]
        out[pe + "projection.bias"] = old[f"patch_embed{s + 1}.proj.bias"]
        out[pe + "norm.weight"] = old[f"patch_embed{s + 1}.norm.weight"]
        out[pe + "norm.bias"] = old[f"patch_embed{s + 1}.norm.bias"]
        for b in range(depth):
            o, n = f"block{s + 1}.{b}.", f"{ly}{b}."
            out[n + "norm1.weight"], out[n + "norm1.bias"] = old[o + "norm1.weight"], old[o + "norm1.bias"]
            out[n + "attn.attn.in_proj_weight"] = torch.cat([old[o + "attn.q.weight"], old[o + "attn.kv.weight"]])
            out[n + "attn.attn.in_proj_bias"] = torch.cat([old[o + "attn.q.bias"], old[o + "attn.kv.bias"]])
            out[n + "attn.attn.out_proj.weight"] = old[o + "attn.proj.weight"]
            out[n + "attn.attn.out_proj.bias"] = old[o + "attn.proj.bias"]
            if sr > 1:
                out[n + "attn.sr.weight"], out[n + "attn.sr.bias"] = old[o + "attn.sr.weight"], old[o + "attn.sr.bias"]
                out[n + "attn.norm.weight"] = old[o + "attn.norm.weight"]
                out[n + "attn.norm.bias"] = old[o + "attn.norm.bias"]
            out[n + "norm2.weight"], out[n + "norm2.bias"] = old[o + "norm2.weight"], old[o + "norm2.bias"]
            out[n + "ffn.layers.0.weight"] = old[o + "mlp.fc1.weight"][:, :, None, None]
            out[n + "ffn.layers.0.bias"] = old[o + "mlp.fc1.bias"]
            out[n + "ffn.layers.1.weight"] = old[o + "mlp.dwconv.dwconv.weight"]
            out[n + "ffn.layers.1.bias"] = old[o + "mlp.dwconv.dwconv.bias"]
            out[n + "ffn.layers.4.weight"] = old[o + "mlp.fc2.weight"][:, :, None, None]
            out[n + "ffn.layers.4.bias"] = old[o + "mlp.fc2.bias"]
        out[f"{prefix}layers.{s}.2.weight"] = old[f"norm{s + 1}.weight"]
        out[f"{prefix}layers.{s}.2.bias"] = old[f"norm{s + 1}.bias"]
    return out


def segformer_head_mmseg1(seed: int = 0, prefix: str = "decode_head.") -> dict[str, torch.Tensor]:
    """mmseg 1.x ``SegformerHead`` in registration order (``conv_seg`` first); 3x DAFormer's
    channels, as SegFormer-B5's 768 are to DAFormer's 256."""
    gen = torch.Generator().manual_seed(seed + 2000)
    c = 3 * CHANNELS
    out = {f"{prefix}conv_seg.weight": _t(gen, NUM_CLASSES, c, 1, 1), f"{prefix}conv_seg.bias": _t(gen, NUM_CLASSES)}
    for i, dim in enumerate(DIMS):
        out[f"{prefix}convs.{i}.conv.weight"] = _t(gen, c, dim, 1, 1)
        _bn(out, f"{prefix}convs.{i}.bn", c, gen)
    out[f"{prefix}fusion_conv.conv.weight"] = _t(gen, c, 4 * c, 1, 1)
    _bn(out, f"{prefix}fusion_conv.bn", c, gen)
    return out


def hf_segformer(seed: int = 0) -> dict[str, torch.Tensor]:
    """``SegformerForSemanticSegmentation`` state dict (transformers 4.x names, module order)."""
    gen = torch.Generator().manual_seed(seed + 3000)
    old = mit_mmseg0(seed, "")
    e = "segformer.encoder."
    out: dict[str, torch.Tensor] = {}
    for s in range(4):
        for a, b in (("proj", "proj"), ("norm", "layer_norm")):
            out[f"{e}patch_embeddings.{s}.{b}.weight"] = old[f"patch_embed{s + 1}.{a}.weight"]
            out[f"{e}patch_embeddings.{s}.{b}.bias"] = old[f"patch_embed{s + 1}.{a}.bias"]
    for s, (depth, sr) in enumerate(zip(DEPTHS, SR, strict=True)):
        for b in range(depth):
            o, n = f"block{s + 1}.{b}.", f"{e}block.{s}.{b}."
            pairs = [("layer_norm_1", "norm1"), ("attention.self.query", "attn.q"), ("attention.self.key", None)]
            pairs += [("attention.self.value", None)]
            if sr > 1:
                pairs += [("attention.self.sr", "attn.sr"), ("attention.self.layer_norm", "attn.norm")]
            pairs += [("attention.output.dense", "attn.proj"), ("layer_norm_2", "norm2"), ("mlp.dense1", "mlp.fc1")]
            pairs += [("mlp.dwconv.dwconv", "mlp.dwconv.dwconv"), ("mlp.dense2", "mlp.fc2")]
            for new, orig in pairs:
                for leaf in ("weight", "bias"):
                    if orig is None:  # key and value: the halves of mmseg 0.x's kv
                        half = 0 if new.endswith("key") else 1
                        out[n + f"{new}.{leaf}"] = old[o + f"attn.kv.{leaf}"].chunk(2)[half].clone()
                    else:
                        out[n + f"{new}.{leaf}"] = old[o + f"{orig}.{leaf}"]
    for s in range(4):
        out[f"{e}layer_norm.{s}.weight"] = old[f"norm{s + 1}.weight"]
        out[f"{e}layer_norm.{s}.bias"] = old[f"norm{s + 1}.bias"]
    c = CHANNELS
    for i, dim in enumerate(DIMS):
        out[f"decode_head.linear_c.{i}.proj.weight"] = _t(gen, c, dim)
        out[f"decode_head.linear_c.{i}.proj.bias"] = _t(gen, c)
    out["decode_head.linear_fuse.weight"] = _t(gen, c, 4 * c, 1, 1)
    _bn(out, "decode_head.batch_norm", c, gen)
    out["decode_head.classifier.weight"] = _t(gen, NUM_CLASSES, c, 1, 1)
    out["decode_head.classifier.bias"] = _t(gen, NUM_CLASSES)
    return out

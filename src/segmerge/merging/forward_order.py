"""Layer order as the forward pass computes it, for the architectures of the field.

Depth in the layer-wise rule is a layer's position in the forward pass. A file's key
order is the order modules were *registered*, which is not that: DAFormer's MiT registers
``patch_embed1..4`` before ``block1``, mmseg heads register ``conv_seg`` first, and
safetensors files sort keys by name. So each family's forward order is kept here as data:
ordered regular expressions, each giving the keys it matches a rank. The sources of each
profile are named beside it.

A rank is a tuple ``(part, stage, slot, block, step)``: part 0 is the encoder, 1 the decode
head, 2 an auxiliary head. Entries naming a group (``"s"``) take that group's number. What
follows the matched text ranks by its module names (numbers as numbers; a conv before its
norm), so a ConvModule's ``conv`` precedes its ``bn`` whatever the file's order.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

Rank = tuple[int | str, ...]


def _block(prefix: str, steps: Sequence[str], rank: Rank) -> list[tuple[str, Rank]]:
    """Rows for the modules of one block, in forward order: ``rank`` then the step's index."""
    return [(prefix + step + r"(\.|$)", (*rank, n)) for n, step in enumerate(steps)]


#: MiT as mmseg 0.x / the original SegFormer / DAFormer, HRDA, MIC, EDAPS write it
#: (lhoyer/DAFormer mmseg/models/backbones/mix_transformer.py: Attention.forward runs q, sr,
#: norm, kv, proj; forward_features runs patch_embed_i, block_i, norm_i per stage).
MIT_MMSEG0 = [
    (r"backbone\.patch_embed(?P<s>\d+)\.", (0, "s", 0)),
    *_block(
        r"backbone\.block(?P<s>\d+)\.(?P<b>\d+)\.",
        [
            r"norm1",
            r"attn\.q",
            r"attn\.sr",
            r"attn\.norm",
            r"attn\.kv",
            r"attn\.proj",
            r"norm2",
            r"mlp\.fc1",
            r"mlp\.dwconv",
            r"mlp\.fc2",
        ],
        (0, "s", 1, "b"),
    ),
    (r"backbone\.norm(?P<s>\d+)\.", (0, "s", 2)),
]

#: MiT as mmseg 1.x writes it (open-mmlab/mmsegmentation mmseg/models/backbones/mit.py:
#: layers[i] = [PatchEmbed, encoder layers, norm]; EfficientMultiheadAttention runs sr and
#: norm, then nn.MultiheadAttention (in_proj, out_proj); MixFFN.layers 0, 1, 4 are fc1,
#: the depthwise pe_conv and fc2).
MIT_MMSEG1 = [
    (r"backbone\.layers\.(?P<s>\d+)\.0\.", (0, "s", 0)),
    *_block(
        r"backbone\.layers\.(?P<s>\d+)\.1\.(?P<b>\d+)\.",
        [
            r"norm1",
            r"attn\.sr",
            r"attn\.norm",
            r"attn\.attn\.in_proj_(weight|bias)",
            r"attn\.attn\.out_proj",
            r"norm2",
            r"ffn\.layers\.0",
            r"ffn\.layers\.1",
            r"ffn\.layers\.4",
        ],
        (0, "s", 1, "b"),
    ),
    (r"backbone\.layers\.(?P<s>\d+)\.2\.", (0, "s", 2)),
]

#: MiT as Hugging Face transformers writes it (models/segformer/modeling_segformer.py,
#: transformers 4.x names, kept on disk by 5.x: SegformerEfficientSelfAttention computes
#: query, then sr and layer_norm, then key and value).
MIT_HF = [
    (r"(segformer\.)?encoder\.patch_embeddings\.(?P<s>\d+)\.", (0, "s", 0)),
    *_block(
        r"(segformer\.)?encoder\.block\.(?P<s>\d+)\.(?P<b>\d+)\.",
        [
            r"layer_norm_1",
            r"attention\.self\.query",
            r"attention\.self\.sr",
            r"attention\.self\.layer_norm",
            r"attention\.self\.key",
            r"attention\.self\.value",
            r"attention\.output\.dense",
            r"layer_norm_2",
            r"mlp\.dense1",
            r"mlp\.dwconv",
            r"mlp\.dense2",
        ],
        (0, "s", 1, "b"),
    ),
    (r"(segformer\.)?encoder\.layer_norm\.(?P<s>\d+)\.", (0, "s", 2)),
]

_HEAD = r"decode_head\.((?P<h>head|scale_attention)\.)?"

#: Decode heads: DAFormer (lhoyer/DAFormer mmseg/models/decode_heads/daformer_head.py: the
#: embed_layers per stage, then fuse_layer: image_pool, context_layer, aspp_modules,
#: bottleneck), HRDA's HRDAHead (lhoyer/HRDA hrda_head.py: ``head`` then ``scale_attention``),
#: SegFormer heads of mmseg 0.x (segformer_head.py: linear_c4 first, down to linear_c1, then
#: linear_fuse), mmseg 1.x (convs, fusion_conv) and transformers (linear_c, linear_fuse,
#: batch_norm, classifier), UperNet (uper_head.py: lateral_convs, psp_modules, bottleneck,
#: fpn_convs, fpn_bottleneck); every mmseg head ends with conv_seg (registered first by
#: BaseDecodeHead, run last by cls_seg).
HEADS = [
    (_HEAD + r"embed_layers\.(?P<i>\d+)\.", (1, "h", 0, "i")),
    (_HEAD + r"fuse_layer\.image_pool\.", (1, "h", 1, 0)),
    (_HEAD + r"fuse_layer\.context_layer\.", (1, "h", 1, 1)),
    (_HEAD + r"fuse_layer\.aspp_modules\.", (1, "h", 1, 2)),
    (_HEAD + r"fuse_layer\.bottleneck\.", (1, "h", 1, 3)),
    (_HEAD + r"fuse_layer\.", (1, "h", 1, 4)),
    (_HEAD + r"linear_c(?P<i>\d)\.", (1, "h", 0, "-i")),
    (_HEAD + r"linear_c\.(?P<i>\d+)\.", (1, "h", 0, "i")),
    (_HEAD + r"convs\.(?P<i>\d+)\.", (1, "h", 0, "i")),
    (_HEAD + r"(linear_fuse|fusion_conv)\.", (1, "h", 1)),
    (_HEAD + r"batch_norm\.", (1, "h", 2)),
    (_HEAD + r"lateral_convs\.(?P<i>\d+)\.", (1, "h", 0, "i")),
    (_HEAD + r"psp_modules\.", (1, "h", 1)),
    (_HEAD + r"bottleneck\.", (1, "h", 2)),
    (_HEAD + r"fpn_convs\.(?P<i>\d+)\.", (1, "h", 3, "i")),
    (_HEAD + r"fpn_bottleneck\.", (1, "h", 4)),
    (_HEAD + r"(conv_seg|linear_pred|classifier)\.", (1, "h", 9)),
    (r"auxiliary_head\.(conv_seg|classifier)\.", (2, 9)),
    (r"auxiliary_head\.", (2, 0)),
]

#: EDAPS's MaskRCNNPanoptic (susaha/edaps mmdet/models/detectors/mask_rcnn_panoptic.py: a
#: TwoStageDetector - backbone, neck, rpn_head, roi_head - plus a DAFormer decode_head, l. 48;
#: configs/_base_/models/maskrcnn_sepaspp_mitb5.py) with mmdet's FPN (lateral_convs, then
#: fpn_convs), RPNHead (rpn_conv, rpn_cls, rpn_reg), Shared2FCBBoxHead (shared_fcs, fc_cls,
#: fc_reg) and FCNMaskHead (convs, upsample, conv_logits). The branches run side by side;
#: by convention the neck comes before the semantic head and the instance heads after it.
MMDET_PANOPTIC = [
    (r"neck\.lateral_convs\.(?P<i>\d+)\.", (1, -2, 0, "i")),
    (r"neck\.fpn_convs\.(?P<i>\d+)\.", (1, -2, 1, "i")),
    (r"neck\.", (1, -2, 2)),
    (r"rpn_head\.rpn_conv\.", (3, 0, 0)),
    (r"rpn_head\.rpn_cls\.", (3, 0, 1)),
    (r"rpn_head\.rpn_reg\.", (3, 0, 2)),
    (r"rpn_head\.", (3, 0, 3)),
    (r"roi_head\.bbox_head\.shared_fcs\.(?P<i>\d+)\.", (3, 1, 0, "i")),
    (r"roi_head\.bbox_head\.fc_cls\.", (3, 1, 1)),
    (r"roi_head\.bbox_head\.fc_reg\.", (3, 1, 2)),
    (r"roi_head\.bbox_head\.", (3, 1, 3)),
    (r"roi_head\.mask_head\.convs\.(?P<i>\d+)\.", (3, 2, 0, "i")),
    (r"roi_head\.mask_head\.upsample\.", (3, 2, 1)),
    (r"roi_head\.mask_head\.conv_logits\.", (3, 2, 2)),
    (r"roi_head\.", (3, 3)),
]

_PIX = r"model\.pixel_level_module\.decoder\."
_TRF = r"model\.transformer_module\."

#: Hugging Face Mask2Former (transformers models/mask2former/modeling_mask2former.py): the
#: backbone (``pixel_level_module.encoder``, in its own order), the pixel decoder (input
#: projections, level embeddings, deformable encoder layers, then the FPN adapter_i/layer_i
#: and mask_projection), the transformer decoder (queries, then each layer's masked
#: cross-attention, self-attention and FFN), and last the predictors used on its outputs.
MASK2FORMER_HF = [
    (r"model\.pixel_level_module\.encoder\.", (0, 0)),
    (_PIX + r"input_projections\.", (0, 1, 0)),
    (_PIX + r"level_embed", (0, 1, 1)),
    *_block(
        _PIX + r"encoder\.layers\.(?P<b>\d+)\.",
        [
            r"self_attn\.value_proj",
            r"self_attn\.sampling_offsets",
            r"self_attn\.attention_weights",
            r"self_attn\.output_proj",
            r"self_attn_layer_norm",
            r"fc1",
            r"fc2",
            r"final_layer_norm",
        ],
        (0, 1, 2, "b"),
    ),
    (_PIX + r"adapter_(?P<i>\d+)\.", (0, 1, 3, "-i", 0)),
    (_PIX + r"layer_(?P<i>\d+)\.", (0, 1, 3, "-i", 1)),
    (_PIX + r"mask_projection\.", (0, 1, 4)),
    (_PIX, (0, 1, 5)),
    (_TRF + r"(input_projections|level_embed)", (0, 2, 0)),
    (_TRF + r"queries_(features|embedder)", (0, 2, 1)),
    *_block(
        _TRF + r"decoder\.layers\.(?P<b>\d+)\.",
        [
            r"cross_attn\.in_proj_(weight|bias)",
            r"cross_attn\.out_proj",
            r"cross_attn_layer_norm",
            r"self_attn\.q_proj",
            r"self_attn\.k_proj",
            r"self_attn\.v_proj",
            r"self_attn\.out_proj",
            r"self_attn_layer_norm",
            r"fc1",
            r"fc2",
            r"final_layer_norm",
        ],
        (0, 2, 2, "b"),
    ),
    (_TRF + r"decoder\.layernorm", (0, 3, 0)),
    (_TRF + r"decoder\.mask_predictor\.", (0, 3, 1)),
    (_TRF, (0, 2, 3)),
    (r"class_predictor\.", (0, 3, 2)),
]

PROFILES: dict[str, list[tuple[str, Rank]]] = {
    "mit-mmseg0": MIT_MMSEG0,
    "mit-mmseg1": MIT_MMSEG1,
    "mit-hf": MIT_HF,
    "mmseg-heads": HEADS,
    "mmdet-panoptic": MMDET_PANOPTIC,
    "mask2former-hf": MASK2FORMER_HF,
}

#: Rank of a module name inside a matched module: a convolution or projection before its norm.
_INNER = {"conv": 0, "depthwise_conv": 0, "proj": 0, "projection": 0, "pointwise_conv": 1, "bn": 2, "norm": 2}
_NAMED = {"head": 0, "scale_attention": 1}
#: A profile orders a file when it matches at least this share of its keys.
COVERS = 0.5

_COMPILED = [(name, re.compile(pattern), rank) for name, rows in PROFILES.items() for pattern, rank in rows]


@dataclass
class ForwardOrder:
    keys: list[str]
    families: list[str]  # the profiles that matched
    unmatched: int  # keys no profile knows, placed after the key before them in the file


def _value(match: re.Match, item: int | str) -> int:
    if isinstance(item, int):
        return item
    sign = -1 if item.startswith("-") else 1
    text = match.group(item.lstrip("-"))
    if text is None:
        return 0
    return sign * (int(text) if text.isdigit() else _NAMED.get(text, 0))


def _inner(rest: str) -> tuple[int, ...]:
    modules = rest.split(".")[:-1]  # the leaf (weight, bias, running_mean) does not order
    return tuple(int(m) if m.isdigit() else _INNER.get(m, 1) for m in modules)


def forward_rank(key: str) -> tuple[str, tuple] | None:
    """(profile name, rank) of a key, or None when no profile knows it."""
    for name, pattern, rank in _COMPILED:
        m = pattern.match(key)
        if m is not None:
            full = tuple(_value(m, item) for item in rank)
            return name, full + (-1,) * (6 - len(full)) + _inner(key[m.end() :])
    return None


def forward_order(keys: Sequence[str]) -> ForwardOrder | None:
    """The keys in forward order when a profile knows most of them, else None.

    Keys no profile knows keep their place after the key that precedes them in ``keys``.
    """
    ranked = [forward_rank(k) for k in keys]
    known = sum(r is not None for r in ranked)
    if not keys or known < COVERS * len(keys):
        return None
    sort_keys = []
    previous: tuple = ()
    for index, r in enumerate(ranked):
        if r is not None:
            previous = r[1]
        sort_keys.append((previous, index))
    order = sorted(range(len(keys)), key=sort_keys.__getitem__)
    families = sorted({r[0] for r in ranked if r is not None}, key=list(PROFILES).index)
    return ForwardOrder([keys[i] for i in order], families, len(keys) - known)


def order_like(keys: Sequence[str], reference: Sequence[str]) -> list[str]:
    """``keys`` in the order of ``reference`` (another model's keys, under these names); keys it
    lacks keep their place after the key that precedes them in ``keys``."""
    position = {k: i for i, k in enumerate(reference)}
    sort_keys = []
    previous = -1
    for index, k in enumerate(keys):
        if k in position:
            previous = position[k]
        sort_keys.append((previous, index))
    return [keys[i] for i in sorted(range(len(keys)), key=sort_keys.__getitem__)]

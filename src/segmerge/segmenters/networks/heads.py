"""Decode heads of the MiT family in plain PyTorch: SegFormer's MLP head and DAFormer's head.

Building blocks are mmcv's, as the origin code uses them: ``ConvModule`` = conv (no bias when
followed by a norm), BatchNorm, ReLU (mmcv ``cnn/bricks/conv_module.py``, order conv-norm-act);
``DepthwiseSeparableConvModule`` = a depthwise ConvModule then a 1x1 pointwise ConvModule, both
with norm and ReLU (mmcv ``cnn/bricks/depthwise_separable_conv_module.py``); mmseg's ``resize`` =
bilinear interpolation with ``align_corners=False``. Module names match the origin's state dict
keys under ``decode_head.``, so DAFormer checkpoints load as they are.

Sources (lhoyer/DAFormer, commit e6f6e04):

* ``mmseg/models/decode_heads/daformer_head.py``: ``ASPPWrapper`` (l. 19-83: optional image pool,
  the ASPP branches, concatenated, a 3x3 ``bottleneck`` ConvModule), ``build_layer`` (l. 86-121:
  ``mlp`` = a Linear ``proj`` on the flattened tokens; ``conv`` = ConvModule with padding
  kernel // 2; ``aspp`` = ASPPWrapper), ``DAFormerHead`` (l. 124-183: ``embed_layers`` per stage,
  each resized to the first stage's size, concatenated in stage order, ``fuse_layer``,
  ``cls_seg`` = dropout + 1x1 ``conv_seg``);
* ``mmseg/models/decode_heads/aspp_head.py`` ``ASPPModule`` (a ConvModule per dilation: 1x1 for
  dilation 1, else 3x3 with padding = dilation) and ``sep_aspp_head.py`` ``DepthwiseSeparableASPPModule``
  (l. 12-29: branches with dilation > 1 are DepthwiseSeparableConvModules);
* ``mmseg/models/decode_heads/segformer_head.py`` ``SegFormerHead`` (l. 33-89: ``linear_c`` MLPs,
  resized to stage 1, concatenated in stage order, ``linear_fuse`` ConvModule, ``linear_pred``).
  NVlabs/SegFormer's original head names them ``linear_c1..4`` and concatenates c4, c3, c2, c1;
  transformers' ``SegformerDecodeHead`` concatenates in reverse too (``all_hidden_states[::-1]``),
  with ``linear_fuse`` (a bias-free conv), ``batch_norm`` and ``classifier``;
* open-mmlab/mmsegmentation (commit 0554aec) ``mmseg/models/decode_heads/segformer_head.py``
  ``SegformerHead`` (mmseg 0.2x-1.x; the forward at the end of the file): a 1x1 ConvModule per
  stage (``convs``), resized to stage 1, concatenated in stage order, ``fusion_conv``, ``cls_seg``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def resize(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class ConvModule(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, kernel: int, dilation: int = 1, groups: int = 1, act: bool = True):
        super().__init__()
        padding = 0 if kernel == 1 else dilation * (kernel // 2)
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, padding=padding, dilation=dilation, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return F.relu(x) if self.act else x


class DepthwiseSeparableConvModule(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, kernel: int, dilation: int):
        super().__init__()
        self.depthwise_conv = ConvModule(in_ch, in_ch, kernel, dilation, groups=in_ch)
        self.pointwise_conv = ConvModule(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise_conv(self.depthwise_conv(x))


class MLP(nn.Module):
    """A Linear on each token: [N,C,H,W] -> [N,E,H,W] (``segformer_head.py`` ``MLP``)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.proj = nn.Linear(in_ch, out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        return self.proj(x.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(n, -1, h, w)


class ASPPWrapper(nn.Module):
    """``branches``: (dilation, separable) per ASPP branch, in the checkpoint's order."""

    def __init__(self, in_ch: int, channels: int, branches: Sequence[tuple[int, bool]], pool: bool):
        super().__init__()
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), ConvModule(in_ch, channels, 1)) if pool else None
        modules = []
        for dilation, separable in branches:
            if dilation == 1:
                modules.append(ConvModule(in_ch, channels, 1))
            elif separable:
                modules.append(DepthwiseSeparableConvModule(in_ch, channels, 3, dilation))
            else:
                modules.append(ConvModule(in_ch, channels, 3, dilation))
        self.aspp_modules = nn.ModuleList(modules)
        self.bottleneck = ConvModule((len(branches) + int(pool)) * channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [resize(self.image_pool(x), x.shape[2:])] if self.image_pool is not None else []
        outs.extend(m(x) for m in self.aspp_modules)
        return self.bottleneck(torch.cat(outs, dim=1))


class DAFormerHead(nn.Module):
    """Stage features -> logits at stage 1's resolution. ``fuse``: a ConvModule or an ASPPWrapper."""

    def __init__(self, in_dims: Sequence[int], embed_dims: Sequence[int], fuse: nn.Module, channels: int, classes: int):
        super().__init__()
        self.conv_seg = nn.Conv2d(channels, classes, 1)
        pairs = enumerate(zip(in_dims, embed_dims, strict=True))
        self.embed_layers = nn.ModuleDict({str(i): MLP(c, e) for i, (c, e) in pairs})
        self.fuse_layer = fuse

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        size = features[0].shape[2:]
        embedded = []
        for i, x in enumerate(features):
            e = self.embed_layers[str(i)](x)
            embedded.append(e if e.shape[2:] == size else resize(e, size))
        return self.conv_seg(self.fuse_layer(torch.cat(embedded, dim=1)))


class SegFormerHead(nn.Module):
    """SegFormer's all-MLP head. ``reverse``: concatenate stage 4 first (NVlabs/SegFormer and
    transformers) rather than stage 1 first (DAFormer's ``segformer_head.py``)."""

    def __init__(self, in_dims: Sequence[int], channels: int, classes: int, reverse: bool, fuse_kernel: int = 1):
        super().__init__()
        self.linear_c = nn.ModuleList(MLP(c, channels) for c in in_dims)
        self.linear_fuse = ConvModule(channels * len(in_dims), channels, fuse_kernel)
        self.conv_seg = nn.Conv2d(channels, classes, 1)
        self.reverse = reverse

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        size = features[0].shape[2:]
        embedded = []
        for layer, x in zip(self.linear_c, features, strict=True):
            e = layer(x)
            embedded.append(e if e.shape[2:] == size else resize(e, size))
        if self.reverse:
            embedded.reverse()
        return self.conv_seg(self.linear_fuse(torch.cat(embedded, dim=1)))


class MmsegSegformerHead(nn.Module):
    """mmsegmentation's own ``SegformerHead`` (ConvModules where SegFormer has Linear layers)."""

    def __init__(self, in_dims: Sequence[int], channels: int, classes: int):
        super().__init__()
        self.conv_seg = nn.Conv2d(channels, classes, 1)
        self.convs = nn.ModuleList(ConvModule(c, channels, 1) for c in in_dims)
        self.fusion_conv = ConvModule(channels * len(in_dims), channels, 1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        size = features[0].shape[2:]
        outs = [resize(conv(x), size) for conv, x in zip(self.convs, features, strict=True)]
        return self.conv_seg(self.fusion_conv(torch.cat(outs, dim=1)))


class EncoderDecoder(nn.Module):
    """mmseg's ``EncoderDecoder.encode_decode`` without the final resize: images -> logits at 1/4."""

    def __init__(self, backbone: nn.Module, decode_head: nn.Module, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.decode_head = decode_head
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode_head(self.backbone(x))

"""The Mix Transformer (MiT-B0..B5) encoder of SegFormer, DAFormer, HRDA, MIC and EDAPS, in plain PyTorch.

Module names follow the mmseg 0.x / original SegFormer layout (``patch_embed1``, ``block1.0.attn.q``,
``attn.kv``, ``mlp.fc1``, ``norm1``), the layout :mod:`segmerge.merging.layouts` converts the
other two (mmseg 1.x, Hugging Face) into, so a state dict in that layout loads with
``load_state_dict`` as is. The computation follows lhoyer/DAFormer
``mmseg/models/backbones/mix_transformer.py`` (commit e6f6e04):

* ``OverlapPatchEmbed`` (l. 153-185): a strided convolution (kernel 7 stride 4 for stage 1, kernel 3
  stride 2 after; padding kernel // 2), flattened to tokens, LayerNorm (eps 1e-5);
* ``Attention`` (l. 49-107): q from the tokens; with ``sr_ratio > 1`` the keys and values come from
  the tokens reshaped to the image, reduced by a ``sr_ratio``-strided convolution and LayerNormed;
  ``kv`` = cat(k, v); scale ``head_dim ** -0.5``; softmax; ``proj``;
* ``Mlp`` (l. 22-46) with ``DWConv`` (l. 442-454): fc1, 3x3 depthwise ``dwconv.dwconv`` on the token
  grid, GELU, fc2;
* ``Block`` (l. 110-150): pre-norm residual attention then MLP, LayerNorm eps 1e-6 (``mit_b0..b5``
  pass ``partial(nn.LayerNorm, eps=1e-6)``, l. 457-553; the attention's ``norm`` keeps eps 1e-5, l. 78);
* ``MixVisionTransformer.forward_features`` (l. 397-433): per stage patch embed, blocks, stage norm
  (eps 1e-6), tokens back to [N,C,H,W]; the four stage outputs are the features.

Drop-path and dropout are identity at test time and left out. The same computation is
transformers' ``SegformerEncoder`` (``modeling_segformer.py``); ``tests/test_builtin_networks.py``
checks the two agree to 1e-5 on the same weights.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

#: MiT variants (``mix_transformer.py`` l. 457-553): widths and blocks per stage; all use
#: 1, 2, 5, 8 heads, reduction ratios 8, 4, 2, 1 and MLP ratio 4.
VARIANTS = {
    "mit_b0": ((32, 64, 160, 256), (2, 2, 2, 2)),
    "mit_b1": ((64, 128, 320, 512), (2, 2, 2, 2)),
    "mit_b2": ((64, 128, 320, 512), (3, 4, 6, 3)),
    "mit_b3": ((64, 128, 320, 512), (3, 4, 18, 3)),
    "mit_b4": ((64, 128, 320, 512), (3, 8, 27, 3)),
    "mit_b5": ((64, 128, 320, 512), (3, 6, 40, 3)),
}
HEADS = (1, 2, 5, 8)


@dataclass(frozen=True)
class MiTConfig:
    dims: tuple[int, ...]
    depths: tuple[int, ...]
    heads: tuple[int, ...]
    sr_ratios: tuple[int, ...]
    mlp_hidden: tuple[int, ...]
    patch_sizes: tuple[int, ...]
    strides: tuple[int, ...]
    qkv_bias: bool = True

    @property
    def variant(self) -> str:
        return next((n for n, (d, b) in VARIANTS.items() if (d, b) == (self.dims, self.depths)), "MiT (custom)")

    @classmethod
    def from_state_dict(cls, shapes: Mapping[str, tuple[int, ...]], prefix: str = "backbone.", config_text: str = ""):
        """The encoder's hyper-parameters from its tensors' shapes (mmseg 0.x names); the number of
        heads, which no shape holds, from ``num_heads=[...]`` in an mmcv config text when present,
        else MiT's 1, 2, 5, 8 (or the nearest smaller count that divides a width)."""
        stages = sorted(
            int(m.group(1)) for k in shapes if (m := re.match(re.escape(prefix) + r"patch_embed(\d)\.proj\.weight$", k))
        )
        if stages != list(range(1, len(stages) + 1)) or not stages:
            raise ValueError("no MiT patch embeddings")
        dims, depths, srs, hidden, patches, strides = [], [], [], [], [], []
        for s in stages:
            proj = shapes[f"{prefix}patch_embed{s}.proj.weight"]
            dims.append(proj[0])
            patches.append(proj[2])
            strides.append(4 if proj[2] == 7 else 2)  # OverlapPatchEmbed: (7, 4) first, then (3, 2)
            blocks = {
                int(m.group(1)) for k in shapes if (m := re.match(re.escape(f"{prefix}block{s}.") + r"(\d+)\.", k))
            }
            depths.append(len(blocks))
            sr = shapes.get(f"{prefix}block{s}.0.attn.sr.weight")
            srs.append(sr[2] if sr is not None else 1)
            hidden.append(shapes[f"{prefix}block{s}.0.mlp.fc1.weight"][0])
        heads = _heads_from_config(config_text, len(stages))
        if heads is None:
            heads = tuple(
                next(h for h in range(min(HEADS[i] if i < 4 else 8, d), 0, -1) if d % h == 0)
                for i, d in enumerate(dims)
            )
        qkv_bias = f"{prefix}block1.0.attn.q.bias" in shapes
        return cls(
            tuple(dims), tuple(depths), heads, tuple(srs), tuple(hidden), tuple(patches), tuple(strides), qkv_bias
        )


def _heads_from_config(text: str, stages: int) -> tuple[int, ...] | None:
    m = re.search(r"num_heads\s*=\s*[\[(]([\d,\s]+)[\])]", text or "")
    if not m:
        return None
    heads = tuple(int(v) for v in m.group(1).replace(" ", "").split(",") if v)
    return heads if len(heads) == stages else None


class OverlapPatchEmbed(nn.Module):
    def __init__(self, in_ch: int, dim: int, patch: int, stride: int):
        super().__init__()
        self.proj = nn.Conv2d(in_ch, dim, patch, stride, patch // 2)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor):
        x = self.proj(x)
        _, _, h, w = x.shape
        return self.norm(x.flatten(2).transpose(1, 2)), h, w


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, sr_ratio: int, qkv_bias: bool):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, sr_ratio)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        n, tokens, c = x.shape
        q = self.q(x).reshape(n, tokens, self.heads, c // self.heads).transpose(1, 2)
        source = x
        if self.sr_ratio > 1:
            grid = x.transpose(1, 2).reshape(n, c, h, w)
            source = self.norm(self.sr(grid).flatten(2).transpose(1, 2))
        kv = self.kv(source).reshape(n, -1, 2, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q @ kv[0].transpose(-2, -1)) * self.scale
        out = attn.softmax(dim=-1) @ kv[1]
        return self.proj(out.transpose(1, 2).reshape(n, tokens, c))


class DWConv(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        n, _, c = x.shape
        return self.dwconv(x.transpose(1, 2).reshape(n, c, h, w)).flatten(2).transpose(1, 2)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DWConv(hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return self.fc2(F.gelu(self.dwconv(self.fc1(x), h, w)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int, sr_ratio: int, qkv_bias: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, sr_ratio, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, hidden)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), h, w)
        return x + self.mlp(self.norm2(x), h, w)


class MixVisionTransformer(nn.Module):
    """MiT encoder: images [N,3,H,W] -> the four stage features [N,C_i,H/4..H/32,W/4..W/32]."""

    def __init__(self, config: MiTConfig):
        super().__init__()
        self.config = config
        in_ch = 3
        for s, (dim, patch, stride) in enumerate(zip(config.dims, config.patch_sizes, config.strides, strict=True), 1):
            self.add_module(f"patch_embed{s}", OverlapPatchEmbed(in_ch, dim, patch, stride))
            in_ch = dim
        for s, dim in enumerate(config.dims, 1):
            i = s - 1
            blocks = [
                Block(dim, config.heads[i], config.mlp_hidden[i], config.sr_ratios[i], config.qkv_bias)
                for _ in range(config.depths[i])
            ]
            self.add_module(f"block{s}", nn.ModuleList(blocks))
            self.add_module(f"norm{s}", nn.LayerNorm(dim, eps=1e-6))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for s in range(1, len(self.config.dims) + 1):
            x, h, w = getattr(self, f"patch_embed{s}")(x)
            for block in getattr(self, f"block{s}"):
                x = block(x, h, w)
            x = getattr(self, f"norm{s}")(x)
            x = x.transpose(1, 2).reshape(x.shape[0], -1, h, w)
            outs.append(x)
        return outs

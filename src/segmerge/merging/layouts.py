"""One MiT encoder (and SegFormer MLP head), three key layouts, converted tensor by tensor.

The encoder of SegFormer, DAFormer, HRDA, MIC and EDAPS is stored three ways:

* ``mmseg`` (mmseg 0.x and the original SegFormer, as DAFormer's ``mix_transformer.py``):
  ``backbone.patch_embed1.proj``, ``block1.0.attn.q`` and ``attn.kv`` = cat(k, v), ``mlp.fc1``
  as a Linear ``[out, in]``;
* ``mmseg1`` (mmseg 1.x ``mit.py``; mmseg's ``tools/model_converters/mit2mmseg.py`` maps
  the old names onto it): ``backbone.layers.0.0.projection``, ``attn.attn.in_proj_weight`` =
  cat(q, k, v), ``ffn.layers.0/1/4`` with the Linear layers as 1x1 convolutions
  ``[out, in, 1, 1]``;
* ``hf`` (transformers ``modeling_segformer.py``, names from its
  ``convert_segformer_original_to_pytorch.py``): ``segformer.encoder.patch_embeddings.0.proj``,
  separate ``query``/``key``/``value``, ``mlp.dense1``.

Every tensor is a run of rows (dim 0) of one *logical* tensor: q, k and v stack into one
``qkv`` of 3C rows whatever the layout splits it into, and a 1x1 convolution is its Linear
with two trailing 1s. So converting is slicing rows, concatenating them and reshaping:
exact, and bit-identical both ways. The SegFormer MLP head converts between ``mmseg`` and
``hf`` only (mmseg 1.x's ``SegformerHead`` has other layers: ConvModules with BatchNorm).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from segmerge.merging.sources import TensorMeta

LAYOUTS = ("mmseg", "mmseg1", "hf")
NAMES = {"mmseg": "mmseg 0.x / SegFormer", "mmseg1": "mmseg 1.x", "hf": "Hugging Face transformers"}

#: (logical name, {layout: [(key template, share of the logical rows, stored as 1x1 conv)]}).
#: Placeholders: {s} stage from 0, {s1} stage from 1, {b} block, {w} the leaf (weight, bias, ...).
_B0 = "backbone.block{s1}.{b}."
_B1 = "backbone.layers.{s}.1.{b}."
_BH = "segformer.encoder.block.{s}.{b}."
_T = tuple[str, float, bool]
ROWS: list[tuple[str, dict[str, list[_T]]]] = [
    ("s{s}.embed.proj.{w}", {
        "mmseg": [("backbone.patch_embed{s1}.proj.{w}", 1, False)],
        "mmseg1": [("backbone.layers.{s}.0.projection.{w}", 1, False)],
        "hf": [("segformer.encoder.patch_embeddings.{s}.proj.{w}", 1, False)],
    }),
    ("s{s}.embed.norm.{w}", {
        "mmseg": [("backbone.patch_embed{s1}.norm.{w}", 1, False)],
        "mmseg1": [("backbone.layers.{s}.0.norm.{w}", 1, False)],
        "hf": [("segformer.encoder.patch_embeddings.{s}.layer_norm.{w}", 1, False)],
    }),
    ("s{s}.b{b}.norm1.{w}", {
        "mmseg": [(_B0 + "norm1.{w}", 1, False)],
        "mmseg1": [(_B1 + "norm1.{w}", 1, False)],
        "hf": [(_BH + "layer_norm_1.{w}", 1, False)],
    }),
    ("s{s}.b{b}.qkv.{w}", {
        "mmseg": [(_B0 + "attn.q.{w}", 1, False), (_B0 + "attn.kv.{w}", 2, False)],
        "mmseg1": [(_B1 + "attn.attn.in_proj_{w}", 3, False)],
        "hf": [
            (_BH + "attention.self.query.{w}", 1, False),
            (_BH + "attention.self.key.{w}", 1, False),
            (_BH + "attention.self.value.{w}", 1, False),
        ],
    }),
    ("s{s}.b{b}.sr.{w}", {
        "mmseg": [(_B0 + "attn.sr.{w}", 1, False)],
        "mmseg1": [(_B1 + "attn.sr.{w}", 1, False)],
        "hf": [(_BH + "attention.self.sr.{w}", 1, False)],
    }),
    ("s{s}.b{b}.sr_norm.{w}", {
        "mmseg": [(_B0 + "attn.norm.{w}", 1, False)],
        "mmseg1": [(_B1 + "attn.norm.{w}", 1, False)],
        "hf": [(_BH + "attention.self.layer_norm.{w}", 1, False)],
    }),
    ("s{s}.b{b}.attn_out.{w}", {
        "mmseg": [(_B0 + "attn.proj.{w}", 1, False)],
        "mmseg1": [(_B1 + "attn.attn.out_proj.{w}", 1, False)],
        "hf": [(_BH + "attention.output.dense.{w}", 1, False)],
    }),
    ("s{s}.b{b}.norm2.{w}", {
        "mmseg": [(_B0 + "norm2.{w}", 1, False)],
        "mmseg1": [(_B1 + "norm2.{w}", 1, False)],
        "hf": [(_BH + "layer_norm_2.{w}", 1, False)],
    }),
    ("s{s}.b{b}.fc1.{w}", {
        "mmseg": [(_B0 + "mlp.fc1.{w}", 1, False)],
        "mmseg1": [(_B1 + "ffn.layers.0.{w}", 1, True)],
        "hf": [(_BH + "mlp.dense1.{w}", 1, False)],
    }),
    ("s{s}.b{b}.dwconv.{w}", {
        "mmseg": [(_B0 + "mlp.dwconv.dwconv.{w}", 1, False)],
        "mmseg1": [(_B1 + "ffn.layers.1.{w}", 1, False)],
        "hf": [(_BH + "mlp.dwconv.dwconv.{w}", 1, False)],
    }),
    ("s{s}.b{b}.fc2.{w}", {
        "mmseg": [(_B0 + "mlp.fc2.{w}", 1, False)],
        "mmseg1": [(_B1 + "ffn.layers.4.{w}", 1, True)],
        "hf": [(_BH + "mlp.dense2.{w}", 1, False)],
    }),
    ("s{s}.norm.{w}", {
        "mmseg": [("backbone.norm{s1}.{w}", 1, False)],
        "mmseg1": [("backbone.layers.{s}.2.{w}", 1, False)],
        "hf": [("segformer.encoder.layer_norm.{s}.{w}", 1, False)],
    }),
    # The SegFormer MLP head (mmseg 0.x segformer_head.py; transformers SegformerDecodeHead).
    ("head.c{s}.{w}", {
        "mmseg": [("decode_head.linear_c{s1}.proj.{w}", 1, False)],
        "hf": [("decode_head.linear_c.{s}.proj.{w}", 1, False)],
    }),
    ("head.fuse.{w}", {
        "mmseg": [("decode_head.linear_fuse.conv.{w}", 1, False)],
        "hf": [("decode_head.linear_fuse.{w}", 1, False)],
    }),
    ("head.bn.{w}", {
        "mmseg": [("decode_head.linear_fuse.bn.{w}", 1, False)],
        "hf": [("decode_head.batch_norm.{w}", 1, False)],
    }),
    ("head.cls.{w}", {
        "mmseg": [("decode_head.conv_seg.{w}", 1, False)],
        "hf": [("decode_head.classifier.{w}", 1, False)],
    }),
]  # fmt: skip


def _regex(template: str) -> re.Pattern:
    pattern = re.escape(template)
    for name, sub in (("s1", r"\d+"), ("s", r"\d+"), ("b", r"\d+"), ("w", r"[a-z_]+")):
        pattern = pattern.replace(re.escape("{" + name + "}"), f"(?P<{name}>{sub})")
    return re.compile(pattern + "$")


#: layout -> [(regex, row index, part index)]
_PARSERS: dict[str, list[tuple[re.Pattern, int, int]]] = {
    layout: [(_regex(t), r, p) for r, (_, by) in enumerate(ROWS) for p, (t, _, _) in enumerate(by.get(layout, ()))]
    for layout in LAYOUTS
}


@dataclass(frozen=True)
class Place:
    row: int  # index in ROWS
    part: int  # which of the layout's pieces of the logical tensor
    params: tuple[tuple[str, str], ...]  # s, b, w

    @property
    def is_head(self) -> bool:
        return ROWS[self.row][0].startswith("head.")


def parse(layout: str, key: str) -> Place | None:
    for regex, row, part in _PARSERS[layout]:
        m = regex.match(key)
        if m is not None:
            d = m.groupdict()
            if "s1" in d:
                d["s"] = str(int(d.pop("s1")) - 1)
            return Place(row, part, tuple(sorted(d.items())))
    return None


def key_of(layout: str, row: int, part: int, params: tuple[tuple[str, str], ...]) -> str:
    d = dict(params)
    if "s" in d:
        d["s1"] = str(int(d["s"]) + 1)
    return ROWS[row][1][layout][part][0].format(**d)


def detect_layout(keys) -> str | None:
    """The MiT layout most of the keys are in, or None (no MiT encoder here)."""
    counts = {
        layout: sum(1 for k in keys if (p := parse(layout, k)) is not None and not p.is_head) for layout in LAYOUTS
    }
    best = max(LAYOUTS, key=counts.__getitem__)
    return best if counts[best] >= 8 else None


def _has_head(layout: str, keys) -> bool:
    return any((p := parse(layout, k)) is not None and p.is_head and ROWS[p.row][0] == "head.c{s}.{w}" for k in keys)


@dataclass(frozen=True)
class Slice:
    key: str  # the source key
    start: int  # rows of that key
    stop: int


@dataclass(frozen=True)
class Conversion:
    """How one target tensor is made: rows of source tensors, concatenated, then reshaped."""

    slices: tuple[Slice, ...]
    shape: tuple[int, ...]
    dtype: torch.dtype

    def build(self, get: Callable[[str], torch.Tensor]) -> torch.Tensor:
        parts = []
        for s in self.slices:
            t = get(s.key)
            if t.dim() == 0:  # a scalar (BatchNorm's num_batches_tracked) is whole or nothing
                parts.append(t)
                continue
            t = t.reshape(t.shape[0], -1) if t.dim() > 1 else t
            parts.append(t[s.start : s.stop] if (s.start, s.stop) != (0, t.shape[0]) else t)
        out = parts[0] if len(parts) == 1 else torch.cat(parts)
        return out.reshape(self.shape).clone() if len(parts) == 1 else out.reshape(self.shape)


def _rows(meta: TensorMeta) -> int:
    return meta.shape[0] if meta.shape else 1


def _flat(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (shape[0], math.prod(shape[1:])) if len(shape) > 1 else shape


def _pieces(layout: str, row: int, params, metas: Mapping[str, TensorMeta]) -> list[tuple[str, int, int]] | None:
    """The layout's keys holding one logical tensor, with their row ranges; None if any is absent."""
    out = []
    offset = 0
    for part in range(len(ROWS[row][1][layout])):
        key = key_of(layout, row, part, params)
        if key not in metas:
            return None
        n = _rows(metas[key])
        out.append((key, offset, offset + n))
        offset += n
    return out


def plan_conversion(
    source_layout: str,
    source: Mapping[str, TensorMeta],
    target_layout: str,
    target: Mapping[str, TensorMeta],
) -> dict[str, Conversion]:
    """For each key of ``target`` (another model, or the target layout's names) that the
    source holds in its own layout with the same values, how to make it from the source."""
    use_head = _has_head(source_layout, source) and _has_head(target_layout, target)
    out: dict[str, Conversion] = {}
    for key, meta in target.items():
        place = parse(target_layout, key)
        if place is None or (place.is_head and not use_head) or source_layout not in ROWS[place.row][1]:
            continue
        mine = _pieces(target_layout, place.row, place.params, target)
        theirs = _pieces(source_layout, place.row, place.params, source)
        if mine is None or theirs is None or mine[-1][2] != theirs[-1][2]:
            continue
        start, stop = mine[place.part][1:]
        slices = []
        trailing = None
        for src_key, a, b in theirs:
            lo, hi = max(a, start), min(b, stop)
            if lo >= hi:
                continue
            flat = _flat(source[src_key].shape)
            if trailing is not None and flat[1:] != trailing:
                break
            trailing = flat[1:]
            slices.append(Slice(src_key, lo - a, hi - a))
        else:
            if trailing is not None and trailing == _flat(meta.shape)[1:] and slices:
                dtypes = {source[s.key].dtype for s in slices}
                if len(dtypes) == 1:
                    out[key] = Conversion(tuple(slices), meta.shape, dtypes.pop())
    return out


def target_metas(source_layout: str, source: Mapping[str, TensorMeta], target_layout: str) -> dict[str, TensorMeta]:
    """The keys and shapes the source's tensors take in ``target_layout`` (whole-file conversion):
    logical tensors split in the target's shares, Linear layers stored as the target stores them."""
    out: dict[str, TensorMeta] = {}
    use_head = "mmseg1" not in (source_layout, target_layout)
    seen: set = set()
    for key, meta in source.items():
        place = parse(source_layout, key)
        if place is None or (place.is_head and not use_head) or target_layout not in ROWS[place.row][1]:
            continue
        if (place.row, place.params) in seen:
            continue
        seen.add((place.row, place.params))
        pieces = _pieces(source_layout, place.row, place.params, source)
        if pieces is None:
            continue
        total = pieces[-1][2]
        source_conv = ROWS[place.row][1][source_layout][place.part][2]
        spec = ROWS[place.row][1][target_layout]
        shares = sum(share for _, share, _ in spec)
        for part, (_, share, conv) in enumerate(spec):
            rows = total * share // shares
            if not meta.shape:
                shape = ()
            elif conv and len(meta.shape) == 2:
                shape = (rows, meta.shape[1], 1, 1)
            elif source_conv and not conv and len(meta.shape) == 4:
                shape = (rows, meta.shape[1])
            else:
                shape = (rows, *meta.shape[1:])
            out[key_of(target_layout, place.row, part, place.params)] = TensorMeta(tuple(shape), meta.dtype)
    return out


class ConvertedSource:
    """A model seen in another MiT layout: the converted tensors under the other layout's
    names, its other tensors under their own; tensors are converted when read."""

    def __init__(self, source, conversions: Mapping[str, Conversion], source_layout: str, target_layout: str):
        self.source = source
        self.label = source.label
        self.conversions = dict(conversions)
        self.source_layout = source_layout
        self.target_layout = target_layout
        used = {s.key for c in self.conversions.values() for s in c.slices}
        self._metas = {k: TensorMeta(c.shape, c.dtype) for k, c in self.conversions.items()}
        for key, meta in source.metas().items():
            if key not in used and key not in self._metas:
                self._metas[key] = meta

    def metas(self) -> dict[str, TensorMeta]:
        return self._metas

    def get(self, key: str) -> torch.Tensor:
        conversion = self.conversions.get(key)
        return self.source.get(key) if conversion is None else conversion.build(self.source.get)

    def describe(self) -> str:
        head = any(ROWS[parse(self.target_layout, k).row][0].startswith("head") for k in self.conversions)
        return (
            f"MiT encoder{' and SegFormer head' if head else ''} "
            f"converted from the {NAMES[self.source_layout]} layout to the anchor's {NAMES[self.target_layout]} "
            f"layout ({len(self.conversions)} tensors, attention projections split/concatenated, Linear <-> 1x1 "
            "conv reshaped)"
        )


def convert_onto(anchor_metas: Mapping[str, TensorMeta], donor) -> ConvertedSource | None:
    """The donor converted onto the anchor's MiT layout when the two layouts differ, else None."""
    if donor.metas().keys() == anchor_metas.keys():  # the same names: the same layout, nothing to detect
        return None
    target = detect_layout(anchor_metas)
    source = detect_layout(donor.metas())
    if target is None or source is None or target == source:
        return None
    conversions = plan_conversion(source, donor.metas(), target, anchor_metas)
    return ConvertedSource(donor, conversions, source, target) if conversions else None

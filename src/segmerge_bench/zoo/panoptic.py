"""Panoptic network in the style of Panoptic-DeepLab / EDAPS on the shared tiny MiT encoder.

A bottom-up panoptic model: one semantic head and one instance head on the same encoder.
The semantic head is the DAFormer decoder (as in EDAPS), built right after the encoder
from the same seed, so its initialisation is bit-identical to a DAFormer's of that seed
and a semantic DAFormer's head can blend with it when merged. The instance head predicts,
at stride 4, a centre heatmap (1 channel: a Gaussian at each object's centre of mass) and
an offset field (2 channels: (dy, dx) in input pixels from each thing pixel to its
object's centre); :mod:`segmerge_bench.zoo.panoptic_postprocess` groups pixels into objects.

Why not Mask2Former: its masked-attention decoder, per-query mask predictions and
Hungarian matching cost several times a DAFormer's step on two CPU cores, and it is known
to need long schedules; this model costs one more light head than a DAFormer and trains
with plain per-pixel losses, so the benchmark can afford it.

The checkpoint is an mmseg-style ``.pth`` like the DAFormer's: ``backbone.`` (on-disk MiT
names), ``decode_head.`` (semantic head, mmseg names), ``instance_head.`` (centre and
offset branches), and ``meta["segmerge_model"]`` to rebuild the network without user code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from segmerge.errors import SegmergeError
from segmerge_bench.zoo.daformer import (
    DECODER_DEFAULTS,
    DECODER_PREFIX,
    ENCODER_PREFIX,
    META_KEY,
    ConvModule,
    DAFormerHead,
    StageEmbedding,
)
from segmerge_bench.zoo.mit import build_encoder, encoder_disk_names, encoder_settings, mit_config

ARCHITECTURE = "panoptic"
INSTANCE_PREFIX = "instance_head."
INSTANCE_DEFAULTS: dict = {"embed_dim": 16, "channels": 32}


class PanopticOutput(NamedTuple):
    """Everything the network predicts, at stride 4."""

    semantic: torch.Tensor  # [N,C,h,w] logits
    center: torch.Tensor  # [N,1,h,w] centre heatmap (regressed, ~1 at a centre, ~0 far away)
    offset: torch.Tensor  # [N,2,h,w] (dy, dx) in input pixels from a pixel to its object's centre


class InstanceHead(nn.Module):
    """Stage embeddings fused at stride 4, then one small branch per prediction (Panoptic-DeepLab's layout)."""

    def __init__(self, in_channels: Sequence[int], embed_dim: int, channels: int):
        super().__init__()
        self.embed_layers = nn.ModuleList(StageEmbedding(c, embed_dim) for c in in_channels)
        self.fuse_layer = ConvModule(embed_dim * len(in_channels), channels, 3)
        self.center_branch = ConvModule(channels, channels, 3)
        self.center_conv = nn.Conv2d(channels, 1, 1)
        self.offset_branch = ConvModule(channels, channels, 3)
        self.offset_conv = nn.Conv2d(channels, 2, 1)

    def forward(self, features: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        size = features[0].shape[-2:]
        embedded = [
            F.interpolate(embed(x), size=size, mode="bilinear", align_corners=False) if i else embed(x)
            for i, (embed, x) in enumerate(zip(self.embed_layers, features, strict=True))
        ]
        fused = self.fuse_layer(torch.cat(embedded, dim=1))
        return self.center_conv(self.center_branch(fused)), self.offset_conv(self.offset_branch(fused))


class PanopticModel(nn.Module):
    """MiT encoder (``backbone``) + DAFormer semantic head (``decode_head``) + ``instance_head``."""

    def __init__(self, config, decoder: Mapping | None = None, instance: Mapping | None = None):
        super().__init__()
        self.config = config
        self.decoder_settings = _settings("decoder", decoder, DECODER_DEFAULTS)
        self.instance_settings = _settings("instance", instance, INSTANCE_DEFAULTS)
        self.num_classes = config.num_labels
        self.backbone = build_encoder(config)
        self.decode_head = DAFormerHead(config.hidden_sizes, config.num_labels, **self.decoder_settings)
        self.instance_head = InstanceHead(config.hidden_sizes, **self.instance_settings)

    def features(self, pixels: torch.Tensor):
        return self.backbone(pixels, output_hidden_states=True, return_dict=True).hidden_states

    def semantic(self, pixels: torch.Tensor) -> torch.Tensor:
        """Semantic logits only (what mIoU and semantic training need), without the instance head's cost."""
        return self.decode_head(self.features(pixels))

    def forward(self, pixels: torch.Tensor) -> PanopticOutput:
        features = self.features(pixels)
        center, offset = self.instance_head(features)
        return PanopticOutput(self.decode_head(features), center, offset)

    def heads(self) -> nn.ModuleDict:
        """Both heads as one module (state-dict names ``decode_head.*``, ``instance_head.*``), sharing weights."""
        return nn.ModuleDict({"decode_head": self.decode_head, "instance_head": self.instance_head})

    def spec(self) -> dict:
        """What ``meta["segmerge_model"]`` records: enough to rebuild this network."""
        return {
            "architecture": ARCHITECTURE,
            "num_classes": int(self.num_classes),
            "encoder": encoder_settings(self.config),
            "decoder": _plain(self.decoder_settings),
            "instance": _plain(self.instance_settings),
        }


def build_panoptic(
    num_classes: int = 19,
    seed: int = 0,
    decoder: Mapping | None = None,
    instance: Mapping | None = None,
    **encoder,
) -> PanopticModel:
    """A randomly initialised panoptic network; the same seed gives the same weights, and the
    encoder and semantic head those of ``build_daformer`` with that seed and settings."""
    torch.manual_seed(seed)
    return PanopticModel(mit_config(num_classes, **encoder), decoder, instance)


def panoptic_state_dict(model: PanopticModel) -> dict[str, torch.Tensor]:
    """``backbone.<on-disk MiT name>``, then ``decode_head.*``, then ``instance_head.*``, in module order."""
    names = encoder_disk_names(model.backbone)
    state = {ENCODER_PREFIX + names[k]: v.detach().clone() for k, v in model.backbone.state_dict().items()}
    state.update({DECODER_PREFIX + k: v.detach().clone() for k, v in model.decode_head.state_dict().items()})
    state.update({INSTANCE_PREFIX + k: v.detach().clone() for k, v in model.instance_head.state_dict().items()})
    return state


def save_panoptic(model: PanopticModel, path: str | Path, meta: Mapping | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {**(meta or {}), META_KEY: model.spec()}
    torch.save({"state_dict": panoptic_state_dict(model), "meta": meta}, path)
    return path


def panoptic_from_state(state: Mapping[str, torch.Tensor], spec: Mapping, source: str = "") -> PanopticModel:
    """Rebuild a network from its mmseg-style state dict and ``meta["segmerge_model"]``."""
    where = source or "checkpoint"
    if spec.get("architecture") != ARCHITECTURE:
        raise SegmergeError(
            f"{where}: meta[{META_KEY!r}] names architecture {spec.get('architecture')!r}, not {ARCHITECTURE!r}"
        )
    try:
        config = mit_config(int(spec["num_classes"]), **dict(spec["encoder"]))
        model = PanopticModel(config, dict(spec.get("decoder") or {}), dict(spec.get("instance") or {}))
    except (KeyError, TypeError) as exc:
        raise SegmergeError(f"{where}: meta[{META_KEY!r}] is incomplete or malformed ({exc!r})") from None
    names = {ENCODER_PREFIX + disk: mem for mem, disk in encoder_disk_names(model.backbone).items()}
    parts: dict[str, dict[str, torch.Tensor]] = {"backbone": {}, "decode_head": {}, "instance_head": {}}
    unknown = []
    for key, value in state.items():
        if key in names:
            parts["backbone"][names[key]] = value
        elif key.startswith(DECODER_PREFIX):
            parts["decode_head"][key[len(DECODER_PREFIX) :]] = value
        elif key.startswith(INSTANCE_PREFIX):
            parts["instance_head"][key[len(INSTANCE_PREFIX) :]] = value
        else:
            unknown.append(key)
    if unknown:
        raise SegmergeError(f"{where}: unexpected keys {unknown[:3]} for a panoptic network")
    for part, weights in parts.items():
        try:
            getattr(model, part).load_state_dict(weights, strict=True)
        except RuntimeError as exc:
            raise SegmergeError(
                f"{where}: the {part} weights do not fit the panoptic network its meta describes: {exc}"
            ) from None
    return model.eval()


def _settings(what: str, given: Mapping | None, defaults: Mapping) -> dict:
    settings = {**defaults, **(given or {})}
    unknown = set(settings) - set(defaults)
    if unknown:
        raise SegmergeError(f"panoptic model: unknown {what} settings {sorted(unknown)}; known: {sorted(defaults)}")
    return settings


def _plain(settings: Mapping) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()}

"""DAFormer-style network: the same tiny MiT encoder under a context-aware fusion decoder.

The second architecture of the benchmark, so that "different architectures that share a
backbone" can be merged as in the paper. The decoder follows DAFormer (Hoyer et al.,
CVPR 2022): each encoder stage is embedded by a 1x1 projection, upsampled to stride 4 and
concatenated; an ASPP-like fusion runs parallel depthwise-separable 3x3 convolutions with
growing dilations (1x1 for dilation 1), each with BN+ReLU, and a 3x3 bottleneck merges
them before a 1x1 classifier. DAFormer uses dilations 1/6/12/18 on 128x128 stride-4 maps;
the benchmark's maps are 24x48, so the default dilations shrink to 1/2/4/6 to keep the
same field of view relative to the image.

Its checkpoint is an mmsegmentation-style ``.pth``: ``{"state_dict", "meta"}`` with the
encoder under ``backbone.`` (the on-disk MiT names, i.e. a Hugging Face SegFormer's
``segformer.encoder.`` renamed) and the decoder under ``decode_head.`` with mmseg's module
names. ``meta["segmerge_model"]`` records what is needed to rebuild the network, so a
merged file whose anchor was a DAFormer can be evaluated like any other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from segmerge.errors import SegmergeError
from segmerge_bench.zoo.mit import build_encoder, encoder_disk_names, encoder_settings, mit_config

ARCHITECTURE = "daformer"
META_KEY = "segmerge_model"
ENCODER_PREFIX = "backbone."
DECODER_PREFIX = "decode_head."
DECODER_DEFAULTS: dict = {"embed_dim": 16, "channels": 32, "dilations": [1, 2, 4, 6]}


class AtrousConv2d(nn.Conv2d):
    """A dilated convolution computed by space-to-batch (as TensorFlow's atrous conv does).

    A 3x3 convolution with dilation d and padding d equals an undilated one on each of the
    d*d interleaved sub-grids of the input. PyTorch's CPU kernels for dilated depthwise
    convolutions are about 3x slower (backward) than for undilated ones, so this is what
    makes the ASPP fusion affordable on a CPU. Same parameters and names as ``nn.Conv2d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.dilation[0]
        if d == 1 or self.dilation[1] != d or self.padding != (d, d) or self.kernel_size != (3, 3):
            return super().forward(x)
        n, c, h, w = x.shape
        x = F.pad(x, (0, (-w) % d, 0, (-h) % d))  # zeros, as the convolution's own padding
        hd, wd = x.shape[-2] // d, x.shape[-1] // d
        grids = x.reshape(n, c, hd, d, wd, d).permute(0, 3, 5, 1, 2, 4).reshape(n * d * d, c, hd, wd)
        y = F.conv2d(grids, self.weight, self.bias, 1, 1, 1, self.groups)
        y = y.reshape(n, d, d, -1, hd, wd).permute(0, 3, 4, 1, 5, 2).reshape(n, -1, hd * d, wd * d)
        return y[..., :h, :w]


class ConvModule(nn.Sequential):
    """Conv + BN + ReLU, with mmcv's ``conv`` / ``bn`` names."""

    def __init__(self, cin: int, cout: int, kernel: int, dilation: int = 1, groups: int = 1):
        padding = dilation * (kernel // 2)
        super().__init__()
        self.conv = AtrousConv2d(cin, cout, kernel, padding=padding, dilation=dilation, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.activate = nn.ReLU(inplace=True)


class DepthwiseSeparableConvModule(nn.Sequential):
    def __init__(self, cin: int, cout: int, dilation: int):
        super().__init__()
        self.depthwise_conv = ConvModule(cin, cin, 3, dilation=dilation, groups=cin)
        self.pointwise_conv = ConvModule(cin, cout, 1)


class ASPPFusion(nn.Module):
    """Parallel branches at several dilations, concatenated and merged by a 3x3 bottleneck."""

    def __init__(self, cin: int, channels: int, dilations: Sequence[int]):
        super().__init__()
        self.aspp_modules = nn.ModuleList(
            ConvModule(cin, channels, 1) if d == 1 else DepthwiseSeparableConvModule(cin, channels, d)
            for d in dilations
        )
        self.bottleneck = ConvModule(len(dilations) * channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bottleneck(torch.cat([branch(x) for branch in self.aspp_modules], dim=1))


class StageEmbedding(nn.Module):
    """mmseg's MLP embedding of one stage: a linear map of the channels (a 1x1 projection)."""

    def __init__(self, cin: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Linear(cin, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class DAFormerHead(nn.Module):
    def __init__(self, in_channels: Sequence[int], num_classes: int, embed_dim: int, channels: int, dilations):
        super().__init__()
        self.embed_layers = nn.ModuleList(StageEmbedding(c, embed_dim) for c in in_channels)
        self.fuse_layer = ASPPFusion(embed_dim * len(in_channels), channels, dilations)
        self.dropout = nn.Dropout2d(0.1)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        size = features[0].shape[-2:]
        embedded = [
            F.interpolate(embed(x), size=size, mode="bilinear", align_corners=False) if i else embed(x)
            for i, (embed, x) in enumerate(zip(self.embed_layers, features, strict=True))
        ]
        return self.conv_seg(self.dropout(self.fuse_layer(torch.cat(embedded, dim=1))))


class DAFormer(nn.Module):
    """MiT encoder (``backbone``) + DAFormer decoder (``decode_head``); forward gives stride-4 logits."""

    def __init__(self, config, decoder: Mapping | None = None):
        super().__init__()
        self.config = config
        self.decoder_settings = {**DECODER_DEFAULTS, **(decoder or {})}
        unknown = set(self.decoder_settings) - set(DECODER_DEFAULTS)
        if unknown:
            raise SegmergeError(
                f"DAFormer: unknown decoder settings {sorted(unknown)}; known: {sorted(DECODER_DEFAULTS)}"
            )
        self.num_classes = config.num_labels
        self.backbone = build_encoder(config)
        self.decode_head = DAFormerHead(config.hidden_sizes, config.num_labels, **self.decoder_settings)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        features = self.backbone(pixel_values, output_hidden_states=True, return_dict=True).hidden_states
        return self.decode_head(features)

    def spec(self) -> dict:
        """What ``meta["segmerge_model"]`` records: enough to rebuild this network."""
        return {
            "architecture": ARCHITECTURE,
            "num_classes": int(self.num_classes),
            "encoder": encoder_settings(self.config),
            "decoder": {k: list(v) if isinstance(v, tuple) else v for k, v in self.decoder_settings.items()},
        }


def build_daformer(num_classes: int = 19, seed: int = 0, decoder: Mapping | None = None, **encoder) -> DAFormer:
    """A randomly initialised DAFormer-style network; the same seed gives the same weights."""
    torch.manual_seed(seed)
    return DAFormer(mit_config(num_classes, **encoder), decoder)


def daformer_state_dict(model: DAFormer) -> dict[str, torch.Tensor]:
    """The mmseg-style state dict: ``backbone.<on-disk MiT name>`` then ``decode_head.*``, in module order."""
    names = encoder_disk_names(model.backbone)
    encoder = model.backbone.state_dict()
    state = {ENCODER_PREFIX + names[k]: v.detach().clone() for k, v in encoder.items()}
    state.update({DECODER_PREFIX + k: v.detach().clone() for k, v in model.decode_head.state_dict().items()})
    return state


def save_daformer(model: DAFormer, path: str | Path, meta: Mapping | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {**(meta or {}), META_KEY: model.spec()}
    torch.save({"state_dict": daformer_state_dict(model), "meta": meta}, path)
    return path


def daformer_from_state(state: Mapping[str, torch.Tensor], spec: Mapping, source: str = "") -> DAFormer:
    """Rebuild a network from an mmseg-style state dict and its ``meta["segmerge_model"]``."""
    where = source or "checkpoint"
    if spec.get("architecture") != ARCHITECTURE:
        raise SegmergeError(
            f"{where}: meta[{META_KEY!r}] names architecture {spec.get('architecture')!r}, not 'daformer'"
        )
    try:
        config = mit_config(int(spec["num_classes"]), **dict(spec["encoder"]))
        model = DAFormer(config, dict(spec.get("decoder") or {}))
    except (KeyError, TypeError) as exc:
        raise SegmergeError(f"{where}: meta[{META_KEY!r}] is incomplete or malformed ({exc!r})") from None
    names = {ENCODER_PREFIX + disk: mem for mem, disk in encoder_disk_names(model.backbone).items()}
    encoder, decoder, unknown = {}, {}, []
    for key, value in state.items():
        if key in names:
            encoder[names[key]] = value
        elif key.startswith(DECODER_PREFIX):
            decoder[key[len(DECODER_PREFIX) :]] = value
        else:
            unknown.append(key)
    missing = [ENCODER_PREFIX + k for k in names.values() if k not in encoder]
    try:
        model.backbone.load_state_dict(encoder, strict=True)
        model.decode_head.load_state_dict(decoder, strict=True)
    except RuntimeError as exc:
        raise SegmergeError(f"{where}: weights do not fit the DAFormer network its meta describes: {exc}") from None
    if unknown or missing:
        raise SegmergeError(
            f"{where}: unexpected keys {unknown[:3]} / missing keys {missing[:3]} for a DAFormer network"
        )
    return model.eval()


def load_daformer(path: str | Path) -> DAFormer:
    """Load a checkpoint written by :func:`save_daformer` (or a merge anchored on one); never unpickles code."""
    from segmerge.checkpoints import open_checkpoint

    checkpoint = open_checkpoint(path)
    content = checkpoint.pth_content
    spec = (content.meta or {}).get(META_KEY) if content is not None else None
    if not isinstance(spec, Mapping):
        raise SegmergeError(f"{path}: no meta[{META_KEY!r}]; not a DAFormer checkpoint written by segmerge")
    return daformer_from_state(checkpoint.state_dict(), spec, str(path))

"""The shared start: one pre-trained encoder and one decoder initialisation per architecture.

In the paper's setting every model to be merged descends from the same ImageNet MiT
weights, and decoders that are to blend from the same initialisation; without that, weight
averaging has nothing to average (the prototype's soup of decoders from different inits
collapsed to near-zero mIoU). Here supervised training on the ``pretrain`` domain, whose
colours are redrawn for every image, stands in for ImageNet: the encoder learns shape and
layout but no domain's look. Decoders start from a seeded random initialisation shared by all
models of an architecture; the shipped start then trains on under the SegFormer's
(:func:`continue_pretraining`) and keeps what that decoder learned except its classifier.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from segmerge.errors import SegmergeError
from segmerge_bench.training.config import TrainConfig
from segmerge_bench.training.data import TrainingData
from segmerge_bench.training.supervised import train_supervised
from segmerge_bench.zoo.mit import TINY_MIT
from segmerge_bench.zoo.models import ARCHITECTURES, build_model, decoder_of, encoder_of

PRETRAIN_ARCHITECTURE = "segformer"
PRETRAIN_CONFIG = TrainConfig(
    steps=12000, lr=2e-3, decoder_lr_mult=1.0, warmup_steps=200, schedule="cosine", description="pretrain"
)
"""The first stage, from scratch, so one learning rate for all; 12000 steps on 3000 images of the
``pretrain`` domain (the shipped start's: 28 min on one core of a busy 2-core machine). How long matters
most of all the benchmark's levers. Fine-tuned at lr 2e-4 (head 2e-3) for 500 steps on the
appearance regime, SegFormers from this start score 24.6 / 23.6 mIoU source-only against an
oracle of 34.4, and two adapted ones average without a loss barrier (uniform soup 27.6
against 24.9 and 22.5); from the earlier 1500-step start the same training gives 14.0 /
13.9 against 31.5, and the soup of the adapted pair falls to 11.5, below both (15.8, 14.5).
Earlier still: from a 400-step start, a soup collapsed to 6 mIoU."""


@dataclass
class SharedStart:
    """What every benchmark model starts from; ``model(architecture)`` builds a fresh copy.

    ``encoder``: the pre-trained ``SegformerModel`` state (in-memory names). ``decoders``:
    per architecture, the decoder's initial state. ``settings``: per architecture, the
    keyword arguments of :func:`~segmerge_bench.zoo.models.build_model` besides ``num_classes``.
    """

    encoder: dict[str, torch.Tensor]
    decoders: dict[str, dict[str, torch.Tensor]]
    num_classes: int = 19
    settings: dict[str, dict] = field(default_factory=dict)
    log: dict = field(default_factory=dict)

    def model(self, architecture: str) -> nn.Module:
        if architecture not in self.decoders:
            raise SegmergeError(
                f"the shared start has decoder inits for {', '.join(self.decoders)}, not {architecture!r}"
            )
        model = build_model(architecture, self.num_classes, seed=0, **self.settings.get(architecture, {}))
        encoder_of(model).load_state_dict(self.encoder)
        decoder_of(model).load_state_dict(self.decoders[architecture])
        return model.eval()

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "encoder": self.encoder,
                "decoders": self.decoders,
                "num_classes": self.num_classes,
                "settings": self.settings,
                "log": {k: v for k, v in self.log.items() if k not in ("losses", "snapshots")},
            },
            path,
        )
        return path

    @classmethod
    def load(cls, path: str | Path) -> SharedStart:
        content = torch.load(path, map_location="cpu", weights_only=True)
        try:
            return cls(
                content["encoder"],
                content["decoders"],
                content["num_classes"],
                content["settings"],
                content.get("log", {}),
            )
        except (KeyError, TypeError):
            raise SegmergeError(f"{path}: not a shared start saved by SharedStart.save") from None


def pretrain(
    data: TrainingData,
    config: TrainConfig = PRETRAIN_CONFIG,
    num_classes: int = 19,
    architectures: Sequence[str] = ARCHITECTURES,
    decoder_seed: int = 0,
    encoder: dict | None = None,
    decoders: dict[str, dict] | None = None,
) -> tuple[SharedStart, dict]:
    """Train a SegFormer from random init (seed ``config.seed``) on ``data``; keep its encoder.

    ``encoder`` overrides entries of :data:`~segmerge_bench.zoo.mit.TINY_MIT`; ``decoders`` gives
    per-architecture decoder settings (``{"segformer": {"decoder_hidden_size": 64},
    "daformer": {"decoder": {...}}}``). Each architecture's decoder init is drawn with
    ``decoder_seed``, the same for every model that will later be merged.
    """
    unknown = set(architectures) - set(ARCHITECTURES)
    if unknown:
        raise SegmergeError(
            f"pretrain: unknown architectures {sorted(unknown)}; choose from {', '.join(ARCHITECTURES)}"
        )
    encoder = dict(encoder or {})
    unknown = set(encoder) - set(TINY_MIT)
    if unknown:
        raise SegmergeError(f"pretrain: unknown encoder settings {sorted(unknown)}; known: {sorted(TINY_MIT)}")
    settings = {arch: {**encoder, **(decoders or {}).get(arch, {})} for arch in architectures}
    with torch.random.fork_rng(devices=[]):
        network = build_model(
            PRETRAIN_ARCHITECTURE, num_classes, config.seed, **settings.get(PRETRAIN_ARCHITECTURE, encoder)
        )
        network, log = train_supervised(network, data, config.replace(description=config.description or "pretrain"))
        inits = {
            arch: decoder_of(build_model(arch, num_classes, decoder_seed, **settings[arch])) for arch in architectures
        }
    shared = SharedStart(
        copy.deepcopy(encoder_of(network).state_dict()),
        {arch: copy.deepcopy(decoder.state_dict()) for arch, decoder in inits.items()},
        num_classes,
        settings,
        log,
    )
    return shared, log


CONTINUED_CONFIG = PRETRAIN_CONFIG.replace(lr=1e-3, seed=7, description="pretrain, continued")
"""The shipped start's second stage: 12000 more steps on the same 3000 ``pretrain`` images, the
first stage's encoder under the SegFormer's shared decoder init (37 min on 2 threads, 14 of them
beside the tests; final loss 0.40 against the first stage's 0.56)."""

KEPT_HEAD = ("none", "features", "all")
"""What :func:`continue_pretraining` keeps of the decoder it trained: nothing (the random init, as
an ImageNet start has), all but the classifier, or all of it (a start pre-trained for
segmentation, as a Cityscapes- or Mapillary-trained checkpoint is)."""

CLASSIFIER = "classifier."


def continue_pretraining(
    start: SharedStart, data: TrainingData, config: TrainConfig = CONTINUED_CONFIG, keep: str = "features"
) -> tuple[SharedStart, dict]:
    """Train ``start``'s SegFormer (its encoder under its decoder init) ``config.steps`` more on
    ``data``; keep the encoder and, per ``keep`` (:data:`KEPT_HEAD`), what the SegFormer's
    decoder learned as its new init. The other architectures' decoder inits stay as they were.

    Measured on the appearance regime (docs/benchmark.md): with the random decoder init the two
    adapted models' straight line dips 3.3 mIoU below the weaker one; keeping the whole decoder
    removes the dip (seeds 0 and 1) but brings the source-only models to 0.75 of the oracle, and
    UDA from B closes 33% on seed 0 (from 48%; 51% on seed 1); keeping all but the classifier (the
    shipped start) leaves a dip of 0.6 on seed 0, 2.2 on seed 1, and keeps the gap and UDA."""
    if keep not in KEPT_HEAD:
        raise SegmergeError(f"continue_pretraining: keep must be one of {', '.join(KEPT_HEAD)}, not {keep!r}")
    with torch.random.fork_rng(devices=[]):
        network, log = train_supervised(
            start.model(PRETRAIN_ARCHITECTURE), data, config.replace(description=config.description or "continued")
        )
    init, trained = start.decoders[PRETRAIN_ARCHITECTURE], decoder_of(network).state_dict()
    kept = {
        k: trained[k] if keep == "all" or (keep == "features" and not k.startswith(CLASSIFIER)) else init[k]
        for k in init
    }
    shared = SharedStart(
        copy.deepcopy(encoder_of(network).state_dict()),
        {**start.decoders, PRETRAIN_ARCHITECTURE: copy.deepcopy(kept)},
        start.num_classes,
        start.settings,
        {**log, "kept_head": keep, "first_stage": {k: v for k, v in start.log.items() if k != "losses"}},
    )
    return shared, log

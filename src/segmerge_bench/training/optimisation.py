"""AdamW and the learning-rate schedule, set up as DAFormer does for a MiT encoder.

The decoder trains at ``decoder_lr_mult`` times the encoder's rate (a randomly initialised
head must move further than a pre-trained encoder), norms and biases without weight decay,
and the rate warms up linearly before decaying polynomially (power 1) or by a cosine.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from segmerge_bench.training.config import TrainConfig
from segmerge_bench.zoo.models import decoder_of


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    decoder = {id(p) for p in decoder_of(model).parameters()}
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for parameter in model.parameters():
        if parameter.requires_grad:
            groups.setdefault((id(parameter) in decoder, parameter.ndim > 1), []).append(parameter)
    return torch.optim.AdamW(
        [
            {
                "params": params,
                "lr": config.lr * (config.decoder_lr_mult if in_decoder else 1.0),
                "weight_decay": config.weight_decay if decays else 0.0,
            }
            for (in_decoder, decays), params in sorted(groups.items())
        ],
        betas=(0.9, 0.999),
    )


def lr_factor(step: int, config: TrainConfig) -> float:
    """Multiplier of the base rates at ``step`` (0-based)."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    span = max(config.steps - config.warmup_steps, 1)
    progress = min((step - config.warmup_steps) / span, 1.0)
    if config.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0 - progress


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, config))

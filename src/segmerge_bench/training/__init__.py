"""Training the benchmark's models on synthetic domains: the shared start, then each recipe.

``pretrain`` gives the :class:`SharedStart` (one encoder, one decoder init per
architecture) that stands in for ImageNet weights; from it, ``train_source_only``,
``train_uda`` (DACS/DAFormer self-training: EMA teacher, confidence-weighted pseudo-labels,
ClassMix) and ``train_target_oracle`` fine-tune. Every loop takes a :class:`TrainConfig`,
is deterministic for its seed, and returns ``(model, log)``.
"""

from segmerge_bench.training.config import TrainConfig
from segmerge_bench.training.data import TrainingData
from segmerge_bench.training.pretraining import (
    CONTINUED_CONFIG,
    PRETRAIN_CONFIG,
    SharedStart,
    continue_pretraining,
    pretrain,
)
from segmerge_bench.training.self_training import train_uda
from segmerge_bench.training.supervised import train_source_only, train_supervised, train_target_oracle

__all__ = [
    "CONTINUED_CONFIG",
    "PRETRAIN_CONFIG",
    "SharedStart",
    "TrainConfig",
    "TrainingData",
    "continue_pretraining",
    "pretrain",
    "train_source_only",
    "train_supervised",
    "train_target_oracle",
    "train_uda",
]

"""Supervised fine-tuning: the source-only model (a lower bound) and the target oracle (an upper bound).

Both start from the shared pre-trained start and differ only in the data: labelled source
images for the source-only model, labelled target training images for the oracle, which
no adaptation method may see and which only measures how much room there is.
"""

from __future__ import annotations

from torch import nn

from segmerge.errors import SegmergeError
from segmerge_bench.training.config import TrainConfig
from segmerge_bench.training.data import TrainingData, labelled_batches
from segmerge_bench.training.loop import on_device, optimise, reproducible, seeded_generator
from segmerge_bench.training.loss import segmentation_loss
from segmerge_bench.zoo.models import segment


def train_supervised(start: nn.Module, data: TrainingData, config: TrainConfig) -> tuple[nn.Module, dict]:
    """Cross-entropy on labelled ``data`` from a copy of ``start`` (which is left unchanged)."""
    if data.labels is None:
        raise SegmergeError(f"{data.name or 'training data'}: supervised training needs labels")
    model = on_device(start, config)
    with reproducible(config):
        stream = labelled_batches(data, config, seeded_generator(config.seed, 0))

        def step_loss(step: int):
            batch = next(stream)
            return segmentation_loss(segment(model, batch.pixels), batch.labels), {}

        log = optimise(model, config, step_loss)
    return model, log


def train_source_only(start: nn.Module, source: TrainingData, config: TrainConfig) -> tuple[nn.Module, dict]:
    """Fine-tune on one labelled source domain: what a model knows without adaptation."""
    return train_supervised(start, source, config.replace(description=config.description or "source-only"))


def train_target_oracle(start: nn.Module, target: TrainingData, config: TrainConfig) -> tuple[nn.Module, dict]:
    """Fine-tune on labelled target training data: the upper bound adaptation is measured against."""
    return train_supervised(start, target, config.replace(description=config.description or "target oracle"))

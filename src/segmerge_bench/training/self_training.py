"""Unsupervised domain adaptation by self-training, as DACS and DAFormer do it, and MIC on top.

Each step: the EMA teacher pseudo-labels a batch of unlabelled target images; ClassMix
pastes half of the classes of a labelled source batch onto them; the mixed images are
colour-jittered and blurred (``strong_augment``, DAFormer's default); the student minimises
the source cross-entropy plus the confidence-weighted cross-entropy on the mixed images
(plus, with ``feature_distance`` > 0, DAFormer's thing-class feature distance to the start).
With ``method="mic"`` it also predicts the pseudo-labels on the target images with most of
each image hidden (:mod:`~segmerge_bench.training.masking`). Target labels are never read:
the target data is stripped of them on entry.
"""

from __future__ import annotations

import contextlib

from torch import nn

from segmerge.errors import SegmergeError
from segmerge_bench.training.augment import strong_augment
from segmerge_bench.training.classmix import class_mix
from segmerge_bench.training.config import TrainConfig
from segmerge_bench.training.data import TrainingData, batches, labelled_batches
from segmerge_bench.training.feature_distance import FeatureDistance, captured_bottleneck
from segmerge_bench.training.loop import on_device, optimise, reproducible, seeded_generator
from segmerge_bench.training.loss import segmentation_loss
from segmerge_bench.training.masking import masked
from segmerge_bench.training.teacher import EMATeacher
from segmerge_bench.zoo.models import segment


def self_training_streams(source: TrainingData, target: TrainingData, config: TrainConfig):
    """The seeded random streams of a self-training run: source batches, target batches, and the
    generator ClassMix draws from - one per purpose, so a run is reproducible from its seed."""
    return (
        labelled_batches(source, config, seeded_generator(config.seed, 0)),
        batches(target, config.batch_size, seeded_generator(config.seed, 1), config.flip, device=config.device),
        seeded_generator(config.seed, 2),
    )


UDA_METHODS = ("dacs", "mic")


def train_uda(
    start: nn.Module, source: TrainingData, target: TrainingData, config: TrainConfig, method: str = "dacs"
) -> tuple[nn.Module, dict]:
    """Adapt a copy of ``start`` from labelled ``source`` to unlabelled ``target`` images, by
    self-training with ClassMix (``method="dacs"``) or with masked image consistency on top
    (``"mic"``).

    The log adds ``mean_pseudo_weight`` (the teacher's average confidence share) and the
    mean source, mixed (and masked) losses to the common training log.
    """
    if method not in UDA_METHODS:
        raise SegmergeError(f"unknown UDA method {method!r}; choose one of {', '.join(UDA_METHODS)}")
    if source.labels is None:
        raise SegmergeError(f"{source.name or 'source data'}: self-training needs a labelled source")
    target = target.unlabelled()
    config = config.replace(description=config.description or "UDA")
    student = on_device(start, config)
    teacher = EMATeacher(student, config.ema_alpha)
    distance = FeatureDistance(student, config.feature_distance) if config.feature_distance > 0 else None
    with reproducible(config):
        source_stream, target_stream, mixing = self_training_streams(source, target, config)
        masking, augmenting = seeded_generator(config.seed, 3), seeded_generator(config.seed, 4)

        def step_loss(step: int):
            src, tgt = next(source_stream), next(target_stream)
            pseudo = teacher.pseudo_labels(tgt.pixels, config.pseudo_label_threshold)
            weights = pseudo.pixel_weights(config.pseudo_label_weighting)
            mixed = class_mix(src.pixels, src.labels, tgt.pixels, pseudo.labels, weights, mixing)
            mixed_pixels = strong_augment(mixed.pixels, augmenting) if config.strong_augment else mixed.pixels
            with captured_bottleneck(student) if distance else contextlib.nullcontext({}) as features:
                source_loss = segmentation_loss(segment(student, src.pixels), src.labels)
            mixed_loss = segmentation_loss(segment(student, mixed_pixels), mixed.labels, mixed.weight)
            stats = {
                "pseudo_weight": pseudo.weight,
                "source_loss": float(source_loss.detach()),
                "mixed_loss": float(mixed_loss.detach()),
            }
            loss = source_loss + mixed_loss
            if distance:
                distance_loss = distance(features["features"], src.pixels, src.labels)
                stats["feature_distance_loss"] = float(distance_loss.detach())
                loss = loss + distance_loss
            if method == "mic":
                hidden = masked(tgt.pixels, masking)
                if isinstance(weights, float):
                    masked_loss = segmentation_loss(segment(student, hidden), pseudo.labels) * weights
                else:
                    masked_loss = segmentation_loss(segment(student, hidden), pseudo.labels, weights)
                stats["masked_loss"] = float(masked_loss.detach())
                loss = loss + masked_loss
            return loss, stats

        log = optimise(student, config, step_loss, before_step=lambda step: teacher.update(student, step))
    return student, log

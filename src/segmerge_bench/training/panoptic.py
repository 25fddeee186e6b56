"""Training the panoptic network: supervised on labelled instances, and self-training for UDA.

The supervised loop is :func:`~segmerge_bench.training.supervised.train_supervised` with the
panoptic loss (semantic CE + centre MSE + offset L1, targets built from each batch's
instance ids). The UDA loop is :func:`~segmerge_bench.training.self_training.train_uda` (EMA
teacher, ClassMix) extended to the instance heads; how the instance heads learn on target
images is a choice (``pseudo_instances``):

* ``True`` (default): on the mixed images the heatmap and offset targets are the source's
  on pasted pixels and the teacher's own predicted heatmap and offsets elsewhere (offsets
  only where the teacher's pseudo-label is a thing), weighted like the pseudo-labels: the
  instance counterpart of semantic pseudo-labels;
* ``False``: the instance heads learn from the source batch alone (no instance term on the
  mixed images), the cautious choice when the teacher's centres are poor.
"""

from __future__ import annotations

from collections.abc import Collection

import torch
from torch import nn

from segmerge.errors import SegmergeError
from segmerge.labels import THING_TRAIN_IDS
from segmerge_bench.training.augment import strong_augment
from segmerge_bench.training.classmix import class_mix
from segmerge_bench.training.config import TrainConfig
from segmerge_bench.training.data import TrainingData, labelled_batches
from segmerge_bench.training.loop import model_device, on_device, optimise, reproducible, seeded_generator
from segmerge_bench.training.loss import segmentation_loss
from segmerge_bench.training.panoptic_loss import (
    InstanceTargets,
    PanopticLossWeights,
    instance_loss,
    instance_targets,
    panoptic_loss,
    upsampled_outputs,
)
from segmerge_bench.training.self_training import self_training_streams
from segmerge_bench.training.teacher import EMATeacher
from segmerge_bench.zoo.panoptic import PanopticModel


def train_panoptic_supervised(
    start: PanopticModel,
    data: TrainingData,
    config: TrainConfig,
    weights: PanopticLossWeights = PanopticLossWeights(),
) -> tuple[nn.Module, dict]:
    """Panoptic loss on ``data`` (labels and instances) from a copy of ``start`` (left unchanged).

    The log adds the mean ``semantic_loss``, ``center_loss`` and ``offset_loss`` to the common log.
    """
    _check(start, data, "panoptic training")
    model = on_device(start, config)
    config = config.replace(description=config.description or "panoptic")
    with reproducible(config):
        stream = labelled_batches(data, config, seeded_generator(config.seed, 0))

        def step_loss(step: int):
            batch = next(stream)
            targets = instance_targets(batch.instances, batch.labels, weights.sigma)
            return panoptic_loss(model(batch.pixels), batch.labels, targets, weights)

        log = optimise(model, config, step_loss)
    return model, log


def train_panoptic_uda(
    start: PanopticModel,
    source: TrainingData,
    target: TrainingData,
    config: TrainConfig,
    weights: PanopticLossWeights = PanopticLossWeights(),
    pseudo_instances: bool = True,
    thing_ids: Collection[int] = THING_TRAIN_IDS,
) -> tuple[nn.Module, dict]:
    """Adapt a copy of ``start`` from labelled ``source`` (with instances) to unlabelled ``target`` images.

    Target labels and instances are never read. The log adds the mean pseudo-label weight and
    the source and mixed losses.
    """
    _check(start, source, "panoptic self-training")
    if config.pseudo_label_weighting != "batch" or config.feature_distance:
        raise SegmergeError(
            "panoptic self-training weights pseudo-labels per batch, without feature distance: "
            "pseudo_label_weighting 'pixel' and feature_distance are for train_uda"
        )
    target = target.unlabelled()
    config = config.replace(description=config.description or "panoptic UDA")
    student = on_device(start, config)
    teacher = EMATeacher(student, config.ema_alpha)
    things = torch.tensor(sorted(thing_ids), device=model_device(student))
    with reproducible(config):
        source_stream, target_stream, mixing = self_training_streams(source, target, config)
        augmenting = seeded_generator(config.seed, 4)

        def step_loss(step: int):
            src, tgt = next(source_stream), next(target_stream)
            pseudo = teacher.pseudo_labels(tgt.pixels, config.pseudo_label_threshold)
            pseudo_weight = pseudo.weight
            mixed = class_mix(src.pixels, src.labels, tgt.pixels, pseudo.labels, pseudo_weight, mixing)
            source_targets = instance_targets(src.instances, src.labels, weights.sigma)
            source_loss, _ = panoptic_loss(student(src.pixels), src.labels, source_targets, weights)
            output = student(strong_augment(mixed.pixels, augmenting) if config.strong_augment else mixed.pixels)
            mixed_loss = segmentation_loss(output.semantic, mixed.labels, mixed.weight)
            if pseudo_instances:
                with torch.no_grad():
                    taught = upsampled_outputs(teacher.model(tgt.pixels), tuple(tgt.pixels.shape[-2:]))
                mixed_targets = _mixed_targets(source_targets, taught, pseudo.labels, pseudo_weight, mixed.mask, things)
                mixed_loss = mixed_loss + sum(instance_loss(output, mixed_targets, weights))
            stats = {
                "pseudo_weight": pseudo_weight,
                "source_loss": float(source_loss.detach()),
                "mixed_loss": float(mixed_loss.detach()),
            }
            return source_loss + mixed_loss, stats

        log = optimise(student, config, step_loss, before_step=lambda step: teacher.update(student, step))
    return student, log


def _mixed_targets(
    source: InstanceTargets,
    teacher,
    pseudo_labels: torch.Tensor,
    pseudo_weight: float,
    pasted: torch.Tensor,
    things: torch.Tensor,
) -> InstanceTargets:
    """The source's targets on pasted pixels, the teacher's predictions (weighted) elsewhere."""
    pasted = pasted.unsqueeze(1)
    taught_things = torch.isin(pseudo_labels, things).unsqueeze(1).float()
    return InstanceTargets(
        center=torch.where(pasted, source.center, teacher.center),
        offset=torch.where(pasted, source.offset, teacher.offset * taught_things),
        center_weight=torch.where(pasted, source.center_weight, torch.full_like(source.center_weight, pseudo_weight)),
        offset_weight=torch.where(pasted, source.offset_weight, taught_things * pseudo_weight),
    )


def _check(start: nn.Module, data: TrainingData, what: str) -> None:
    if not isinstance(start, PanopticModel):
        raise SegmergeError(f"{what} needs a panoptic network (build_model('panoptic')), got {type(start).__name__}")
    if data.labels is None or data.instances is None:
        raise SegmergeError(
            f"{data.name or 'training data'}: {what} needs labels and instances; build the data with "
            "TrainingData.from_samples(samples, instances=True)"
        )

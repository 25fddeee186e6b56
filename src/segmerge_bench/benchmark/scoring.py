"""Scoring checkpoints on the held-out target test split: mIoU from one confusion matrix, PQ.

The same path as ``segmerge eval`` (the segmenter adapters, whole-image inference, softmax
averaging for the ensemble, the panoptic post-processing) on pre-rendered image tensors,
batched, because the sweep scores dozens of merges per claim.

:func:`measure` gives a claim's metric and the numbers beside it: ``{"mIoU": ...}`` for a
semantic claim; for a panoptic one PQ (all, things, stuff) and the mIoU of the semantic
output. A panoptic claim's first checkpoint is the panoptic network; the others are
semantic models, whose class probabilities an ensemble averages with the panoptic
network's before the panoptic network's centres and offsets group the thing pixels.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from pathlib import Path

import torch

from segmerge.errors import SegmergeError
from segmerge.evaluation.inference import InferenceConfig, ensemble_probabilities, predict_probabilities
from segmerge.labels import CITYSCAPES_CLASSES, IGNORE_INDEX, THING_TRAIN_IDS, cityscapes_categories
from segmerge.metrics import PanopticMetric, SemanticMetric
from segmerge.segmenters import load_segmenter
from segmerge_bench.training import TrainingData

BATCH = 25
MIOU, PQ = "mIoU", "PQ"


def quiet_transformers() -> None:
    """No per-model "Loading weights" bar: the benchmark loads hundreds of checkpoints."""
    import transformers

    transformers.utils.logging.disable_progress_bar()


def score(paths: Sequence[Path], test: TrainingData) -> float:
    """mIoU (percent, as every segmerge metric; Cityscapes 19 classes) of one checkpoint, or of the
    output ensemble of several."""
    quiet_transformers()
    segmenters = [load_segmenter(str(p)) for p in paths]
    metric = SemanticMetric(len(CITYSCAPES_CLASSES), ignore_index=IGNORE_INDEX, class_names=list(CITYSCAPES_CLASSES))
    config = InferenceConfig(batch_size=BATCH)
    with torch.inference_mode():
        for start in range(0, len(test), BATCH):
            images = test.images[start : start + BATCH]
            probabilities = [predict_probabilities(s, images, config) for s in segmenters]
            merged = probabilities[0] if len(probabilities) == 1 else ensemble_probabilities(probabilities)
            metric.update(class_map(merged), test.labels[start : start + BATCH].long())
    return metric.compute().miou


def class_map(probabilities: torch.Tensor) -> torch.Tensor:
    """[N,C,H,W] -> the most probable class [N,H,W]: ``argmax(1)``, ties to the lowest class
    alike, but several times faster on CPU for this layout (the sweep scores dozens of merges)."""
    return probabilities.max(1).indices


def measure(metric: str, paths: Sequence[Path], test: TrainingData) -> dict[str, float]:
    """``{metric: value, ...}``: a semantic claim's mIoU, or a panoptic claim's PQ and the rest."""
    if metric == MIOU:
        return {MIOU: score(paths, test)}
    if metric == PQ:
        return panoptic_score(paths, test)
    raise SegmergeError(f"unknown benchmark metric {metric!r}; use {MIOU} or {PQ}")


def panoptic_score(paths: Sequence[Path], test: TrainingData) -> dict[str, float]:
    """PQ, PQ things, PQ stuff, SQ, RQ (percent) of the panoptic network ``paths[0]`` - or of its
    semantic output averaged with the semantic models ``paths[1:]`` - and the mIoU of that
    semantic output. ``test`` needs labels and instances."""
    from segmerge_bench.zoo.panoptic import PanopticModel
    from segmerge_bench.zoo.panoptic_postprocess import panoptic_from_semantic

    if test.labels is None or test.instances is None:
        raise SegmergeError(f"{test.name or 'test data'}: PQ needs labels and instances (instances=True)")
    quiet_transformers()
    panoptic = load_segmenter(str(paths[0]))
    network = panoptic.module  # its forward gives the centres and offsets with the semantic logits
    if not isinstance(network, PanopticModel):
        raise SegmergeError(f"{paths[0]}: PQ needs a panoptic network first, got {type(network).__name__}")
    semantic = [load_segmenter(str(p)) for p in paths[1:]]
    things = set(THING_TRAIN_IDS)
    truths = _truths(test)
    quality = PanopticMetric(cityscapes_categories())
    classes = SemanticMetric(len(CITYSCAPES_CLASSES), ignore_index=IGNORE_INDEX, class_names=list(CITYSCAPES_CLASSES))
    config = InferenceConfig(batch_size=BATCH)
    size = tuple(test.images.shape[1:3])
    with torch.inference_mode():
        for start in range(0, len(test), BATCH):
            images = test.images[start : start + BATCH]
            output = network(panoptic.normalise(images))
            probabilities = [torch.softmax(_upsampled(output.semantic, size), 1)]
            probabilities += [predict_probabilities(s, images, config) for s in semantic]
            merged = probabilities[0] if len(probabilities) == 1 else ensemble_probabilities(probabilities)
            predicted = class_map(merged)
            classes.update(predicted, test.labels[start : start + BATCH].long())
            for i in range(len(images)):
                ids, segments = panoptic_from_semantic(predicted[i], output.center[i], output.offset[i], things)
                quality.update(*truths[start + i], ids.numpy(), segments)
    result = quality.compute()
    return {
        PQ: result.pq,
        "PQ things": result.pq_things,
        "PQ stuff": result.pq_stuff,
        "SQ": result.sq,
        "RQ": result.rq,
        MIOU: classes.compute().miou,
    }


def panoptic_truth(labels: torch.Tensor, instances: torch.Tensor, thing_ids) -> tuple:
    """Ground-truth panoptic ids [H,W] and segments from trainId labels and thing instance ids
    (0 = none): one segment per thing instance and per stuff class; ignored pixels are void."""
    from segmerge_bench.zoo.panoptic_postprocess import fuse

    ids, segments = fuse(labels, instances, thing_ids)
    for segment in segments:
        if segment["category_id"] == IGNORE_INDEX:
            ids[ids == segment["id"]] = 0
    return ids.numpy(), [s for s in segments if s["category_id"] != IGNORE_INDEX]


_TRUTHS: list = [None, []]  # [weak reference to the labels they were made from, the truths]


def _truths(test: TrainingData) -> list[tuple]:
    """Every test image's panoptic ground truth, made once per test split (the sweep scores it dozens of times)."""
    made_from, truths = _TRUTHS
    if made_from is None or made_from() is not test.labels:
        things = set(THING_TRAIN_IDS)
        truths = [
            panoptic_truth(labels.long(), instances.long(), things)
            for labels, instances in zip(test.labels, test.instances, strict=True)
        ]
        _TRUTHS[:] = [weakref.ref(test.labels), truths]
    return truths


def _upsampled(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return torch.nn.functional.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False)

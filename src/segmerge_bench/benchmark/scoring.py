"""Scoring checkpoints on the held-out target test split: mIoU from one confusion matrix, PQ.

Through segmerge's one prediction path (:func:`segmerge.evaluation.prediction.predict`, as
``segmerge eval`` and ``segmerge tune`` use it: the segmenter adapters, whole-image
inference, softmax averaging for the ensemble, the panoptic post-processing) on
pre-rendered image tensors, in batches, because the sweep scores dozens of merges per claim.

:func:`measure` gives a claim's metric and the numbers beside it: ``{"mIoU": ...}`` for a
semantic claim; for a panoptic one PQ (all, things, stuff) and the mIoU of the semantic
output. A panoptic claim's first checkpoint is the panoptic network; the others are
semantic models, whose class probabilities an ensemble averages with the panoptic
network's before the panoptic network's centres and offsets group the thing pixels.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import torch

from segmerge.errors import SegmergeError
from segmerge.evaluation.prediction import InferenceConfig, class_map, predict
from segmerge.labels import CITYSCAPES_CLASSES, IGNORE_INDEX, THING_TRAIN_IDS, cityscapes_categories
from segmerge.metrics import PanopticMetric, SemanticMetric
from segmerge.segmenters import load_segmenter
from segmerge_bench.training import TrainingData
from segmerge_bench.training.data import panoptic_truth

__all__ = [
    "MIOU",
    "PQ",
    "inference",
    "load_segmenters",
    "measure",
    "panoptic_score",
    "panoptic_truth",
    "score",
    "scores_over",
    "scoring_on",
]

BATCH = 25
MIOU, PQ = "mIoU", "PQ"
_inference = InferenceConfig(batch_size=BATCH)


def inference() -> InferenceConfig:
    """How the benchmark runs its networks now: whole images, :data:`BATCH` at a time, on the
    device :func:`scoring_on` set (the CPU by default)."""
    return _inference


@contextmanager
def scoring_on(device: str) -> Iterator[None]:
    """Score on ``device`` while inside (``segmerge bench --device``); the CPU again after. A score
    is cached by its model's path, not by where it was computed (a GPU changes its last digits)."""
    global _inference
    before = _inference
    _inference = replace(before, device=device)
    try:
        yield
    finally:
        _inference = before


def load_segmenters(paths: Sequence[Path]) -> list:
    """The segmenters of ``paths``, on the scoring device."""
    quiet_transformers()
    return [load_segmenter(str(p), device=_inference.device) for p in paths]


def quiet_transformers() -> None:
    """No per-model "Loading weights" bar: the benchmark loads hundreds of checkpoints."""
    import transformers

    transformers.utils.logging.disable_progress_bar()


def _semantic_metric() -> SemanticMetric:
    return SemanticMetric(len(CITYSCAPES_CLASSES), ignore_index=IGNORE_INDEX, class_names=list(CITYSCAPES_CLASSES))


def score(paths: Sequence[Path], test: TrainingData) -> float:
    """mIoU (percent, as every segmerge metric; Cityscapes 19 classes) of one checkpoint, or of the
    output ensemble of several; over ``test.scored_classes`` when set: the mean over those trainIds
    only, the labels kept, as mmseg and EDAPS score SYNTHIA -> Cityscapes over SYNTHIA's 16 classes
    (predicting another class still counts as an error;
    :meth:`~segmerge_bench.training.TrainingData.over_classes`)."""
    return scores_over(paths, test, [test.scored_classes])[0]


def scores_over(paths: Sequence[Path], test: TrainingData, class_sets: Sequence[Sequence[int] | None]) -> list[float]:
    """:func:`score` over each of ``class_sets`` (None: all 19), from one pass over ``test``."""
    segmenters = load_segmenters(paths)
    metric = _semantic_metric()
    for batch in predict(segmenters, test.images, _inference):
        metric.update(class_map(batch.ensemble()), test.labels[batch.indices].long())
    return [metric.compute(None if classes is None else list(classes)).miou for classes in class_sets]


def void_outside(ids, segments: list[dict], scored: Sequence[int] | None) -> tuple:
    """A predicted panoptic map without the segments of classes outside ``scored`` (made void):
    they count only for their own classes, which the mean over ``scored`` leaves out (EDAPS
    evaluates all 19 and averages over SYNTHIA's 16); on the scored classes' segments, the
    pixels they cover are predicted as no scored class, which is what they were."""
    if scored is None:
        return ids, segments
    kept = [s for s in segments if s["category_id"] in scored]
    if len(kept) < len(segments):
        ids = ids.clone() if isinstance(ids, torch.Tensor) else ids.copy()
        for segment in segments:
            if segment["category_id"] not in scored:
                ids[ids == segment["id"]] = 0
    return ids, kept


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
    semantic output. ``test`` needs labels and instances; scored over ``test.scored_classes`` when
    set (:meth:`~segmerge_bench.training.TrainingData.over_classes`)."""
    truths = test.panoptic_truths
    segmenters = load_segmenters(paths)
    if segmenters[0].panoptic_head is None:
        raise SegmergeError(f"{paths[0]}: PQ needs a panoptic network first")
    things = set(THING_TRAIN_IDS)
    scored = test.scored_classes
    categories = [c for c in cityscapes_categories() if scored is None or c["id"] in scored]
    quality = PanopticMetric(categories)
    classes = _semantic_metric()
    for batch in predict(segmenters, test.images, _inference, keep_outputs=True):
        predicted = class_map(batch.ensemble())
        classes.update(predicted, test.labels[batch.indices].long())
        for i, (ids, segments) in enumerate(batch.panoptic(0, things, classes=predicted), start=batch.indices.start):
            quality.update(*truths[i], *void_outside(ids, segments, scored))
    result = quality.compute()
    return {
        PQ: result.pq,
        "PQ things": result.pq_things,
        "PQ stuff": result.pq_stuff,
        "SQ": result.sq,
        "RQ": result.rq,
        MIOU: classes.compute(None if scored is None else list(scored)).miou,
    }

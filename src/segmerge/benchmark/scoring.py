"""Scoring checkpoints on the held-out target test split: mIoU from one confusion matrix.

The same path as ``segmerge eval`` (the segmenter adapters, whole-image inference, softmax
averaging for the ensemble) on pre-rendered image tensors, batched, because the sweep
scores dozens of merges per claim.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from segmerge.evaluation.inference import InferenceConfig, ensemble_probabilities, predict_probabilities
from segmerge.metrics import SemanticMetric
from segmerge.metrics.protocols import CITYSCAPES_CLASSES
from segmerge.segmenters import load_segmenter
from segmerge.training import TrainingData

BATCH = 25


def quiet_transformers() -> None:
    """No per-model "Loading weights" bar: the benchmark loads hundreds of checkpoints."""
    import transformers

    transformers.utils.logging.disable_progress_bar()


def score(paths: Sequence[Path], test: TrainingData) -> float:
    """mIoU (percent, as every segmerge metric; Cityscapes 19 classes) of one checkpoint, or of the
    output ensemble of several."""
    quiet_transformers()
    segmenters = [load_segmenter(str(p)) for p in paths]
    metric = SemanticMetric(len(CITYSCAPES_CLASSES), ignore_index=255, class_names=list(CITYSCAPES_CLASSES))
    config = InferenceConfig(batch_size=BATCH)
    with torch.inference_mode():
        for start in range(0, len(test), BATCH):
            images = test.images[start : start + BATCH]
            probabilities = [predict_probabilities(s, images, config) for s in segmenters]
            merged = probabilities[0] if len(probabilities) == 1 else ensemble_probabilities(probabilities)
            metric.update(merged.argmax(1), test.labels[start : start + BATCH].long())
    return metric.compute().miou

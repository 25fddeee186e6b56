"""DAFormer's thing-class feature distance: keep the adapted encoder's features of things close
to those of its pre-trained start.

DAFormer (lhoyer/DAFormer, configs/_base_/uda/dacs_fdthings.py: weight 0.005, classes traffic
light and sign, person, rider and the vehicles, minimum class share 0.75) adds to the source
loss the mean Euclidean distance between the student's bottleneck features and the frozen
ImageNet encoder's, over the feature cells of source images that a thing class fills to at
least that share. Self-training otherwise lets rare and thing classes drift away from the
pre-trained features that still recognise them on the target. Here the frozen encoder is the
shared start's (the benchmark's stand-in for ImageNet pre-training).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from segmerge.labels import IGNORE_INDEX, NUM_CLASSES
from segmerge_bench.zoo.models import encoder_of

#: Cityscapes trainIds DAFormer regularises: traffic light, traffic sign, person, rider, car,
#: truck, bus, train, motorcycle, bicycle.
FEATURE_DISTANCE_CLASSES: tuple[int, ...] = (6, 7, 11, 12, 13, 14, 15, 16, 17, 18)
MIN_CLASS_SHARE = 0.75


def bottleneck(output) -> torch.Tensor:
    """The last encoder stage's feature map [N,C,h,w] from a ``SegformerModel`` output."""
    return output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]


@contextmanager
def captured_bottleneck(model: nn.Module) -> Iterator[dict]:
    """While inside, every forward pass of ``model``'s encoder leaves its bottleneck features in
    the yielded dict under ``"features"`` (gradients kept): the segmentation forward pass gives
    them at no extra cost."""
    box: dict = {}
    handle = encoder_of(model).register_forward_hook(
        lambda module, args, output: box.update(features=bottleneck(output))
    )
    try:
        yield box
    finally:
        handle.remove()


def thing_cells(
    labels: torch.Tensor, size: tuple[int, int], classes: Sequence[int], min_share: float = MIN_CLASS_SHARE
) -> torch.Tensor:
    """bool [N,h,w]: feature cells whose pixels are at least ``min_share`` one class of ``classes``.

    Each cell's class shares come from the labels' one-hot map averaged over the cell (ignored
    pixels count in the cell's area, so a cell mostly ignored is left out)."""
    n, height, width = labels.shape
    valid = labels != IGNORE_INDEX
    one_hot = F.one_hot(torch.where(valid, labels, 0), NUM_CLASSES).permute(0, 3, 1, 2).float()
    one_hot = one_hot * valid[:, None]
    shares = F.adaptive_avg_pool2d(one_hot, size)
    best, cls = shares.max(dim=1)
    wanted = torch.zeros(NUM_CLASSES, dtype=torch.bool, device=labels.device)
    wanted[list(classes)] = True
    return (best >= min_share) & wanted[cls]


class FeatureDistance:
    """The loss term: ``weight`` x mean over thing cells of ||student - start|| (channels)."""

    def __init__(self, start: nn.Module, weight: float, classes: Sequence[int] = FEATURE_DISTANCE_CLASSES):
        self.frozen = copy.deepcopy(encoder_of(start)).eval()
        for parameter in self.frozen.parameters():
            parameter.requires_grad_(False)
        self.weight, self.classes = weight, tuple(classes)

    def __call__(self, student_features: torch.Tensor, pixels: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            reference = bottleneck(self.frozen(pixel_values=pixels))
        cells = thing_cells(labels, student_features.shape[-2:], self.classes)
        if not bool(cells.any()):
            return student_features.sum() * 0.0
        distance = (student_features - reference).norm(dim=1)  # [N,h,w]
        return self.weight * distance[cells].mean()

"""Training data held as tensors, and the seeded stream of batches every loop draws from.

Synthetic scenes cost ~25 ms each to render, as long as a training step of the tiny
model, so a loop cannot render on the fly: a data set is rendered once into uint8
tensors (about 55 KB per 96x192 image) and batches are drawn from those. Batch order and
flips come from a generator seeded by the run's seed, never from global random state, so
two runs with one seed see the same batches.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from segmerge.errors import SegmergeError
from segmerge.labels import IGNORE_INDEX, THING_TRAIN_IDS
from segmerge.segmenters.base import IMAGENET_MEAN, IMAGENET_STD
from segmerge_bench.training.config import TrainConfig
from segmerge_bench.training.rare_classes import RareClassSampler


def panoptic_truth(labels: torch.Tensor, instances: torch.Tensor, thing_ids) -> tuple:
    """Ground-truth panoptic ids [H,W] and segments from trainId labels and thing instance ids
    (0 = none): one segment per thing instance and per stuff class; ignored pixels are void."""
    from segmerge_bench.zoo.panoptic_postprocess import fuse

    ids, segments = fuse(labels, instances, thing_ids)
    for segment in segments:
        if segment["category_id"] == IGNORE_INDEX:
            ids[ids == segment["id"]] = 0
    return ids.numpy(), [s for s in segments if s["category_id"] != IGNORE_INDEX]


@dataclass
class TrainingData:
    """``images``: uint8 [N,H,W,3]; ``labels``: uint8 trainIds [N,H,W] (255 ignore), or None (unlabelled);
    ``instances``: int32 [N,H,W] thing instance ids (0 = no thing), or None (what panoptic training needs).
    ``scored_classes``: the trainIds scores on this data average over (None: all); see :meth:`over_classes`."""

    images: torch.Tensor
    labels: torch.Tensor | None = None
    name: str = ""
    instances: torch.Tensor | None = None
    scored_classes: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[-1] != 3:
            raise SegmergeError(
                f"{self.name or 'training data'}: images must be uint8 [N,H,W,3], "
                f"got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels is not None and self.labels.shape != self.images.shape[:3]:
            raise SegmergeError(
                f"{self.name or 'training data'}: labels {tuple(self.labels.shape)} do not match "
                f"images {tuple(self.images.shape[:3])}"
            )
        if self.instances is not None and (self.labels is None or self.instances.shape != self.labels.shape):
            raise SegmergeError(
                f"{self.name or 'training data'}: instances need labels of the same shape, got "
                f"{None if self.instances is None else tuple(self.instances.shape)} for labels "
                f"{None if self.labels is None else tuple(self.labels.shape)}"
            )
        if len(self.images) == 0:
            raise SegmergeError(f"{self.name or 'training data'}: no images")

    def over_classes(self, classes: Iterable[int]) -> TrainingData:
        """This labelled data scored over ``classes`` only, as EDAPS and mmseg score SYNTHIA ->
        Cityscapes over SYNTHIA's 16 classes: the labels are kept whole (a prediction of another
        class on a pixel of an unscored class still counts against it) and the scores average over
        ``classes`` (EDAPS's mPQ16 = mPQ19 x 19 / 16, its mIoU16 likewise)."""
        if self.labels is None:
            raise SegmergeError(f"{self.name or 'data'}: only labelled data can be scored over a set of classes")
        classes = tuple(sorted({int(c) for c in classes}))
        return TrainingData(self.images, self.labels, f"{self.name} ({len(classes)} classes)", self.instances, classes)

    @functools.cached_property
    def panoptic_truths(self) -> list[tuple[np.ndarray, list[dict]]]:
        """Every image's panoptic ground truth (:func:`panoptic_truth`), made once: the benchmark's
        sweep scores the same test split dozens of times."""
        if self.labels is None or self.instances is None:
            raise SegmergeError(f"{self.name or 'test data'}: PQ needs labels and instances (instances=True)")
        return [
            panoptic_truth(labels.long(), instances.long(), THING_TRAIN_IDS)
            for labels, instances in zip(self.labels, self.instances, strict=True)
        ]

    @classmethod
    def from_samples(
        cls,
        samples: Iterable,
        labelled: bool = True,
        name: str = "",
        progress: bool = False,
        instances: bool = False,
        thing_ids: Collection[int] = THING_TRAIN_IDS,
    ):
        """Stack samples with ``.image`` (uint8 HxWx3) and ``.label`` (trainIds) - a SyntheticDataset,
        any segmerge reader - into tensors. ``labelled=False`` never reads the labels. ``instances=True``
        also keeps the thing instances of ``.panoptic`` (segments of a ``thing_ids`` category, not crowd)."""
        total = len(samples) if hasattr(samples, "__len__") else None
        images, labels, objects = [], [], []
        for sample in tqdm(samples, total=total, desc=f"render {name}".strip(), disable=not progress, leave=False):
            images.append(torch.from_numpy(np.ascontiguousarray(sample.image)))
            if labelled:
                label = np.asarray(sample.label)
                if label.min() < 0 or label.max() > IGNORE_INDEX:
                    raise SegmergeError(f"{name or 'training data'}: label of {sample.name} holds ids outside 0..255")
                labels.append(torch.from_numpy(label.astype(np.uint8)))
            if labelled and instances:
                objects.append(thing_instances(sample, thing_ids, name))
        if not images:
            raise SegmergeError(f"{name or 'training data'}: no samples")
        stacked_labels = torch.stack(labels) if labelled else None
        return cls(torch.stack(images), stacked_labels, name, torch.stack(objects) if objects else None)

    def unlabelled(self) -> TrainingData:
        """The images alone: what unsupervised domain adaptation may see of the target."""
        return TrainingData(self.images, None, self.name)

    def __len__(self) -> int:
        return len(self.images)


def thing_instances(sample, thing_ids: Collection[int], name: str = "") -> torch.Tensor:
    """int32 [H,W]: 1..K over the sample's thing segments (``sample.panoptic``), 0 elsewhere."""
    if sample.panoptic is None:
        raise SegmergeError(f"{name or 'training data'}: {sample.name} has no panoptic ground truth for instances")
    ids = np.asarray(sample.panoptic.ids)
    things = [
        int(s["id"])
        for s in sample.panoptic.segments_info
        if int(s["category_id"]) in thing_ids and not s.get("iscrowd", 0)
    ]
    lookup = np.zeros(max([int(ids.max(initial=0)), *things]) + 1, dtype=np.int32)
    lookup[things] = np.arange(1, len(things) + 1, dtype=np.int32)
    return torch.from_numpy(lookup[ids])


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N,H,W,3] -> float [N,3,H,W] with ImageNet mean/std, as the segmenters evaluate."""
    x = images.permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


@dataclass
class Batch:
    pixels: torch.Tensor  # float [B,3,H,W], normalised
    labels: torch.Tensor | None  # int64 [B,H,W]
    instances: torch.Tensor | None = None  # int64 [B,H,W], 0 = no thing


def batches(
    data: TrainingData,
    batch_size: int,
    generator: torch.Generator,
    flip: bool = True,
    scales: tuple[float, float] | None = None,
    sampler: Callable[[int, torch.Generator], torch.Tensor] | None = None,
    device: str | torch.device = "cpu",
) -> Iterator[Batch]:
    """Endless batches: a fresh permutation every epoch (or the images ``sampler`` draws, e.g.
    :class:`~segmerge_bench.training.rare_classes.RareClassSampler`), each image flipped
    left-right with p = 0.5, and with ``scales`` = (low, high) each batch rescaled by a factor
    drawn from that range, then cropped or padded (labels: ignore) back to the image size -
    mmseg's resize-and-crop. Every draw is made on the CPU from ``generator``; the batch is then
    moved to ``device`` (uint8, before normalising: a quarter of the bytes)."""
    n = len(data)
    order = torch.empty(0, dtype=torch.long, device="cpu")
    while True:
        if sampler is not None:
            index = sampler(batch_size, generator)
        else:
            while len(order) < batch_size:
                order = torch.cat([order, torch.randperm(n, generator=generator, device="cpu")])
            index, order = order[:batch_size], order[batch_size:]
        images = data.images[index]
        labels = data.labels[index].long() if data.labels is not None else None
        instances = data.instances[index].long() if data.instances is not None else None
        if flip:
            mirrored = torch.rand(batch_size, generator=generator, device="cpu") < 0.5
            images[mirrored] = images[mirrored].flip(2)
            if labels is not None:
                labels[mirrored] = labels[mirrored].flip(2)
            if instances is not None:
                instances[mirrored] = instances[mirrored].flip(2)
        labels, instances = (None if t is None else t.to(device) for t in (labels, instances))
        pixels = normalise(images.to(device))
        if scales is not None:
            pixels, labels, instances = rescaled(pixels, labels, instances, scales, generator)
        yield Batch(pixels, labels, instances)


def labelled_batches(data: TrainingData, config: TrainConfig, generator: torch.Generator) -> Iterator[Batch]:
    """The batches a loop trains on from labelled ``data`` under ``config``: its batch size, flips,
    rescaling and, with ``rare_class_temperature`` > 0, DAFormer's rare-class sampling."""
    sampler = None
    if config.rare_class_temperature > 0:
        sampler = RareClassSampler.of(
            data.labels, config.rare_class_temperature, config.rare_class_min_share, name=data.name
        )
    return batches(data, config.batch_size, generator, config.flip, config.scales, sampler, config.device)


def rescaled(pixels, labels, instances, scales: tuple[float, float], generator: torch.Generator):
    """One random rescale of a batch (bilinear images, nearest labels and instances) and a random
    crop back to its size, or padding (images 0 - the mean colour -, labels ignore) when smaller."""
    import torch.nn.functional as F

    h, w = pixels.shape[-2:]
    low, high = scales
    factor = low + (high - low) * float(torch.rand(1, generator=generator, device="cpu"))
    size = (max(1, round(h * factor)), max(1, round(w * factor)))
    if size == (h, w):
        return pixels, labels, instances
    pixels = F.interpolate(pixels, size=size, mode="bilinear", align_corners=False)

    def nearest(t):
        return None if t is None else F.interpolate(t[:, None].float(), size=size, mode="nearest")[:, 0].long()

    labels, instances = nearest(labels), nearest(instances)
    pad_h, pad_w = max(0, h - size[0]), max(0, w - size[1])
    if pad_h or pad_w:
        pixels = F.pad(pixels, (0, pad_w, 0, pad_h))
        labels = None if labels is None else F.pad(labels, (0, pad_w, 0, pad_h), value=IGNORE_INDEX)
        instances = None if instances is None else F.pad(instances, (0, pad_w, 0, pad_h))
    top = int(torch.randint(0, pixels.shape[-2] - h + 1, (1,), generator=generator, device="cpu"))
    left = int(torch.randint(0, pixels.shape[-1] - w + 1, (1,), generator=generator, device="cpu"))

    def crop(t):
        return None if t is None else t[..., top : top + h, left : left + w].contiguous()

    return crop(pixels), crop(labels), crop(instances)

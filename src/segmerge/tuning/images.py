"""Unlabelled target images for tuning: from a data set spec, a folder, a data set object or a tensor.

Only images are read. A data set whose samples pair images with label files is read
through its image paths, so a target label file is never opened.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from segmerge.datasets import FolderDataset, PairedDataset, SegmentationDataset, open_dataset
from segmerge.datasets.images import read_image
from segmerge.errors import SegmergeError

ImageSource = str | Path | SegmentationDataset | torch.Tensor | np.ndarray


def open_target(source: str | Path, split: str = "train") -> SegmentationDataset:
    """A folder of images (searched recursively) or a data set spec ``KIND:ARGUMENT``."""
    text = str(source)
    path = Path(text)
    if path.is_dir():
        return FolderDataset(path)
    if ":" in text and not path.exists():
        return open_dataset(text, split)
    raise SegmergeError(
        f"{source}: target images must be a folder of images or a data set spec such as "
        "'cityscapes:/data/cityscapes' or 'synthetic:target,n=50'"
    )


def load_images(
    source: ImageSource,
    limit: int | None = None,
    size: tuple[int, int] | None = None,
    split: str = "train",
    seed: int = 0,
) -> torch.Tensor:
    """uint8 images [N,H,W,3]. ``limit`` keeps a seeded random subset of that many (in data set
    order); ``size`` (H, W) resizes every image, otherwise all images must share the first one's size."""
    if isinstance(source, torch.Tensor | np.ndarray):
        images = torch.as_tensor(source)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise SegmergeError(f"target images must be uint8 [N,H,W,3]; got shape {tuple(images.shape)}")
        if limit is not None and limit < len(images):
            images = images[_subset(len(images), limit, seed)]
        return _resized(images.to(torch.uint8), size) if size else images.to(torch.uint8)
    dataset = source if isinstance(source, SegmentationDataset) else open_target(source, split)
    if len(dataset) == 0:
        raise SegmergeError(f"{source}: holds no images")
    indices = _subset(len(dataset), limit, seed) if limit is not None and limit < len(dataset) else range(len(dataset))
    images = []
    for i in indices:
        if isinstance(dataset, PairedDataset):
            pair = dataset.pairs[int(i)]
            image, where = read_image(pair.image_path), pair.image_path
        else:
            sample = dataset[int(i)]
            image, where = sample.image, sample.name
        tensor = torch.from_numpy(np.ascontiguousarray(image))
        if size is not None:
            tensor = _resized(tensor[None], size)[0]
        elif images and tensor.shape != images[0].shape:
            raise SegmergeError(
                f"{where}: image size {tuple(tensor.shape[:2])} differs from the first image's "
                f"{tuple(images[0].shape[:2])}; pass a common size (--size HxW)"
            )
        images.append(tensor)
    return torch.stack(images)


def _subset(n: int, limit: int, seed: int) -> list[int]:
    chosen = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:limit]
    return sorted(chosen.tolist())


def _resized(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    x = images.permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()

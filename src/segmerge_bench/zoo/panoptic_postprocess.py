"""From a panoptic network's outputs to a COCO-style panoptic segmentation (Panoptic-DeepLab's rules).

1. Semantic map: argmax of the semantic logits.
2. Centres: keep the local maxima of the centre heatmap (max-pool NMS) above a threshold,
   at most ``top_k`` of them.
3. Grouping: every pixel whose semantic class is a thing votes for the centre nearest to
   where its offset points (pixel + offset); pixels of one centre form one object.
4. Class of an object: majority vote of the semantic labels of its pixels.
5. Stuff: the pixels of each stuff class form one segment, dropped (void) below
   ``stuff_area`` pixels; thing pixels with no centre at all are void.

The output is what :class:`~segmerge.metrics.PanopticMetric` and a
:class:`~segmerge.segmenters.base.Segmenter`'s ``panoptic`` callable use: an int64 id map
(0 = void; ids 1, 2, ... in segment order, things first) and ``segments_info``, one
``{"id", "category_id", "isthing", "area"}`` per segment. Everything runs on one image at
full resolution (the outputs are upsampled first, offsets being in input pixels already).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from segmerge.errors import SegmergeError


@dataclass(frozen=True)
class PostprocessConfig:
    """Panoptic-DeepLab's settings scaled to the benchmark's 96x192 images (its defaults are for
    1024x2048: threshold 0.1, NMS kernel 7, top 200, stuff area 2048 ~ 1/1000 of the image)."""

    center_threshold: float = 0.1
    nms_kernel: int = 5
    top_k: int = 200
    stuff_area: int = 16

    def __post_init__(self) -> None:
        if self.nms_kernel < 1 or self.nms_kernel % 2 == 0:
            raise SegmergeError(f"PostprocessConfig.nms_kernel must be an odd positive integer, got {self.nms_kernel}")
        if self.top_k < 1 or self.stuff_area < 0:
            raise SegmergeError("PostprocessConfig: top_k must be >= 1 and stuff_area >= 0")


def find_centers(heatmap: torch.Tensor, config: PostprocessConfig = PostprocessConfig()) -> torch.Tensor:
    """[H,W] heatmap -> int64 [K,2] (y, x) of its local maxima above the threshold, strongest first."""
    if heatmap.ndim != 2:
        raise SegmergeError(f"find_centers: expected a [H,W] heatmap, got shape {tuple(heatmap.shape)}")
    heat = heatmap.float()[None, None]
    pooled = F.max_pool2d(heat, config.nms_kernel, stride=1, padding=config.nms_kernel // 2)
    peaks = (heat == pooled) & (heat > config.center_threshold)
    ys, xs = torch.nonzero(peaks[0, 0], as_tuple=True)
    scores = heatmap[ys, xs]
    order = scores.argsort(descending=True, stable=True)[: config.top_k]
    return torch.stack([ys[order], xs[order]], dim=1)


def group_pixels(centers: torch.Tensor, offset: torch.Tensor, thing_mask: torch.Tensor) -> torch.Tensor:
    """int64 [H,W]: 1 + the index of the centre nearest to pixel + offset on thing pixels, 0 elsewhere."""
    height, width = thing_mask.shape
    instances = torch.zeros(height, width, dtype=torch.int64)
    if len(centers) == 0:
        return instances
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    pointed = torch.stack([ys + offset[0], xs + offset[1]], dim=-1)[thing_mask]  # [P,2]
    distance = torch.cdist(pointed.float(), centers.float())  # [P,K]
    instances[thing_mask] = distance.argmin(dim=1) + 1
    return instances


def fuse(
    semantic: torch.Tensor,
    instances: torch.Tensor,
    thing_ids: Collection[int],
    stuff_area: int = 0,
) -> tuple[torch.Tensor, list[dict]]:
    """Semantic map [H,W] + instance map [H,W] (0 = none) -> (panoptic ids [H,W], segments_info)."""
    ids = torch.zeros_like(semantic, dtype=torch.int64)
    segments: list[dict] = []
    things = torch.tensor(sorted(thing_ids), dtype=semantic.dtype)
    is_thing = torch.isin(semantic, things)
    for instance in instances[is_thing].unique().tolist():
        if instance == 0:
            continue
        pixels = (instances == instance) & is_thing
        category = int(torch.mode(semantic[pixels]).values)
        segments.append(_segment(ids, pixels, len(segments) + 1, category, True))
    for category in semantic[~is_thing].unique().tolist():
        pixels = semantic == category
        if int(pixels.sum()) >= max(stuff_area, 1):
            segments.append(_segment(ids, pixels, len(segments) + 1, int(category), False))
    return ids, segments


def panoptic_segmentation(
    semantic_logits: torch.Tensor,
    center: torch.Tensor,
    offset: torch.Tensor,
    size: tuple[int, int],
    thing_ids: Collection[int],
    config: PostprocessConfig = PostprocessConfig(),
) -> tuple[torch.Tensor, list[dict]]:
    """One image's network outputs ([C,h,w], [1,h,w], [2,h,w], any stride) -> (ids [H,W], segments_info)."""
    if semantic_logits.ndim != 3 or center.shape[0] != 1 or offset.shape[0] != 2:
        raise SegmergeError(
            "panoptic_segmentation: expected one image's outputs [C,h,w], [1,h,w], [2,h,w]; got "
            f"{tuple(semantic_logits.shape)}, {tuple(center.shape)}, {tuple(offset.shape)}"
        )
    return panoptic_from_semantic(_resize(semantic_logits, size).argmax(0), center, offset, thing_ids, config)


def panoptic_from_semantic(
    semantic: torch.Tensor,
    center: torch.Tensor,
    offset: torch.Tensor,
    thing_ids: Collection[int],
    config: PostprocessConfig = PostprocessConfig(),
) -> tuple[torch.Tensor, list[dict]]:
    """:func:`panoptic_segmentation` from a class map [H,W] already decided (e.g. by an ensemble)."""
    size = tuple(semantic.shape)
    heatmap = _resize(center, size)[0]
    offsets = _resize(offset, size)
    centers = find_centers(heatmap, config)
    is_thing = torch.isin(semantic, torch.tensor(sorted(thing_ids), dtype=semantic.dtype))
    instances = group_pixels(centers, offsets, is_thing)
    return fuse(semantic, instances, thing_ids, config.stuff_area)


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x.float()
    return F.interpolate(x[None].float(), size=size, mode="bilinear", align_corners=False)[0]


def _segment(ids: torch.Tensor, pixels: torch.Tensor, segment_id: int, category: int, isthing: bool) -> dict:
    ids[pixels] = segment_id
    return {"id": segment_id, "category_id": category, "isthing": isthing, "area": int(pixels.sum())}

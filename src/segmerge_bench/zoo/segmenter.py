"""segmerge's own models: the benchmark's DAFormer-style and panoptic ``.pth`` checkpoints.

Such a file says which network it holds in ``meta["segmerge_model"]`` (written by
``segmerge_bench.zoo.models.save_model`` and kept by a merge anchored on it), so it can be
rebuilt without user code. The file is read through ``open_checkpoint``, i.e. with safe
unpickling only. A panoptic network's segmenter scores with its semantic head and has a
``panoptic`` output (centre/offset grouping, :mod:`segmerge_bench.zoo.panoptic_postprocess`).
The benchmark's SegFormer models are Hugging Face folders, which the Hugging Face adapter
loads; any other checkpoint needs ``--model FILE.py:function``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path

import torch

from segmerge.segmenters.base import Segmenter


def from_builtin_checkpoint(path: Path, label: str) -> Segmenter | None:
    """The ``segmerge.segmenters`` plugin: a segmenter for a ``.pth`` that names its network in
    ``meta["segmerge_model"]``; ``None`` for any other file, so that segmerge tries the next loader."""
    from segmerge.checkpoints import open_checkpoint
    from segmerge_bench.zoo.daformer import META_KEY
    from segmerge_bench.zoo.models import model_from_checkpoint

    path = Path(path)
    if not (path.is_file() and path.suffix in (".pth", ".pt", ".bin", ".ckpt")):
        return None
    checkpoint = open_checkpoint(path)
    content = checkpoint.pth_content
    spec = (content.meta or {}).get(META_KEY) if content is not None else None
    if not isinstance(spec, Mapping):
        return None
    return segmenter_of(model_from_checkpoint(checkpoint, str(path)), label, str(path))


def segmenter_of(module: torch.nn.Module, label: str, source: str = "") -> Segmenter:
    """The evaluation interface of a built-in network (DAFormer-style or panoptic) held in memory."""
    from segmerge_bench.zoo.models import segment
    from segmerge_bench.zoo.panoptic import PanopticModel
    from segmerge_bench.zoo.panoptic_postprocess import panoptic_segmentation

    def scores(pixels: torch.Tensor) -> torch.Tensor:
        return segment(module, pixels)

    panoptic = None
    if isinstance(module, PanopticModel):

        def panoptic(pixels: torch.Tensor, size: tuple[int, int], thing_ids: Collection[int]):
            output = module(pixels)
            ids, segments = panoptic_segmentation(
                output.semantic[0], output.center[0], output.offset[0], size, thing_ids
            )
            return ids, segments

    return Segmenter(label, module, module.num_classes, scores, True, panoptic=panoptic, source=source)

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


def from_bench_checkpoint(path: Path, label: str) -> Segmenter | None:
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
    from segmerge_bench.zoo.panoptic import PanopticModel
    from segmerge_bench.zoo.panoptic_postprocess import panoptic_from_semantic, panoptic_segmentation

    if not isinstance(module, PanopticModel):  # a DAFormer: its forward gives the logits
        return Segmenter(label, module, module.num_classes, lambda logits: logits, True, source=source)

    def panoptic(output, index: int, size: tuple[int, int], thing_ids: Collection[int], classes=None):
        # one image's grouping runs on the CPU, where the class maps are, whatever the network ran on
        center, offset = output.center[index].cpu(), output.offset[index].cpu()
        if classes is not None:  # an ensemble's class map, grouped by this network's centres and offsets
            return panoptic_from_semantic(classes.cpu(), center, offset, thing_ids)
        return panoptic_segmentation(output.semantic[index].cpu(), center, offset, size, thing_ids)

    return Segmenter(
        label,
        module,
        module.num_classes,
        lambda output: output.semantic,
        True,
        panoptic_head=panoptic,
        source=source,
        score_forward=module.semantic,  # without the instance head's cost when only classes are needed
    )

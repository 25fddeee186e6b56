"""Hugging Face folders: SegFormer (semantic) and Mask2Former (semantic and panoptic).

Normalisation constants come from the folder's Pillow image processor
(``SegformerImageProcessorPil`` / ``Mask2FormerImageProcessorPil``); evaluation then runs
at the data's own resolution (whole image or sliding window) instead of the processor's
fixed resize, as the field's protocols do.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from segmerge.errors import SegmergeError
from segmerge.segmenters.base import IMAGENET_MEAN, IMAGENET_STD, Segmenter

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def from_hf_folder(path: Path, label: str) -> Segmenter:
    config = json.loads((path / "config.json").read_text())
    arch = (config.get("architectures") or [""])[0]
    model_type = config.get("model_type", "")
    if "Segformer" in arch or model_type == "segformer":
        return _segformer(path, label)
    if "Mask2Former" in arch or model_type == "mask2former":
        return _mask2former(path, label)
    raise SegmergeError(
        f"{path}: a Hugging Face {arch or model_type or 'model'} folder; segmerge evaluates SegFormer and "
        "Mask2Former folders - for other models pass --model FILE.py:function"
    )


def _processor_stats(path: Path, processor_class) -> tuple[tuple, tuple]:
    if (path / "preprocessor_config.json").is_file():
        processor = processor_class.from_pretrained(path)
    else:
        processor = processor_class()
    mean = tuple(processor.image_mean or IMAGENET_MEAN)
    std = tuple(processor.image_std or IMAGENET_STD)
    return mean, std


def _segformer(path: Path, label: str) -> Segmenter:
    from transformers import SegformerForSemanticSegmentation, SegformerImageProcessorPil

    model = SegformerForSemanticSegmentation.from_pretrained(path)
    mean, std = _processor_stats(path, SegformerImageProcessorPil)

    def scores(pixels: torch.Tensor) -> torch.Tensor:
        return model(pixel_values=pixels).logits

    return Segmenter(label, model, model.config.num_labels, scores, True, mean, std, source=str(path))


def _mask2former(path: Path, label: str) -> Segmenter:
    from transformers import Mask2FormerForUniversalSegmentation, Mask2FormerImageProcessorPil

    model = Mask2FormerForUniversalSegmentation.from_pretrained(path)
    processor = (
        Mask2FormerImageProcessorPil.from_pretrained(path)
        if (path / "preprocessor_config.json").is_file()
        else Mask2FormerImageProcessorPil()
    )
    mean = tuple(processor.image_mean or IMAGENET_MEAN)
    std = tuple(processor.image_std or IMAGENET_STD)
    num_classes = model.config.num_labels

    def scores(pixels: torch.Tensor) -> torch.Tensor:
        # Mask classification -> per-pixel class scores, as post_process_semantic_segmentation does:
        # sum over queries of p(class | query) * sigmoid(mask of query).
        out = model(pixel_values=pixels)
        classes = out.class_queries_logits.softmax(-1)[..., :-1]  # drop the "no object" class
        masks = out.masks_queries_logits.sigmoid()
        return torch.einsum("bqc,bqhw->bchw", classes, masks)

    def panoptic(pixels: torch.Tensor, size: tuple[int, int], thing_ids: set[int]):
        out = model(pixel_values=pixels)
        result = processor.post_process_panoptic_segmentation(
            out, target_sizes=[size], label_ids_to_fuse=set(range(num_classes)) - thing_ids
        )[0]
        segments = [
            {"id": s["id"], "category_id": s["label_id"], "isthing": s["label_id"] in thing_ids}
            for s in result["segments_info"]
        ]
        ids = result["segmentation"].long()
        ids[ids < 0] = 0  # transformers marks unassigned pixels -1; COCO panoptic calls them void (0)
        return ids, segments

    return Segmenter(label, model, num_classes, scores, False, mean, std, panoptic=panoptic, source=str(path))

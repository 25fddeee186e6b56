"""Hugging Face folders: SegFormer (semantic) and Mask2Former (semantic and panoptic).

Normalisation constants come from the folder's Pillow image processor
(``SegformerImageProcessorPil`` / ``Mask2FormerImageProcessorPil``); evaluation then runs
at the data's own resolution (whole image or sliding window) instead of the processor's
fixed resize, as the field's protocols do.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from segmerge.errors import SegmergeError
from segmerge.segmenters.base import IMAGENET_MEAN, IMAGENET_STD, Segmenter


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
        processor = processor_class.from_pretrained(path, local_files_only=True)
    else:
        processor = processor_class()
    mean = tuple(processor.image_mean or IMAGENET_MEAN)
    std = tuple(processor.image_std or IMAGENET_STD)
    return mean, std


def _segformer(path: Path, label: str) -> Segmenter:
    from transformers import SegformerForSemanticSegmentation, SegformerImageProcessorPil

    model = SegformerForSemanticSegmentation.from_pretrained(path, local_files_only=True)
    mean, std = _processor_stats(path, SegformerImageProcessorPil)

    return Segmenter(
        label,
        model,
        model.config.num_labels,
        lambda outputs: outputs.logits,
        True,
        mean,
        std,
        source=str(path),
        forward=lambda pixels: model(pixel_values=pixels),
    )


def _mask2former(path: Path, label: str) -> Segmenter:
    from transformers import Mask2FormerForUniversalSegmentation, Mask2FormerImageProcessorPil

    model = Mask2FormerForUniversalSegmentation.from_pretrained(path, local_files_only=True)
    processor = (
        Mask2FormerImageProcessorPil.from_pretrained(path, local_files_only=True)
        if (path / "preprocessor_config.json").is_file()
        else Mask2FormerImageProcessorPil()
    )
    mean = tuple(processor.image_mean or IMAGENET_MEAN)
    std = tuple(processor.image_std or IMAGENET_STD)
    num_classes = model.config.num_labels

    def scores(out) -> torch.Tensor:
        # Mask classification -> per-pixel class scores, as post_process_semantic_segmentation does:
        # sum over queries of p(class | query) * sigmoid(mask of query).
        classes = out.class_queries_logits.softmax(-1)[..., :-1]  # drop the "no object" class
        masks = out.masks_queries_logits.sigmoid()
        return torch.einsum("bqc,bqhw->bchw", classes, masks)

    def panoptic(out, index: int, size: tuple[int, int], thing_ids, classes=None):
        if classes is not None:
            raise SegmergeError(f"{path}: Mask2Former's panoptic output cannot group another model's classes")
        one = type(out)(
            class_queries_logits=out.class_queries_logits[index : index + 1],
            masks_queries_logits=out.masks_queries_logits[index : index + 1],
        )
        result = processor.post_process_panoptic_segmentation(
            one, target_sizes=[size], label_ids_to_fuse=set(range(num_classes)) - set(thing_ids)
        )[0]
        segments = [
            {"id": s["id"], "category_id": s["label_id"], "isthing": s["label_id"] in thing_ids}
            for s in result["segments_info"]
        ]
        ids = result["segmentation"].long()
        ids[ids < 0] = 0  # transformers marks unassigned pixels -1; COCO panoptic calls them void (0)
        return ids, segments

    return Segmenter(
        label,
        model,
        num_classes,
        scores,
        False,
        mean,
        std,
        panoptic_head=panoptic,
        source=str(path),
        forward=lambda pixels: model(pixel_values=pixels),
    )

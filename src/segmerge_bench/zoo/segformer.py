"""SegFormer: the tiny MiT encoder under SegFormer's all-MLP decoder, kept as a Hugging Face model.

It is ``transformers``' own ``SegformerForSemanticSegmentation``, so it is saved with
``save_pretrained`` (a folder users already know, with the legacy on-disk names
``segformer.encoder.*`` / ``decode_head.*``) and evaluated by the Hugging Face adapter in
``segmerge.segmenters.huggingface``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from segmerge_bench.zoo.mit import mit_config

ARCHITECTURE = "segformer"


def build_segformer(num_classes: int = 19, seed: int = 0, decoder_hidden_size: int = 64, **encoder):
    """A randomly initialised SegFormer; the same seed gives the same weights."""
    from transformers import SegformerForSemanticSegmentation

    torch.manual_seed(seed)
    return SegformerForSemanticSegmentation(mit_config(num_classes, decoder_hidden_size, **encoder))


def save_segformer(model, folder: str | Path) -> Path:
    folder = Path(folder)
    model.save_pretrained(folder)
    return folder


def load_segformer(folder: str | Path):
    from transformers import SegformerForSemanticSegmentation

    return SegformerForSemanticSegmentation.from_pretrained(folder, local_files_only=True)

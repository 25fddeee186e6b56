"""A tiny randomly initialised SegFormer (Hugging Face), for tests that need a real model folder.

Tests save it with ``save_pretrained`` to get the layout users hold; the weights are a
seeded initialisation, not a trained model: they exercise formats and inference, not accuracy.
"""

from __future__ import annotations

import os

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def tiny_segformer_config(num_labels: int = 19):
    from transformers import SegformerConfig

    return SegformerConfig(
        num_channels=3,
        num_encoder_blocks=4,
        depths=[1, 1, 1, 1],
        sr_ratios=[8, 4, 2, 1],
        hidden_sizes=[8, 16, 32, 64],
        num_attention_heads=[1, 1, 2, 4],
        mlp_ratios=[2, 2, 2, 2],
        decoder_hidden_size=32,
        num_labels=num_labels,
    )


def tiny_segformer(seed: int = 0, num_labels: int = 19):
    from transformers import SegformerForSemanticSegmentation

    torch.manual_seed(seed)
    return SegformerForSemanticSegmentation(tiny_segformer_config(num_labels)).eval()

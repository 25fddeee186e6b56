"""A family of tiny SegFormer checkpoints in the layouts users hold, for the demo and tests.

They mimic the situation the paper addresses: several models fine-tuned from one shared
pre-trained encoder, saved by different code bases:

* ``gta_daformer.pth`` and ``synthia_daformer.pth``: mmsegmentation layout
  (``{"state_dict", "meta"}``, encoder under ``backbone.``, head under ``decode_head.``);
* ``cityscapes_segformer/``: a Hugging Face folder (``segformer.`` / ``decode_head.`` names);
* ``cityscapes_segformer.safetensors``: the same weights as a bare safetensors file.

"Fine-tuning" here is a seeded perturbation of the shared start, not training: these
checkpoints exercise formats, key mapping and the merge rule, not accuracy.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from segmerge.checkpoints.key_order import heuristic_order

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ENCODER_PREFIX_HF = "segformer.encoder."
ENCODER_PREFIX_MMSEG = "backbone."


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


def fine_tuned(state: dict[str, torch.Tensor], seed: int, scale: float = 0.05) -> dict[str, torch.Tensor]:
    """The shared start plus a seeded perturbation proportional to each tensor's spread."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in state.items():
        if value.is_floating_point() and value.numel() > 1:
            noise = torch.randn(value.shape, generator=generator) * scale * (value.std() + 1e-3)
            out[key] = (value + noise).contiguous()
        else:
            out[key] = value.clone()
    return out


def to_mmseg(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {
        (ENCODER_PREFIX_MMSEG + k[len(ENCODER_PREFIX_HF) :] if k.startswith(ENCODER_PREFIX_HF) else k): v
        for k, v in state.items()
    }


def write_toy_checkpoints(folder: Path) -> dict[str, Path]:
    """Write the family into ``folder``; returns name -> path."""
    from safetensors.torch import load_file, save_file

    folder.mkdir(parents=True, exist_ok=True)
    model = tiny_segformer(seed=0)
    # The names as Hugging Face writes them to disk (which may differ from the in-memory
    # module names of the installed transformers) are the names users' files carry.
    paths: dict[str, Path] = {"cityscapes_segformer": folder / "cityscapes_segformer"}
    model.save_pretrained(paths["cityscapes_segformer"])
    weights = paths["cityscapes_segformer"] / "model.safetensors"
    # safetensors stores keys sorted by name; .pth files keep module order, so rebuild it.
    stored = load_file(weights)
    shared = {k: stored[k] for k in heuristic_order(list(stored))}
    for name, seed in (("gta_daformer", 1), ("synthia_daformer", 2)):
        meta = {"env_info": "segmerge toy", "seed": np.int64(seed), "iter": 40000, "CLASSES": ["road"] * 19}
        paths[name] = folder / f"{name}.pth"
        torch.save({"state_dict": to_mmseg(fine_tuned(shared, seed)), "meta": meta, "optimizer": {}}, paths[name])
    hf_state = fine_tuned(shared, 3)
    save_file(hf_state, weights, metadata={"format": "pt"})
    paths["cityscapes_segformer.safetensors"] = folder / "cityscapes_segformer.safetensors"
    save_file(hf_state, paths["cityscapes_segformer.safetensors"])
    return paths

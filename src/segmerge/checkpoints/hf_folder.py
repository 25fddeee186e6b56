"""Hugging Face model folders: ``config.json`` beside ``model.safetensors`` or
``pytorch_model.bin``, either possibly sharded with an ``*.index.json``."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

from segmerge.checkpoints.provenance import as_safetensors_metadata
from segmerge.checkpoints.pth import PthSource
from segmerge.checkpoints.safetensors_file import (
    SafetensorsSource,
    ShardedSafetensorsSource,
    write_safetensors,
)
from segmerge.errors import CheckpointError
from segmerge.merging.sources import TensorMeta

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
PROVENANCE_FILE = "segmerge_provenance.json"


def is_hf_folder(path: Path) -> bool:
    return path.is_dir() and any((path / name).is_file() for name in WEIGHT_FILES)


def weights_in(folder: Path) -> Path:
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise CheckpointError(
        f"{folder}: a folder, but not a Hugging Face model folder (none of {', '.join(WEIGHT_FILES)} in it)"
    )


class ShardedPthSource:
    def __init__(self, index_path: Path, trust_pickle: bool, label: str):
        self.path = index_path
        self.label = label
        try:
            weight_map = json.loads(index_path.read_text())["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{index_path}: not a weight index: {exc}") from None
        shards = {f: PthSource(index_path.parent / f, trust_pickle) for f in dict.fromkeys(weight_map.values())}
        self._where = {k: shards[f] for k, f in weight_map.items()}
        self._metas = {k: self._where[k].metas()[k] for k in weight_map}

    def metas(self) -> dict[str, TensorMeta]:
        return self._metas

    def get(self, key: str) -> torch.Tensor:
        return self._where[key].get(key)


def open_hf_folder(folder: Path, trust_pickle: bool, label: str):
    weights = weights_in(folder)
    name = weights.name
    if name == "model.safetensors":
        return SafetensorsSource(weights, label)
    if name == "model.safetensors.index.json":
        return ShardedSafetensorsSource(weights, label)
    if name == "pytorch_model.bin":
        return PthSource(weights, trust_pickle, label)
    return ShardedPthSource(weights, trust_pickle, label)


def hf_config(folder: Path) -> dict | None:
    config = folder / "config.json"
    if not config.is_file():
        return None
    try:
        return json.loads(config.read_text())
    except ValueError as exc:
        raise CheckpointError(f"{config}: not valid JSON: {exc}") from None


def write_hf_folder(
    folder: Path,
    template: Path | None,
    metas: Mapping[str, TensorMeta],
    tensors: Iterable[tuple[str, torch.Tensor]],
    provenance,
) -> None:
    """Write weights as ``model.safetensors``, the anchor's small files, and the provenance."""
    if template is not None:
        for item in sorted(template.iterdir()):
            if (
                item.is_file()
                and item.name not in WEIGHT_FILES
                and item.name != PROVENANCE_FILE
                and not _is_weight_shard(item)
            ):
                shutil.copyfile(item, folder / item.name)  # contents only: the permissions are the umask's
    as_metadata = lambda p: {"format": "pt", **as_safetensors_metadata(p)}  # noqa: E731
    write_safetensors(
        folder / "model.safetensors",
        metas,
        tensors,
        as_metadata(provenance.placeholder()),
        lambda: as_metadata(provenance.final()),
    )
    final = provenance.final()
    (folder / PROVENANCE_FILE).write_text(json.dumps(final, indent=2, sort_keys=True) + "\n")


def _is_weight_shard(path: Path) -> bool:
    return path.suffix in (".safetensors", ".bin", ".pth", ".pt") or path.name.endswith(".index.json")


def segformer_config(metas: Mapping[str, TensorMeta]) -> str:
    """A transformers SegFormer ``config.json`` for tensors in its layout, read off their shapes.

    Strides are MiT's (4, 2, 2, 2) and each stage has one attention head per 64 channels
    (MiT-B0..B5: 1, 2, 5, 8), neither of which the shapes record.
    """
    enc = "segformer.encoder."
    stages = sorted({int(k.split(".")[3]) for k in metas if k.startswith(enc + "patch_embeddings.")})
    proj = [metas[f"{enc}patch_embeddings.{s}.proj.weight"].shape for s in stages]
    hidden = [p[0] for p in proj]
    depths = [len({k.split(".")[4] for k in metas if k.startswith(f"{enc}block.{s}.")}) for s in stages]
    sr = [metas[k].shape[2] if (k := f"{enc}block.{s}.0.attention.self.sr.weight") in metas else 1 for s in stages]
    mlp = [metas[f"{enc}block.{s}.0.mlp.dense1.weight"].shape[0] // h for s, h in zip(stages, hidden, strict=True)]
    config = {
        "model_type": "segformer",
        "architectures": ["SegformerForSemanticSegmentation"],
        "num_channels": proj[0][1],
        "num_encoder_blocks": len(stages),
        "depths": depths,
        "sr_ratios": sr,
        "hidden_sizes": hidden,
        "patch_sizes": [p[2] for p in proj],
        "strides": [4, 2, 2, 2][: len(stages)],
        "num_attention_heads": [max(1, h // 64) for h in hidden],
        "mlp_ratios": mlp,
    }
    if "decode_head.classifier.weight" in metas:
        config["decoder_hidden_size"] = metas["decode_head.linear_c.0.proj.weight"].shape[0]
        config["num_labels"] = metas["decode_head.classifier.weight"].shape[0]
    return json.dumps(config, indent=2) + "\n"

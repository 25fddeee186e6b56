"""Checkpoint formats, read and written: the I/O edge of segmerge.

``open_checkpoint`` gives a lazily read :class:`Checkpoint` whatever the format;
``write_checkpoint`` writes merged tensors in the format the output path asks for, in the
anchor's layout, atomically. The merge maths never sees a file.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from segmerge.checkpoints.atomic import atomic_file, atomic_folder
from segmerge.checkpoints.hf_folder import (
    PROVENANCE_FILE,
    hf_config,
    is_hf_folder,
    open_hf_folder,
    write_hf_folder,
)
from segmerge.checkpoints.key_order import restore_order
from segmerge.checkpoints.provenance import (
    FixedProvenance,
    Provenance,
    as_safetensors_metadata,
    from_safetensors_metadata,
)
from segmerge.checkpoints.pth import PthSource, Unwrapped, gather, read_pth_provenance, write_pth
from segmerge.checkpoints.safetensors_file import (
    SafetensorsSource,
    ShardedSafetensorsSource,
    write_safetensors,
)
from segmerge.errors import CheckpointError
from segmerge.merging.networks import Network, find_networks, pick_network
from segmerge.merging.sources import TensorMeta

Format = Literal["pth", "safetensors", "hf-folder"]
PTH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


@dataclass
class Checkpoint:
    """A checkpoint opened for reading: tensors on demand, plus what its layout needs."""

    path: Path
    format: Format
    source: object  # a TensorSource
    order: str = "file"  # how the key order was found: forward (FAMILIES), file, key-names
    #: Which of several networks stored in the file to read (UDA training files): a role
    #: (student, teacher, imagenet), a prefix, or "all" for the whole file as one network.
    network: str | None = None

    def __post_init__(self):
        all_metas = self.source.metas()
        self.networks = find_networks(all_metas) if self.network != "all" else []
        self.prefix = ""
        if self.networks:
            try:
                self.prefix = pick_network(self.networks, self.network).prefix
            except ValueError as exc:
                raise CheckpointError(f"{self.path}: {exc}") from None
            all_metas = {k[len(self.prefix) :]: m for k, m in all_metas.items() if k.startswith(self.prefix)}
        elif self.network not in (None, "student", "all"):
            raise CheckpointError(
                f"{self.path}: holds one network, so --network {self.network} has nothing to choose; "
                "leave --network out for such files"
            )
        config = hf_config(self.path) if self.format == "hf-folder" else None
        self._metas, self.order = restore_order(all_metas, config)

    def peek(self, key: str, count: int) -> torch.Tensor:
        """At least the first ``count`` values of a tensor, flattened; cheap where the format allows."""
        peek = getattr(self.source, "peek", None)
        if peek is not None:
            return peek(self.prefix + key, count)
        return self.get(key).reshape(-1)[:count]

    @property
    def chosen_network(self) -> Network | None:
        return next((n for n in self.networks if n.prefix == self.prefix), None) if self.networks else None

    def other_keys(self) -> list[str]:
        """The file's keys outside the network read (the other networks of a UDA training file)."""
        return (
            [k for k in self.source.metas() if not (self.prefix and k.startswith(self.prefix))] if self.prefix else []
        )

    def raw_meta(self, key: str) -> TensorMeta:
        return self.source.metas()[key]

    def raw_get(self, key: str) -> torch.Tensor:
        return self.source.get(key)

    @property
    def label(self) -> str:
        return self.source.label

    def metas(self) -> dict[str, TensorMeta]:
        return self._metas

    def get(self, key: str) -> torch.Tensor:
        return self.source.get(self.prefix + key)

    def borrow(self, key: str) -> contextlib.AbstractContextManager[torch.Tensor]:
        """A tensor to read (not keep, not change) inside a ``with``: read in place where the
        format allows (memory-mapped ``.pth``), else a copy."""
        borrow = getattr(self.source, "borrow", None)
        if borrow is not None:
            return borrow(self.prefix + key)
        return contextlib.nullcontext(self.get(key))

    @property
    def pth_content(self) -> Unwrapped | None:
        return self.source.content if isinstance(self.source, PthSource) else None

    def provenance(self) -> dict | None:
        """What segmerge recorded in this file, if segmerge wrote it."""
        if self.format == "hf-folder" and (self.path / PROVENANCE_FILE).is_file():
            return json.loads((self.path / PROVENANCE_FILE).read_text())
        if isinstance(self.source, PthSource):
            return read_pth_provenance(self.source)
        metadata = getattr(self.source, "metadata", None)
        return from_safetensors_metadata(metadata) if metadata else None

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: self.get(k) for k in self._metas}


def open_checkpoint(path: str | Path, trust_pickle: bool = False, network: str | None = None) -> Checkpoint:
    """Open any supported checkpoint without reading its tensors yet.

    A file holding one network several times (a UDA training file: student, EMA teacher,
    ImageNet model) is read as the one ``network`` names: by default the student.
    """
    return _open(Path(path), trust_pickle, network)


def _open(path: Path, trust_pickle: bool, network: str | None) -> Checkpoint:
    label = str(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder")
    if path.is_dir():
        if not is_hf_folder(path):
            raise CheckpointError(
                f"{path}: a folder without model weights; a Hugging Face folder holds config.json and "
                "model.safetensors or pytorch_model.bin"
            )
        return Checkpoint(path, "hf-folder", open_hf_folder(path, trust_pickle, label), network=network)
    name = path.name
    if name.endswith(".safetensors"):
        return Checkpoint(path, "safetensors", SafetensorsSource(path, label), network=network)
    if name.endswith(".safetensors.index.json"):
        return Checkpoint(path, "safetensors", ShardedSafetensorsSource(path, label), network=network)
    if name.endswith(".index.json"):
        return Checkpoint(path, "pth", open_hf_folder(path.parent, trust_pickle, label), network=network)
    if path.suffix in PTH_SUFFIXES:
        return Checkpoint(path, "pth", PthSource(path, trust_pickle, label), network=network)
    raise CheckpointError(
        f"{path}: unknown checkpoint type; expected .pth/.pt/.bin/.ckpt, .safetensors "
        "(or its .index.json), or a Hugging Face model folder"
    )


def load_checkpoint(
    path: str | Path, trust_pickle: bool = False, network: str | None = None
) -> dict[str, torch.Tensor]:
    """The whole state dict of a checkpoint (of its student, for a UDA training file), unwrapped,
    in module order."""
    return open_checkpoint(path, trust_pickle, network).state_dict()


def output_format(path: Path) -> Format:
    if path.name.endswith(".safetensors"):
        return "safetensors"
    if path.suffix in PTH_SUFFIXES:
        return "pth"
    if path.suffix == "" or path.is_dir():
        return "hf-folder"
    raise CheckpointError(
        f"{path}: cannot tell the output format from the name; use .pth/.pt/.bin, .safetensors, "
        "or a folder name (no suffix) for a Hugging Face folder"
    )


def write_checkpoint(
    path: str | Path,
    metas: Mapping[str, TensorMeta],
    tensors: Iterable[tuple[str, torch.Tensor]],
    provenance: Provenance | FixedProvenance | Mapping,
    template: Checkpoint | None = None,
    overwrite: bool = False,
    extra_files: Mapping[str, Callable[[], str]] | None = None,
) -> Path:
    """Write tensors (given in ``metas`` order) as the path's format, atomically. ``extra_files``
    (name -> a function giving its text; folders only) join a folder's files where the template
    brings none of that name (the function is called only then)."""
    if isinstance(provenance, Mapping):
        provenance = FixedProvenance(provenance)
    path = Path(path)
    if path.exists() and not overwrite:
        raise CheckpointError(f"{path}: already exists; pass --overwrite (overwrite=True) to replace it")
    kind = output_format(path)
    if kind == "hf-folder":
        if path.exists() and not path.is_dir():
            raise CheckpointError(f"{path}: is a file, but the output was meant to be a folder")
        folder_template = template.path if template is not None and template.format == "hf-folder" else None
        with atomic_folder(path) as tmp:
            write_hf_folder(tmp, folder_template, metas, tensors, provenance)
            for name, text in (extra_files or {}).items():
                if not (tmp / name).exists():
                    (tmp / name).write_text(text())
        return path
    if extra_files:
        raise CheckpointError(f"{path}: files beside the weights ({', '.join(extra_files)}) need a folder output")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder; give a file name for a {kind} output")
    with atomic_file(path) as tmp:
        if kind == "safetensors":
            as_metadata = lambda p: {"format": "pt", **as_safetensors_metadata(p)}  # noqa: E731
            write_safetensors(
                tmp,
                metas,
                tensors,
                as_metadata(provenance.placeholder()),
                lambda: as_metadata(provenance.final()),
            )
        else:
            state = gather(tensors)  # merged first, so input hashing overlaps the merge
            write_pth(tmp, state.items(), template.pth_content if template else None, provenance.final())
    return path


def save_checkpoint(
    state_dict: Mapping[str, torch.Tensor],
    path: str | Path,
    provenance: Mapping | None = None,
    template: Checkpoint | None = None,
    overwrite: bool = False,
) -> Path:
    """Write an in-memory state dict in the format ``path`` asks for."""
    from segmerge.checkpoints.provenance import make_provenance

    metas = {k: TensorMeta.of(v) for k, v in state_dict.items()}
    provenance = provenance or make_provenance("", [], None)
    return write_checkpoint(path, metas, state_dict.items(), provenance, template, overwrite)


__all__ = [
    "Checkpoint",
    "load_checkpoint",
    "open_checkpoint",
    "output_format",
    "save_checkpoint",
    "write_checkpoint",
]

"""segmerge's own models: the benchmark's DAFormer-style ``.pth`` checkpoints.

Such a file says which network it holds in ``meta["segmerge_model"]`` (written by
``segmerge.zoo.daformer.save_daformer`` and kept by a merge anchored on it), so it can be
rebuilt without user code. The file is read through ``open_checkpoint``, i.e. with safe
unpickling only. The benchmark's SegFormer models are Hugging Face folders, which the
Hugging Face adapter loads; any other checkpoint needs ``--model FILE.py:function``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from segmerge.errors import SegmergeError
from segmerge.segmenters.base import Segmenter


def from_builtin_checkpoint(path: Path, label: str) -> Segmenter:
    from segmerge.checkpoints import open_checkpoint
    from segmerge.zoo.daformer import META_KEY, daformer_from_state

    path = Path(path)
    if not path.exists():
        raise SegmergeError(f"{path}: no such file or folder")
    spec = None
    if path.is_file() and path.suffix in (".pth", ".pt", ".bin", ".ckpt"):
        checkpoint = open_checkpoint(path)
        content = checkpoint.pth_content
        spec = (content.meta or {}).get(META_KEY) if content is not None else None
    if not isinstance(spec, Mapping):
        raise SegmergeError(
            f"{path}: segmerge cannot tell which network this checkpoint belongs to; pass a Hugging Face "
            "folder (config.json + weights) or --model FILE.py:function that builds the network from it"
        )
    module = daformer_from_state(checkpoint.state_dict(), spec, str(path))

    def scores(pixels: torch.Tensor) -> torch.Tensor:
        return module(pixels)

    return Segmenter(label, module, module.num_classes, scores, True, source=str(path))

"""segmerge's own models (the benchmark's SegFormer and DAFormer-style networks).

The benchmark issue adds them; until then a checkpoint that is not a Hugging Face folder
needs ``--model FILE.py:function``.
"""

from __future__ import annotations

from pathlib import Path

from segmerge.errors import SegmergeError
from segmerge.segmenters.base import Segmenter


def from_builtin_checkpoint(path: Path, label: str) -> Segmenter:
    if not path.exists():
        raise SegmergeError(f"{path}: no such file or folder")
    raise SegmergeError(
        f"{path}: segmerge cannot tell which network this checkpoint belongs to; pass a Hugging Face "
        "folder (config.json + weights) or --model FILE.py:function that builds the network from it"
    )

"""Where the benchmark trains and scores: a device the user names, checked the same way everywhere.

:func:`parsed_device` checks only the name (what a frozen settings record can check when it
is made); :func:`usable_device` also checks that this machine has the device, and is called
before any work: by ``segmerge bench`` before it touches its folder, and by every training
loop before its first step.
"""

from __future__ import annotations

import torch

from segmerge.errors import SegmergeError
from segmerge.evaluation.prediction import check_device

TRAINING_DEVICES = ("cpu", "cuda", "mps")


def parsed_device(value: str, what: str = "device") -> torch.device:
    """``value`` as a torch device of a kind the benchmark trains on (``what`` names it in errors)."""
    try:
        device = torch.device(value)
    except (RuntimeError, TypeError):
        raise SegmergeError(f"{what} {value!r} is not a device; use cpu, cuda or cuda:N") from None
    if device.type not in TRAINING_DEVICES:
        raise SegmergeError(f"{what} {value!r}: the benchmark trains on {', '.join(TRAINING_DEVICES)}")
    return device


def usable_device(value: str, what: str = "device") -> torch.device:
    """:func:`parsed_device`, and one this machine has (a CUDA build that sees that GPU)."""
    device = parsed_device(value, what)
    check_device(value)
    count = torch.cuda.device_count() if device.type == "cuda" else 0
    if device.type == "cuda" and device.index is not None and device.index >= count:
        raise SegmergeError(f"{what} {value!r}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    return device

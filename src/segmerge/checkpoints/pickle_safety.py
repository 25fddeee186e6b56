"""Loading ``.pth`` files without running code from them.

``torch.load(weights_only=True)`` refuses every global that is not a tensor type. Two
kinds of harmless globals are common in this field's checkpoints, and are let in here
without unpickling anything else:

* numpy arrays, scalars and dtypes in mmsegmentation/mmengine ``meta`` (allow-listed);
* OpenMMLab bookkeeping classes (``mmengine.*``, ``mmcv.*``, ``mmseg.*``, ...) such as
  ``mmengine.logging.HistoryBuffer`` in ``message_hub``: they are rebuilt as inert
  :class:`OpaqueObject` records that hold their state and run none of their code.

Any other global (``os.system``, ``builtins.eval``, a user's class) is refused with an
:class:`UnsafeCheckpointError`; ``trust_pickle=True`` (CLI ``--trust-pickle``) lifts the
check for files the user trusts, and is documented as dangerous.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segmerge.errors import CheckpointError, UnsafeCheckpointError

#: Module prefixes whose classes are OpenMMLab metadata, rebuilt as inert records.
OPAQUE_PREFIXES = ("mmengine.", "mmcv.", "mmseg.", "mmdet.", "mmpretrain.", "mmcls.")


class OpaqueObject:
    """Stand-in for a metadata object of a class segmerge will not import."""

    def __init__(self, *args: Any, **kwargs: Any):
        self.args = args
        self.kwargs = kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return "<opaque object>"


def opaque_getattr(obj: Any, name: Any) -> OpaqueObject:
    """Stands in for ``builtins.getattr`` in pickles: returns a record, looks nothing up.

    Pickle protocol 2 (``torch.save``'s) names a function defined in a class body, such as a
    statistics method of mmengine's ``HistoryBuffer``, as ``getattr(TheClass, "name")``.
    The file's runtime state needs no such function to be merged.
    """
    return OpaqueObject(obj, name)


#: Globals unpickled as inert stand-ins, by name.
STAND_INS = {"builtins.getattr": opaque_getattr}


def _numpy_globals() -> list:
    core = np._core if hasattr(np, "_core") else np.core
    out: list = [np.ndarray, np.dtype, core.multiarray._reconstruct, core.multiarray.scalar]
    # numpy 1.x pickles name numpy.core.*, numpy 2.x numpy._core.*: accept both spellings.
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out.append((core.multiarray._reconstruct, f"{mod}._reconstruct"))
        out.append((core.multiarray.scalar, f"{mod}.scalar"))
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        out += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")]
    return out


def load_pth(path: Path, trust_pickle: bool = False, mmap: bool = True) -> tuple[Any, bool]:
    """``torch.load`` a file safely; returns the object and whether it is memory-mapped."""
    if trust_pickle:
        return _load(path, weights_only=False, mmap=mmap, extra=[])
    extra: list = _numpy_globals()
    try:
        return _load(path, weights_only=True, mmap=mmap, extra=extra)
    except pickle.UnpicklingError as exc:
        unsafe = _unsafe_globals(path, extra)
        if not unsafe:
            raise CheckpointError(f"{path}: {unreadable(path, _first_line(exc))}") from None
        refused = [g for g in unsafe if not g.startswith(OPAQUE_PREFIXES) and g not in STAND_INS]
        if refused:
            raise UnsafeCheckpointError(
                f"{path}: loading it would import {', '.join(refused[:5])} and could run code "
                "from the file; segmerge refuses. If you trust the file's origin, pass "
                "--trust-pickle (trust_pickle=True)"
            ) from None
        extra += [(STAND_INS.get(name, OpaqueObject), name) for name in unsafe]
        return _load(path, weights_only=True, mmap=mmap, extra=extra)


def _load(path: Path, weights_only: bool, mmap: bool, extra: list) -> tuple[Any, bool]:
    with torch.serialization.safe_globals(extra):
        if mmap:
            try:
                return torch.load(path, map_location="cpu", weights_only=weights_only, mmap=True), True
            except RuntimeError as exc:
                if "mmap" not in str(exc):  # legacy (non-zip) files cannot be mapped
                    raise
        return torch.load(path, map_location="cpu", weights_only=weights_only), False


def _unsafe_globals(path: Path, allowed: list) -> list[str]:
    """The globals the file names that are neither torch's safe ones nor in ``allowed``."""
    try:
        with torch.serialization.safe_globals(allowed):
            return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # legacy format: the globals cannot be listed
        return []


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


_DROPPED = object()


def unreadable(path: Path, torch_says: str) -> str:
    """Why ``torch.load`` could not read ``path``, said as what the file is and what to do."""
    try:
        with open(path, "rb") as f:
            start = f.read(64)
        size = path.stat().st_size
    except OSError as exc:
        return f"cannot read: {exc.strerror}"
    if not start:
        return "is empty (0 bytes); copy or download it again"
    torch_says = torch_says.split(". ")[0].rstrip(".")
    if start.startswith(b"PK\x03\x04") or start[:1] == b"\x80":  # torch.save's zip archive, or a legacy pickle
        return (
            f"a PyTorch checkpoint that torch.load(weights_only=True) cannot read ({size} bytes; torch says: "
            f"{torch_says}): truncated or damaged? copy or download it again"
        )
    if len(start) >= 9 and start[8:9] in (b"{", b" ") and int.from_bytes(start[:8], "little") < size:
        return "is a safetensors file, not a PyTorch pickle: rename it to .safetensors"
    if start.startswith(b"version https://git-lfs"):
        return "is a Git LFS pointer, not the weights: run `git lfs pull` in its repository, or download the file"
    if start.lstrip().lower().startswith((b"<!doctype html", b"<html")):
        return "is an HTML page (a failed or login-walled download?), not a checkpoint; download the file itself"
    if all(32 <= b < 127 or b in b"\t\r\n" for b in start):
        return (
            f"is a text file (it starts with {start[:24].decode()!r}), not a PyTorch checkpoint; give the file "
            "torch.save wrote"
        )
    return (
        "not a PyTorch checkpoint: neither the zip archive nor the pickle torch.save writes "
        f"(torch says: {torch_says}); give the file torch.save wrote"
    )


def plain_data(obj: Any) -> Any:
    """Metadata with inert records dropped (and nothing else: ``None`` values stay), so it can be
    written back and re-read safely."""
    out = _plain(obj)
    return None if out is _DROPPED else out


def _plain(obj: Any) -> Any:
    if isinstance(obj, OpaqueObject):
        return _DROPPED
    if isinstance(obj, dict):
        return {k: v for k, v in ((k, _plain(v)) for k, v in obj.items()) if v is not _DROPPED}
    if isinstance(obj, list | tuple):
        items = [v for v in (_plain(v) for v in obj) if v is not _DROPPED]
        return type(obj)(items) if type(obj) in (list, tuple) else obj
    return obj

"""The benchmark's cache: rendered data and trained checkpoints, keyed by what made them.

A rerun of ``segmerge bench`` with the same ``--out`` reuses every artefact whose key
matches (same domain, sizes, seed and training settings, same segmerge version of the
training code) and recomputes the rest; merges and scores are cheap and always redone.
Artefacts are written to a temporary sibling and renamed into place, so an interrupted run
never leaves a half-written checkpoint that a later run would trust; a temporary sibling whose
writer was killed outright (and so could not remove it) is removed by the next write to that
folder.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

import torch

from segmerge_bench.training import TrainingData

CACHE_VERSION = 1
"""Bump when training or rendering code changes what an artefact holds."""


def remove_path(path: Path) -> None:
    """Delete a checkpoint whichever its layout: a folder (Hugging Face) or a file; nothing if absent."""
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def cache_key(**fields) -> str:
    """A short stable hash of JSON-able ``fields``."""
    text = json.dumps({"version": CACHE_VERSION, **fields}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


_WRITER = socket.gethostname().replace("-", "_") or "host"
"""What a temporary file's name says of the machine writing it, beside the process id."""


def remove_orphans(folder: Path) -> None:
    """Remove the temporary files in ``folder`` that a process of this machine was writing and is
    gone: what a worker killed with SIGKILL (or with its run) left. Those of live processes
    (another run writing into the same cache) stay, and so do those of other machines sharing the
    folder, whose processes this one cannot see."""
    for temporary in folder.glob(f".*.partial-{glob.escape(_WRITER)}-*"):
        pid = temporary.name.rpartition("-")[2]
        if pid.isdigit() and not _alive(int(pid)):
            remove_path(temporary)


def _alive(pid: int) -> bool:
    if pid == os.getpid() or os.name != "posix":
        return True  # on Windows, os.kill(pid, 0) would send the process a Ctrl-C
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # another user's process, or a platform that cannot tell: leave its file
    return True


class ArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.hits = 0
        self.misses = 0

    def path(self, kind: str, name: str, key: str, suffix: str = "") -> Path:
        return self.root / kind / f"{name}-{key}{suffix}"

    def produce(self, path: Path, make: Callable[[Path], object], count: bool = True) -> Path:
        """``path`` if it exists, else ``make(temporary)`` renamed to ``path``. ``count``: in the
        hit and miss counts (not for the by-products of another artefact, such as snapshots)."""
        if path.exists():
            self.hits += count
            return path
        self.misses += count
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_orphans(path.parent)
        temporary = path.with_name(f".{path.name}.partial-{_WRITER}-{os.getpid()}")
        remove_path(temporary)
        try:
            make(temporary)
            os.replace(temporary, path)
        finally:
            remove_path(temporary)
        return path

    def data(self, name: str, key: str, render: Callable[[], TrainingData]) -> TrainingData:
        """Rendered images (and labels, instances) as one tensor file, reloaded on later runs."""
        path = self.path("data", name, key, ".pt")

        def make(temporary: Path) -> None:
            data = render()
            content = {"images": data.images, "labels": data.labels, "name": data.name, "instances": data.instances}
            torch.save(content, temporary)

        self.produce(path, make)
        content = torch.load(path, map_location="cpu", weights_only=True)
        return TrainingData(content["images"], content["labels"], content["name"], content.get("instances"))

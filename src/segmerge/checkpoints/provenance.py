"""What an output records about how it was made: segmerge version, recipe, input hashes."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from segmerge._version import __version__

CHUNK = 8 * 1024 * 1024


def sha256_of(path: Path) -> str:
    """Hash of a file, or of a folder's files (names and bytes, in name order); remembered in the
    hash cache (:func:`hash_cache_file`) by path, size, modification time and inode, so merging the
    same inputs again does not read them twice."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    key = _cache_key(path, files)
    cached = _read_cache().get(key) if key else None
    if cached:
        return cached
    digest = hashlib.sha256()
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
    if key:
        _remember(key, digest.hexdigest())
    return digest.hexdigest()


HASH_CACHE_ENTRIES = 2000


def hash_cache_file() -> Path | None:
    """Where input hashes are remembered: ``$SEGMERGE_HASH_CACHE`` (a file path; ``off`` disables
    it), else ``$XDG_CACHE_HOME/segmerge/sha256.json``, else ``~/.cache/segmerge/sha256.json``."""
    setting = os.environ.get("SEGMERGE_HASH_CACHE")
    if setting is not None:
        return None if setting.strip().lower() in ("", "0", "off", "no") else Path(setting)
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "segmerge" / "sha256.json"


def _cache_key(path: Path, files: list[Path]) -> str | None:
    # A file that changes changes its size or its modification time (nanoseconds) or, when it is
    # replaced, its inode; for a folder every file's are part of the key.
    try:
        stats = [(str(f.relative_to(path)) if path.is_dir() else "", f.stat()) for f in files]
    except OSError:
        return None
    parts = [str(path.resolve())] + [f"{n}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}" for n, st in stats]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def _read_cache() -> dict[str, str]:
    file = hash_cache_file()
    if file is None or not file.is_file():
        return {}
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError):  # a damaged cache is only a cache: hash again
        return {}
    return data if isinstance(data, dict) else {}


def _remember(key: str, digest: str) -> None:
    file = hash_cache_file()
    if file is None:
        return
    entries = _read_cache()
    entries.pop(key, None)
    entries[key] = digest
    entries = dict(list(entries.items())[-HASH_CACHE_ENTRIES:])
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        temporary = file.with_name(f".{file.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(entries))
        os.replace(temporary, file)  # whole or not at all, whoever writes last
    except OSError:  # a read-only home: no cache, same hashes
        pass


class Hasher:
    """Hashes inputs on a background thread (hashlib releases the GIL) while the merge runs."""

    def __init__(self, paths: list[Path]):
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._futures: list[Future] = [self._pool.submit(sha256_of, p) for p in paths]

    def result(self) -> list[str]:
        try:
            return [f.result() for f in self._futures]
        finally:
            self._pool.shutdown()


class Provenance:
    """Provenance whose input hashes may still be computing.

    ``placeholder()`` has the final layout and size (hashes are fixed-length), so a
    writer can lay out a header first and fill in ``final()`` once the data is written.
    """

    def __init__(self, recipe_yaml: str, inputs: list[tuple[str, Path]], base: tuple[str, Path] | None = None):
        self._recipe = recipe_yaml
        self._names = [name for name, _ in inputs]
        self._base = base[0] if base else None
        self._hasher = Hasher([p for _, p in inputs] + ([base[1]] if base else []))

    def placeholder(self) -> dict:
        return self._build(["0" * 64] * (len(self._names) + (1 if self._base else 0)))

    def final(self) -> dict:
        return self._build(self._hasher.result())

    def _build(self, hashes: list[str]) -> dict:
        base = (self._base, hashes[-1]) if self._base else None
        return make_provenance(self._recipe, list(zip(self._names, hashes, strict=False)), base)


class FixedProvenance:
    def __init__(self, provenance: Mapping):
        self._value = dict(provenance)

    def placeholder(self) -> dict:
        return self._value

    def final(self) -> dict:
        return self._value


def make_provenance(recipe_yaml: str, inputs: list[tuple[str, str]], base: tuple[str, str] | None) -> dict:
    out = {
        "segmerge_version": __version__,
        "recipe": recipe_yaml,
        "inputs": [{"path": p, "sha256": h} for p, h in inputs],
    }
    if base is not None:
        out["base"] = {"path": base[0], "sha256": base[1]}
    return out


def as_safetensors_metadata(provenance: Mapping) -> dict[str, str]:
    """safetensors metadata holds strings only."""
    return {
        "segmerge_version": provenance["segmerge_version"],
        "segmerge_recipe": provenance["recipe"],
        "segmerge_inputs": json.dumps(provenance["inputs"], sort_keys=True),
        **({"segmerge_base": json.dumps(provenance["base"], sort_keys=True)} if "base" in provenance else {}),
    }


def from_safetensors_metadata(metadata: Mapping[str, str]) -> dict | None:
    if "segmerge_recipe" not in metadata:
        return None
    out = {
        "segmerge_version": metadata.get("segmerge_version"),
        "recipe": metadata["segmerge_recipe"],
        "inputs": json.loads(metadata.get("segmerge_inputs", "[]")),
    }
    if "segmerge_base" in metadata:
        out["base"] = json.loads(metadata["segmerge_base"])
    return out

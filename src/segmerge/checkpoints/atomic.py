"""Writing outputs all-or-nothing: into a temporary sibling, then renamed into place.

The temporaries are created the way a plain ``open()`` or ``mkdir()`` creates a file or a
folder (mode 0o666 or 0o777, less the process's umask), not with :mod:`tempfile`'s private
0o600/0o700, so that what is renamed into place has the permissions the user expects:
readable by colleagues under a umask of 022, private under 077. A file that replaces an
existing one keeps that file's permission bits, as writing over it in place would.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

from segmerge.errors import SegmergeError

_ATTEMPTS = 100


def temporary_sibling(path: Path, suffix: str, folder: bool = False) -> Path:
    """Create an empty file (or folder) named ``.NAME.RANDOM{suffix}`` beside ``path``, with the
    permissions ``open()`` (``mkdir()``) gives under the current umask; return its path."""
    path = Path(path)
    for _ in range(_ATTEMPTS):
        candidate = path.with_name(f".{path.name}.{secrets.token_hex(4)}{suffix}")
        try:
            if folder:
                os.mkdir(candidate, 0o777)
            else:
                os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"{path.parent}: could not create a temporary name beside {path.name}")


def remove(path: Path) -> None:
    """Delete a file or a folder tree; nothing if absent."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = temporary_sibling(path, ".tmp")
    try:
        if path.is_file():  # writing over a file in place keeps its permissions: so does replacing it
            os.chmod(tmp_path, stat.S_IMODE(path.stat().st_mode))
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_folder(path: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it takes ``path``'s place whole
    (an existing ``path`` is moved aside first and deleted after the swap)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = temporary_sibling(path, ".tmp", folder=True)
    try:
        yield tmp_path
        if path.exists() or path.is_symlink():
            old = temporary_sibling(path, ".old", folder=True)
            os.replace(path, old / path.name)
            os.replace(tmp_path, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            shutil.rmtree(tmp_path, ignore_errors=True)


# --- folders a command writes -------------------------------------------------------------------

#: The file a command leaves in each folder it writes (``eval --out``, ``tune --report``,
#: ``bench --out``, ``demo --out``), naming the command: its next run may replace the folder,
#: while a non-empty folder without it is refused unless ``--overwrite``.
MARKER = ".segmerge-output.json"


def folder_owner(path: Path) -> str | None:
    """The command that wrote ``path`` (``"eval"``, ...), or None (absent, foreign, unreadable marker)."""
    try:
        return json.loads((Path(path) / MARKER).read_text(encoding="utf-8")).get("command")
    except (OSError, ValueError, AttributeError):
        return None


def claim_folder(path: Path, command: str, overwrite: bool, flag: str = "--overwrite") -> str:
    """Check, before any work, that ``command`` may write the folder ``path``; returns its state:
    ``"new"`` (absent or empty), ``"own"`` (a folder ``command`` wrote before) or ``"foreign"``
    (any other non-empty folder, allowed only with ``overwrite``)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise SegmergeError(f"{path}: exists and is not a folder; choose a folder for the output")
    if not path.exists() or not any(path.iterdir()):
        return "new"
    if folder_owner(path) == command:
        return "own"
    if not overwrite:
        raise SegmergeError(
            f"{path}: a folder that is not empty and was not written by segmerge {command}; pass {flag} to replace "
            "it whole, or choose another folder"
        )
    return "foreign"


def mark_folder(path: Path, command: str) -> None:
    from segmerge._version import __version__

    text = json.dumps({"command": command, "written_by": f"segmerge {__version__}"}) + "\n"
    (Path(path) / MARKER).write_text(text, encoding="utf-8")


@contextlib.contextmanager
def fresh_folder(path: Path, command: str, overwrite: bool, flag: str = "--overwrite") -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path`` to write ``command``'s output into; on
    success it replaces ``path`` whole, so the folder never holds two runs. Refuses (before
    yielding) a non-empty folder ``command`` did not write, unless ``overwrite``."""
    claim_folder(path, command, overwrite, flag)
    with atomic_folder(Path(path)) as tmp:
        mark_folder(tmp, command)
        yield tmp

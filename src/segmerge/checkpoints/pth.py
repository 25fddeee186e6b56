"""PyTorch pickle checkpoints (``.pth``, ``.pt``, ``.bin``), as the field writes them.

A plain state dict; mmsegmentation/mmengine's ``{state_dict, meta, optimizer, ...}``;
a state dict nested under ``model``/``state_dict``; keys prefixed by ``module.``
(DataParallel). The file is memory-mapped, each tensor copied out when the merge asks
for it and its pages handed back to the kernel, so reading M models costs about one
tensor per model, not M models.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import mmap as mmap_module
import pickle
import sys
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from segmerge.checkpoints.pickle_safety import load_pth, plain_data, unreadable
from segmerge.errors import CheckpointError
from segmerge.merging.sources import TensorMeta

WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "module", "net")
DATA_PARALLEL_PREFIX = "module."


@dataclass
class Unwrapped:
    tensors: dict[str, torch.Tensor]
    #: The keys the state dict sat under, outermost first (``[]`` for a plain state dict).
    wrappers: list[str] = field(default_factory=list)
    meta: dict | None = None
    stripped_prefix: str = ""
    skipped: list[str] = field(default_factory=list)
    state_metadata: dict | None = None


def unwrap(obj: Any, path: Path) -> Unwrapped:
    """Find the state dict inside whatever the file holds."""
    wrappers: list[str] = []
    meta = None
    while isinstance(obj, Mapping) and not _is_state_dict(obj):
        key = next((k for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if key is None:
            break
        if meta is None and isinstance(obj.get("meta"), Mapping):
            meta = plain_data(dict(obj["meta"]))
        wrappers.append(key)
        obj = obj[key]
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{path}: holds a {type(obj).__name__}, not a state dict; save model.state_dict() instead"
        )
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(
            f"{path}: no tensors found (top-level keys: {', '.join(map(str, list(obj)[:8]))}); "
            f"segmerge looks for a state dict, possibly under {' / '.join(WRAPPER_KEYS)}"
        )
    skipped = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    prefix = ""
    if all(k.startswith(DATA_PARALLEL_PREFIX) for k in tensors):
        prefix = DATA_PARALLEL_PREFIX
        tensors = {k[len(prefix) :]: v for k, v in tensors.items()}
    state_metadata = getattr(obj, "_metadata", None)
    return Unwrapped(tensors, wrappers, meta, prefix, skipped, dict(state_metadata) if state_metadata else None)


def _is_state_dict(obj: Mapping) -> bool:
    return bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


class PthSource:
    def __init__(self, path: Path, trust_pickle: bool = False, label: str | None = None):
        self.path = Path(path)
        self.label = label or str(path)
        obj, self._mapped = _load(self.path, trust_pickle)
        if self._mapped:
            check_storage_records(self.path)
        self.content = unwrap(obj, self.path)
        self._metas = {k: TensorMeta.of(v) for k, v in self.content.tensors.items()}
        self._bounds = _mapped_bounds(self.content.tensors.values()) if self._mapped else None
        self._run = (0, 0)  # pages read and not yet handed back: one address range

    def metas(self) -> dict[str, TensorMeta]:
        return self._metas

    def get(self, key: str) -> torch.Tensor:
        tensor = self.content.tensors[key]
        copy = tensor.clone()
        self._release(tensor)
        return copy

    @contextlib.contextmanager
    def borrow(self, key: str) -> Iterator[torch.Tensor]:
        """The tensor itself, read in place (no copy), for reading only and only inside the
        ``with``; its pages are handed back to the kernel on leaving it, as :meth:`get` does."""
        tensor = self.content.tensors[key]
        try:
            yield tensor
        finally:
            self._release(tensor)

    def _release(self, tensor: torch.Tensor) -> None:
        """Hand a read tensor's pages back, gathered into runs of :data:`RELEASE_RUN` bytes: one
        ``madvise`` per run rather than per tensor (a DAFormer file holds ~1100 tensors), and
        neighbours' pages mapped by fault-around go with the run instead of being released and
        faulted in again tensor by tensor. At most one run per input stays mapped."""
        if not self._mapped:
            return
        storage = tensor.untyped_storage()
        start, end = storage.data_ptr(), storage.data_ptr() + storage.nbytes()
        if start == end:
            return
        low, high = self._run
        if high and (start > high + RELEASE_RUN or end < low - RELEASE_RUN):  # elsewhere in the file
            release_span(low, high, FAULT_AROUND, self._bounds)
            low = high = 0
        low, high = (start, end) if not high else (min(low, start), max(high, end))
        if high - low >= RELEASE_RUN:
            release_span(low, high, FAULT_AROUND, self._bounds)
            low = high = 0
        self._run = (low, high)

    def peek(self, key: str, count: int) -> torch.Tensor:
        """The first ``count`` values of a tensor (flattened), read without copying the rest."""
        return self.content.tensors[key].reshape(-1)[:count].clone()


def _mapped_bounds(tensors) -> tuple[int, int] | None:
    """The address range the file's tensors span inside its memory map."""
    spans = [(s.data_ptr(), s.data_ptr() + s.nbytes()) for s in (t.untyped_storage() for t in tensors) if s.nbytes()]
    return (min(a for a, _ in spans), max(b for _, b in spans)) if spans else None


def _load(path: Path, trust_pickle: bool):
    try:
        return load_pth(path, trust_pickle=trust_pickle)
    except CheckpointError:
        raise
    except ImportError as exc:  # --trust-pickle: the file names a class of a package not installed
        raise CheckpointError(
            f"{path}: unpickling it needs the module {exc.name or str(exc)!r}, which is not installed "
            "(--trust-pickle imports every class the file names). Without --trust-pickle segmerge reads "
            "OpenMMLab (mmengine/mmcv/mmseg) files without those packages"
        ) from None
    except Exception as exc:  # torch reports truncation and foreign files in many ways
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: {unreadable(path, text)}") from None


def check_storage_records(path: Path) -> None:
    """Refuse what ``torch.load`` refuses when it reads a zip checkpoint into memory, and skips
    when it memory-maps one: tensor data records that are missing, of another size than the
    pickle's tensors need, behind a damaged local zip header, or running past the file's end.
    Reads the pickle (not the tensors) and the zip directory, so it costs no pass over the data.
    """
    try:
        reader = torch._C.PyTorchFileReader(str(path))
        storages = storage_sizes(reader.get_record("data.pkl"))
    except Exception:  # torch.load read it a moment ago; a layout this cannot follow is left to it
        return
    size = path.stat().st_size
    with open(path, "rb") as f:
        for key, needed in storages.items():
            name = f"data/{key}"
            if not reader.has_record(name):
                raise CheckpointError(f"{path}: the tensor data record {name} is missing; the file is damaged")
            held = reader.get_record_size(name)
            if held != needed:
                raise CheckpointError(
                    f"{path}: the tensor data record {name} holds {held} bytes, but its tensor needs {needed}; "
                    "the file is damaged"
                )
            if not held:  # torch.load reads nothing of an empty record, header included
                continue
            f.seek(reader.get_record_header_offset(name))
            if f.read(4) != b"PK\x03\x04":
                raise CheckpointError(f"{path}: the zip header of the tensor data record {name} is damaged")
            if reader.get_record_offset(name) + held > size:
                raise CheckpointError(f"{path}: the tensor data record {name} runs past the end; the file is truncated")


class _Inert:
    """What every global and persistent id becomes while :func:`storage_sizes` reads a pickle:
    it records nothing and runs nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        return _Inert()

    def __setstate__(self, state):
        pass

    def __setitem__(self, key, value):
        pass

    def append(self, value):
        pass

    def extend(self, values):
        pass


class _StorageScan(pickle.Unpickler):
    def __init__(self, data: bytes):
        super().__init__(io.BytesIO(data))
        self.sizes: dict[str, int] = {}

    def find_class(self, module: str, name: str):  # never imports: every global is inert
        return type(name, (_Inert,), {"global_name": name})

    def persistent_load(self, pid):
        if isinstance(pid, tuple) and len(pid) == 5 and pid[0] in ("storage", b"storage"):
            _, storage_type, key, _, numel = pid
            name = getattr(storage_type, "global_name", None)
            if isinstance(key, str) and type(numel) is int and key not in self.sizes and name is not None:
                dtype = torch.uint8 if name == "UntypedStorage" else torch.serialization.StorageType(name).dtype
                self.sizes[key] = numel * torch.empty((), dtype=dtype).element_size()
        return _Inert()


def storage_sizes(pickled: bytes) -> dict[str, int]:
    """Storage key -> bytes its tensors need, from a zip checkpoint's ``data.pkl``, as
    ``torch.load`` reads them (the first mention of a key counts)."""
    scan = _StorageScan(pickled)
    scan.load()
    return scan.sizes


_libc = ctypes.CDLL(None) if sys.platform.startswith("linux") else None
_PAGE = mmap_module.PAGESIZE
_MADV_DONTNEED = 4


#: Linux maps up to this much around a faulting file page ("fault-around", 64 KiB by default).
FAULT_AROUND = 64 * 1024
#: A memory-mapped input's read pages are handed back in runs of this many bytes.
RELEASE_RUN = 4 << 20


def release_pages(tensor: torch.Tensor, margin: int = 0, bounds: tuple[int, int] | None = None) -> None:
    """Tell the kernel we are done with a memory-mapped tensor's pages.

    Mapped file pages count in a process's resident memory until it unmaps them; this
    drops them (they would be read again from the file if touched), so memory stays at
    one tensor per input instead of growing to whole models. ``margin`` bytes either side
    (kept within ``bounds``, the mapped tensors' extent) go too: reading a tensor's first
    pages maps its neighbours' nearby pages as well (fault-around), and without the margin
    those stayed mapped, about 12 MB per DAFormer MiT-B5 input.
    """
    storage = tensor.untyped_storage()
    start = storage.data_ptr()
    length = storage.nbytes()
    if start and length:
        release_span(start, start + length, margin, bounds)


def release_span(start: int, end: int, margin: int = 0, bounds: tuple[int, int] | None = None) -> None:
    """:func:`release_pages` for the address range ``[start, end)``."""
    if _libc is None:
        return
    if margin and bounds is not None:
        start, end = max(start - margin, bounds[0]), min(end + margin, bounds[1])
    aligned = start - start % _PAGE
    _libc.madvise(ctypes.c_void_p(aligned), ctypes.c_size_t(end - aligned), _MADV_DONTNEED)


#: While a .pth output is gathered, free heap pages go back to the system every this many bytes.
TRIM_EVERY = 16 << 20


def gather(tensors: Iterable[tuple[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The merged tensors of a ``.pth`` output as a dict, without the heap growing past them.

    The output is held whole for ``torch.save``, each merged tensor kept between the
    freed buffers of its key's inputs. glibc carves small allocations out of those freed
    chunks, so the next key's (same-sized) inputs no longer fit there and the heap grows
    instead: on a DAFormer MiT-B5 merge it held 1.5x the output. ``malloc_trim`` hands the
    free pages inside the heap back to the kernel, so memory stays near the output's size.
    """
    state: dict[str, torch.Tensor] = {}
    pending = 0
    for key, tensor in tensors:
        state[key] = tensor
        pending += tensor.numel() * tensor.element_size()
        if pending >= TRIM_EVERY:
            trim_heap()
            pending = 0
    return state


def trim_heap() -> None:
    """Return the free pages of the malloc heap to the kernel (glibc only; else nothing)."""
    trim = getattr(_libc, "malloc_trim", None) if _libc is not None else None
    if trim is not None:
        trim(0)


def write_pth(
    path: Path,
    tensors: Iterable[tuple[str, torch.Tensor]],
    template: Unwrapped | None,
    provenance: Mapping[str, Any],
) -> None:
    """Save a state dict in the anchor's layout, with the provenance beside it.

    mmseg-style anchors give ``{"state_dict": ..., "meta": {..., "segmerge": provenance}}``
    (optimizer state dropped); a plain state dict stays plain and carries the provenance in
    its ``_metadata`` (the attribute ``load_state_dict`` reads, which ignores unknown entries).
    """
    state = OrderedDict(tensors)
    wrappers = template.wrappers if template else []
    if wrappers:
        meta = dict(template.meta or {})
        meta["segmerge"] = dict(provenance)
        obj: Any = state
        for key in reversed(wrappers[1:]):
            obj = {key: obj}
        obj = {wrappers[0]: obj, "meta": meta}
    else:
        metadata = dict(template.state_metadata or {}) if template else {}
        metadata["__segmerge__"] = dict(provenance)
        state._metadata = metadata
        obj = state
    with open(path, "wb") as f:
        torch.save(obj, f)  # a file object, so the archive is not named after the temp file


def read_pth_provenance(source: PthSource) -> dict | None:
    content = source.content
    if content.meta and isinstance(content.meta.get("segmerge"), Mapping):
        return dict(content.meta["segmerge"])
    if content.state_metadata and isinstance(content.state_metadata.get("__segmerge__"), Mapping):
        return dict(content.state_metadata["__segmerge__"])
    return None

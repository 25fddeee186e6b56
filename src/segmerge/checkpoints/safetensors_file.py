"""safetensors files, read and written one tensor at a time.

Reading uses positioned reads into fresh buffers rather than a memory map, so a tensor's
bytes leave memory as soon as the merge is done with it. Writing streams: the header is
laid out from the plan's shapes before any tensor is merged, then each merged tensor is
appended as it comes. The format is the published one (8-byte little-endian header size,
JSON header padded to 8 bytes, contiguous little-endian data), readable by ``safetensors``.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

import torch

from segmerge.errors import CheckpointError
from segmerge.merging.sources import TensorMeta

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
# The dtypes safetensors reads into torch tensors, where this torch has them. F4 is packed two
# values a byte, as torch's float4_e2m1fn_x2: its tensors' last dimension is half the header's.
for _name, _attr in (
    ("F4", "float4_e2m1fn_x2"),
    ("F8_E8M0", "float8_e8m0fnu"),
    ("F8_E4M3", "float8_e4m3fn"),
    ("F8_E5M2", "float8_e5m2"),
    ("F8_E4M3FNUZ", "float8_e4m3fnuz"),
    ("F8_E5M2FNUZ", "float8_e5m2fnuz"),
    ("C64", "complex64"),
    ("U64", "uint64"),
    ("U32", "uint32"),
    ("U16", "uint16"),
):
    if hasattr(torch, _attr):
        DTYPES[_name] = getattr(torch, _attr)
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
#: Every dtype the format defines (safetensors 0.8), with its size in bits; a header naming
#: another is refused, one naming a dtype torch lacks (F6_*, and others on older torch) too.
FORMAT_BITS = {
    "BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8,
    "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32, "C64": 64, "F64": 64, "I64": 64, "U64": 64,
}  # fmt: skip
#: The safetensors library's limits: header size, and sizes that must fit its usize.
MAX_HEADER = 100_000_000
USIZE = 2**64


class SafetensorsSource:
    """One ``.safetensors`` file."""

    def __init__(self, path: Path, label: str | None = None):
        self.path = Path(path)
        self.label = label or str(path)
        self._metas, self._offsets, self.metadata = _read_header(self.path)
        self._handle = None
        self._scratch: torch.Tensor | None = None  # bytes lent by borrow(), reused

    def metas(self) -> dict[str, TensorMeta]:
        return self._metas

    def get(self, key: str) -> torch.Tensor:
        meta = self._metas[key]
        tensor = torch.empty(meta.shape, dtype=meta.dtype)  # read straight into it: no zero-filled buffer
        self._read(key, tensor)
        return tensor

    @contextlib.contextmanager
    def borrow(self, key: str) -> Iterator[torch.Tensor]:
        """The tensor, read into a buffer this source reuses, for reading only inside the ``with``:
        one allocation per input for the whole merge instead of a fresh one (and its page
        faults) per tensor."""
        meta = self._metas[key]
        size = nbytes(meta)
        if self._scratch is None or self._scratch.numel() < size:
            self._scratch = None  # the old buffer goes before the new one comes
            self._scratch = torch.empty(size, dtype=torch.uint8)
        tensor = self._scratch[:size].view(meta.dtype).reshape(meta.shape)
        self._read(key, tensor)
        yield tensor

    def _read(self, key: str, tensor: torch.Tensor) -> None:
        start, end = self._offsets[key]
        if end > start:
            target = memoryview(tensor.reshape(-1).view(torch.uint8).numpy())
            if len(target) != end - start:
                raise CheckpointError(
                    f"{self.path}: tensor {key!r} spans {end - start} bytes in the header, but its shape "
                    f"{list(self._metas[key].shape)} and dtype need {len(target)}"
                )
            if _read_at(self._file(), target, start) != len(target):
                raise CheckpointError(f"{self.path}: tensor {key!r} is cut short; the file is truncated")

    def _file(self):
        """The file, opened on first read and kept open (closed with the source)."""
        if self._handle is None:
            self._handle = open(self.path, "rb", buffering=0)
            weakref.finalize(self, self._handle.close)
        return self._handle


def _read_at(f, target: memoryview, offset: int) -> int:
    f.seek(offset)
    done = 0
    while done < len(target):
        n = f.readinto(target[done:])
        if not n:
            break
        done += n
    return done


class ShardedSafetensorsSource:
    """Several ``.safetensors`` shards tied together by an index json's ``weight_map``."""

    def __init__(self, index_path: Path, label: str | None = None):
        self.path = Path(index_path)
        self.label = label or str(index_path)
        try:
            weight_map = json.loads(self.path.read_text())["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(
                f"{self.path}: not a safetensors index (needs a 'weight_map' of key -> shard file): {exc}"
            ) from None
        self._shards: dict[str, SafetensorsSource] = {}
        self._where: dict[str, SafetensorsSource] = {}
        for key, shard in weight_map.items():
            if shard not in self._shards:
                shard_path = self.path.parent / shard
                if not shard_path.is_file():
                    raise CheckpointError(f"{self.path}: shard {shard} is missing beside the index")
                self._shards[shard] = SafetensorsSource(shard_path)
            self._where[key] = self._shards[shard]
        self.metadata = {}
        for shard in self._shards.values():
            self.metadata.update(shard.metadata)
        self._metas = {}
        for key, shard in self._where.items():
            if key not in shard.metas():
                raise CheckpointError(f"{self.path}: index names {key!r} in {shard.path.name}, which lacks it")
            self._metas[key] = shard.metas()[key]

    def metas(self) -> dict[str, TensorMeta]:
        return self._metas

    def get(self, key: str) -> torch.Tensor:
        return self._where[key].get(key)

    def borrow(self, key: str) -> contextlib.AbstractContextManager[torch.Tensor]:
        return self._where[key].borrow(key)


def _read_header(path: Path):
    """The header of a safetensors file, checked as the ``safetensors`` library checks it.

    Refused, with the file and (where there is one) the tensor named: a header size past the
    library's limit or the file's end; a header that is not UTF-8 JSON text of the format's
    shape; an unknown dtype, a shape or offset that is not a non-negative integer; offsets
    that disagree with shape and dtype; data that does not cover every byte of the data area
    exactly once (an overlap, a gap, bytes inserted or cut off). The library itself then
    opens the file (no tensor is read), so that whatever it refuses, segmerge refuses too.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise CheckpointError(
                    f"{path}: not a safetensors file: {size} bytes, too short for the 8-byte header size it starts with"
                    + _other_kind(path)
                )
            (header_len,) = struct.unpack("<Q", raw)
            if header_len > MAX_HEADER or header_len > size - 8:
                what = "past the format's limit of 100 MB" if header_len > MAX_HEADER else f"in a file of {size}"
                raise CheckpointError(
                    f"{path}: not a safetensors file, or a truncated one (a header of {header_len} bytes {what})"
                    + _other_kind(path)
                )
            blob = f.read(header_len)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        header = json.loads(blob.decode("utf-8"), parse_constant=_no_constants)
    except (ValueError, UnicodeDecodeError) as exc:
        reason = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else f"not valid JSON ({exc})"
        raise CheckpointError(f"{path}: not a safetensors file, or a damaged one: its header is {reason}") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a safetensors file: its header is not a JSON object")
    metadata = header.pop("__metadata__", None)
    if metadata is None:
        metadata = {}
    elif not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(f"{path}: the header's __metadata__ must map names to strings, got {metadata!r}")
    data_start = 8 + header_len
    entries = [(key, *_entry(path, key, info)) for key, info in header.items()]
    # Every byte of the data area belongs to exactly one tensor: in offset order, each starts
    # where the one before ends (the library's rule, in its order).
    entries.sort(key=lambda e: e[3])
    covered, previous = 0, None
    for key, _, _, (begin, end), length in entries:
        if begin != covered or end < begin:
            if end < begin:
                problem = f"ends (byte {end}) before it begins (byte {begin})"
            elif begin > covered:
                problem = f"begins at byte {begin} of the data area, leaving bytes {covered}-{begin - 1} to no tensor"
            else:
                problem = f"begins at byte {begin} of the data area, inside {previous!r} (which ends at byte {covered})"
            raise CheckpointError(f"{path}: tensor {key!r} {problem}; the file is damaged")
        if end - begin != length:
            raise CheckpointError(
                f"{path}: tensor {key!r} spans {end - begin} bytes in the header, but its shape and dtype need {length}"
            )
        covered, previous = end, key
    if data_start + covered != size:
        if data_start + covered > size:
            raise CheckpointError(
                f"{path}: the file is truncated: its header describes {covered} bytes of tensor data, "
                f"the file holds {size - data_start}"
            )
        raise CheckpointError(
            f"{path}: {size - data_start - covered} bytes after the last tensor belong to no tensor "
            "(bytes inserted or appended); the file is damaged"
        )
    for key, shape, dtype, _, _ in entries:
        if dtype not in DTYPES:
            raise CheckpointError(f"{path}: tensor {key!r} has dtype {dtype}, which this torch cannot hold")
        if dtype == "F4" and shape[-1] % 2:
            raise CheckpointError(
                f"{path}: tensor {key!r} of dtype F4 has the shape {list(shape)}; torch packs F4 two values a byte, "
                "so its last dimension must be even"
            )
    _library_check(path)
    metas = {key: TensorMeta(_torch_shape(shape, dtype), DTYPES[dtype]) for key, shape, dtype, _, _ in entries}
    offsets = {key: (data_start + begin, data_start + end) for key, _, _, (begin, end), _ in entries}
    metas = {key: metas[key] for key in header}  # the header's order, as written
    return metas, offsets, metadata


def _torch_shape(shape: tuple[int, ...], dtype: str) -> tuple[int, ...]:
    """The shape of the torch tensor: F4's last dimension counts bytes of two values each."""
    return (*shape[:-1], shape[-1] // 2) if dtype == "F4" else shape


def _header_shape(meta: TensorMeta) -> list[int]:
    shape = list(meta.shape)
    if DTYPE_NAMES[meta.dtype] == "F4":
        shape[-1] *= 2
    return shape


def _no_constants(name: str):
    raise ValueError(f"{name} is not JSON")


def _entry(path: Path, key: str, info) -> tuple[tuple[int, ...], str, tuple[int, int], int]:
    """A tensor's shape, dtype, data offsets and byte length, as the format allows them."""

    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"{path}: tensor {key!r}: {what} (in the header); the file is damaged")

    if not isinstance(info, dict):
        raise bad(f"the entry {info!r} is not {{dtype, shape, data_offsets}}")
    for field in ("dtype", "shape", "data_offsets"):
        if field not in info:
            raise bad(f"no {field}")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(dtype, str) or dtype not in FORMAT_BITS:
        raise bad(f"the dtype {dtype!r} is not one of safetensors' ({', '.join(FORMAT_BITS)})")
    if not isinstance(shape, list) or not all(_is_size(d) for d in shape):
        raise bad(f"the shape {shape!r} is not a list of non-negative integers")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_size(d) for d in offsets):
        raise bad(f"the data offsets {offsets!r} are not two non-negative integers [begin, end]")
    bits = FORMAT_BITS[dtype]
    for d in shape:
        bits *= d
    if bits >= USIZE:
        raise bad(f"the shape {shape} of {dtype} is too large to address")
    if bits % 8:
        raise bad(f"the shape {shape} of {dtype} does not fill whole bytes")
    return tuple(shape), dtype, (offsets[0], offsets[1]), bits // 8


def _is_size(value) -> bool:
    return type(value) is int and 0 <= value < USIZE


def _library_check(path: Path) -> None:
    """Open the file with the ``safetensors`` library (it reads the header, maps the file and
    reads no tensor): whatever it refuses is refused, whatever the checks above missed."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt"):
            pass
    except Exception as exc:  # SafetensorError, or an OSError of the mapping
        raise CheckpointError(f"{path}: the safetensors library refuses it: {exc}") from None


def _other_kind(path: Path) -> str:
    """A hint when a file named ``.safetensors`` is something else."""
    try:
        with open(path, "rb") as f:
            start = f.read(64)
    except OSError:
        return ""
    if start.startswith(b"PK\x03\x04") or start[:1] == b"\x80":
        return "; it looks like a PyTorch checkpoint: name it .pth"
    if start.startswith(b"version https://git-lfs"):
        return "; it is a Git LFS pointer, not the weights: run `git lfs pull` or download the file itself"
    if start and all(32 <= b < 127 or b in b"\t\r\n" for b in start):
        return f"; it is a text file (it starts with {start[:24].decode()!r})"
    return ""


def nbytes(meta: TensorMeta) -> int:
    count = 1
    for d in meta.shape:
        count *= d
    return count * torch.empty((), dtype=meta.dtype).element_size()


def write_safetensors(
    path: Path,
    metas: Mapping[str, TensorMeta],
    tensors: Iterable[tuple[str, torch.Tensor]],
    metadata: Mapping[str, str] | None = None,
    final_metadata: Callable[[], Mapping[str, str]] | None = None,
) -> None:
    """Stream ``tensors`` (in ``metas`` order, of those shapes and dtypes) into ``path``.

    ``final_metadata``, if given, replaces ``metadata`` once the data is written; it must
    serialise to the same length (it fills in values such as input hashes).
    """
    blob = _header(path, metas, metadata)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        expected = iter(metas.items())
        for key, tensor in tensors:
            want_key, want = next(expected)
            if key != want_key or tuple(tensor.shape) != want.shape or tensor.dtype != want.dtype:
                raise AssertionError(
                    f"writer got {key} {tuple(tensor.shape)} {tensor.dtype}, planned {want_key} {want}"
                )
            data = tensor.detach().contiguous().reshape(-1).view(torch.uint8)
            if data.numel():
                f.write(memoryview(data.numpy()))
        if final_metadata is not None:
            final = _header(path, metas, final_metadata())
            if len(final) != len(blob):
                raise AssertionError("final safetensors metadata changed size")
            f.seek(8)
            f.write(final)
        f.flush()
        os.fsync(f.fileno())


def _header(path: Path, metas: Mapping[str, TensorMeta], metadata: Mapping[str, str] | None) -> bytes:
    header: dict = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for key, meta in metas.items():
        if meta.dtype not in DTYPE_NAMES:
            raise CheckpointError(f"{path}: tensor {key!r} has dtype {meta.dtype}, which safetensors cannot hold")
        size = nbytes(meta)
        header[key] = {
            "dtype": DTYPE_NAMES[meta.dtype],
            "shape": _header_shape(meta),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    return blob

"""safetensors files, read and written one tensor at a time.

Reading uses positioned reads into fresh buffers rather than a memory map, so a tensor's
bytes leave memory as soon as the merge is done with it. Writing streams: the header is
laid out from the plan's shapes before any tensor is merged, then each merged tensor is
appended as it comes. The format is the published one (8-byte little-endian header size,
JSON header padded to 8 bytes, contiguous little-endian data), readable by ``safetensors``.
"""

from __future__ import annotations

import json
import os
import struct
import weakref
from collections.abc import Callable, Iterable, Mapping
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
for _name, _attr in (("F8_E4M3", "float8_e4m3fn"), ("F8_E5M2", "float8_e5m2")):
    if hasattr(torch, _attr):
        DTYPES[_name] = getattr(torch, _attr)
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
MAX_HEADER = 100 * 1024 * 1024


class SafetensorsSource:
    """One ``.safetensors`` file."""

    def __init__(self, path: Path, label: str | None = None):
        self.path = Path(path)
        self.label = label or str(path)
        self._metas, self._offsets, self.metadata = _read_header(self.path)
        self._handle = None

    def metas(self) -> dict[str, TensorMeta]:
        return self._metas

    def get(self, key: str) -> torch.Tensor:
        meta = self._metas[key]
        start, end = self._offsets[key]
        tensor = torch.empty(meta.shape, dtype=meta.dtype)  # read straight into it: no zero-filled buffer
        if end > start:
            target = memoryview(tensor.reshape(-1).view(torch.uint8).numpy())
            if len(target) != end - start:
                raise CheckpointError(
                    f"{self.path}: tensor {key!r} spans {end - start} bytes in the header, but its shape "
                    f"{list(meta.shape)} and dtype need {len(target)}"
                )
            if _read_at(self._file(), target, start) != len(target):
                raise CheckpointError(f"{self.path}: tensor {key!r} is cut short; the file is truncated")
        return tensor

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


def _read_header(path: Path):
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise CheckpointError(f"{path}: too short to be a safetensors file ({size} bytes)")
            (header_len,) = struct.unpack("<Q", raw)
            if header_len > min(MAX_HEADER, size - 8):
                raise CheckpointError(
                    f"{path}: not a safetensors file, or truncated (header of {header_len} bytes in a file of {size})"
                )
            header = json.loads(f.read(header_len))
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read: {exc.strerror}") from None
    except (ValueError, UnicodeDecodeError):
        raise CheckpointError(f"{path}: not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a safetensors file (its header is not a JSON object)")
    data_start = 8 + header_len
    metadata = header.pop("__metadata__", None) or {}
    metas: dict[str, TensorMeta] = {}
    offsets: dict[str, tuple[int, int]] = {}
    for key, info in header.items():
        try:
            dtype = DTYPES[info["dtype"]]
            shape = tuple(int(d) for d in info["shape"])
            begin, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: tensor {key!r} has an unreadable header entry {info!r}") from None
        if data_start + end > size:
            raise CheckpointError(
                f"{path}: tensor {key!r} lies past the end of the file; the file is truncated "
                f"({size} bytes, needs {data_start + end})"
            )
        metas[key] = TensorMeta(shape, dtype)
        offsets[key] = (data_start + begin, data_start + end)
    return metas, offsets, metadata


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
            "shape": list(meta.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    return blob

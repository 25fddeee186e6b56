"""Corrupted checkpoints: segmerge refuses what the official readers refuse, and reads what they read.

Valid files are written by the official writers, corrupted (bytes flipped in the header or the
data, the file cut short, bytes inserted, header fields edited), and then read twice: by the
official reader (``safetensors.safe_open``, every tensor fetched; ``torch.load(weights_only=True)``)
and by segmerge (``open_checkpoint(...).state_dict()``). The verdicts must agree; a refusal is a
:class:`CheckpointError` naming the file (and the tensor, where the official reader names one),
never a traceback; what both accept must read the same bytes.
"""

from __future__ import annotations

import json
import re
import struct
import tempfile
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file

from segmerge.checkpoints import open_checkpoint
from segmerge.checkpoints.safetensors_file import FORMAT_BITS
from segmerge.errors import CheckpointError

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.uint8, torch.bool]
SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


@st.composite
def state_dicts(draw) -> dict[str, torch.Tensor]:
    names = draw(
        st.lists(
            st.sampled_from(["a.weight", "a.bias", "b.0.w", "b.1.w", "head", "x"]), min_size=1, max_size=4, unique=True
        )
    )
    out = {}
    for name in names:
        dtype = draw(st.sampled_from(DTYPES))
        shape = draw(st.lists(st.integers(0, 4), max_size=3))
        seed = draw(st.integers(0, 2**16))
        values = torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 10
        out[name] = values > 0 if dtype is torch.bool else values.to(dtype)
    return out


def same_bytes(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal bit for bit (a flipped data byte may make a NaN, which != itself); bools by value
    (a flipped byte may hold 3, which torch copies as True)."""
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.numel() == 0:
        return True
    if a.dtype == torch.bool:
        return torch.equal(a, b)
    return torch.equal(a.contiguous().reshape(-1).view(torch.uint8), b.contiguous().reshape(-1).view(torch.uint8))


def ours(path: Path) -> tuple[dict | None, str]:
    """segmerge's verdict: the state dict, or the refusal's message. Anything else propagates."""
    try:
        return open_checkpoint(path).state_dict(), ""
    except CheckpointError as exc:
        return None, str(exc)


# --- safetensors ------------------------------------------------------------------------------


def split(raw: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def join(header: dict, data: bytes, pad: bool) -> bytes:
    blob = json.dumps(header).encode()
    if pad:
        blob += b" " * (-len(blob) % 8)
    return struct.pack("<Q", len(blob)) + blob + data


@st.composite
def header_edits(draw, raw: bytes) -> bytes:
    header, data = split(raw)
    keys = [k for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
    key = draw(st.sampled_from(keys))
    entry = header[key]
    field = draw(st.sampled_from(["begin", "end", "shift", "shape", "dtype", "drop", "metadata", "offsets"]))
    try:  # an earlier corruption may have left the entry in another shape: then nothing
        size = st.integers(-3, 40)
        if field == "begin":
            entry["data_offsets"][0] = draw(size)
        elif field == "end":
            entry["data_offsets"][1] = draw(size)
        elif field == "shift":  # both ends: an overlap with, or a gap before, the neighbour
            delta = draw(st.integers(-8, 8))
            entry["data_offsets"] = [entry["data_offsets"][0] + delta, entry["data_offsets"][1] + delta]
        elif field == "offsets":
            entry["data_offsets"] = draw(st.sampled_from([[0], [0, 0, 0], ["0", 4], [0.0, 4], None]))
        elif field == "shape":
            shape = entry["shape"]
            how = draw(st.sampled_from(["set", "append", "pop", "odd"]))
            if how == "set" and shape:
                shape[draw(st.integers(0, len(shape) - 1))] = draw(st.integers(-2, 8))
            elif how == "append":
                shape.append(draw(st.integers(-1, 3)))
            elif how == "pop" and shape:
                shape.pop()
            else:
                entry["shape"] = draw(st.sampled_from([[2.0], [True], "4", [2**64], [2**63, 4], None]))
        elif field == "dtype":
            entry["dtype"] = draw(st.sampled_from([*FORMAT_BITS, "XX", "f32", 5, None]))
        elif field == "drop":
            del header[key]
        else:
            header["__metadata__"] = draw(st.sampled_from([{"format": "pt"}, {"n": 1}, None, [], {"a": None}]))
    except (TypeError, IndexError, KeyError, AttributeError):
        return raw
    return join(header, data, pad=draw(st.booleans()))


def header_size(raw: bytes) -> int | None:
    """The header size of a (possibly already corrupted) file, if it has a header to edit."""
    if len(raw) < 8:
        return None
    (n,) = struct.unpack("<Q", raw[:8])
    return n if 0 < 8 + n <= len(raw) else None


@st.composite
def corruptions(draw, raw: bytes) -> bytes:
    n = header_size(raw)
    kinds = ["truncate", "insert"] + (["header-byte", "data-byte", "edit", "size"] if n else [])
    kind = draw(st.sampled_from(kinds))
    out = bytearray(raw)
    if kind == "header-byte":
        position = draw(st.integers(8, 8 + n - 1))
        out[position] ^= draw(st.integers(1, 255))
    elif kind == "data-byte" and len(raw) > 8 + n:
        out[draw(st.integers(8 + n, len(raw) - 1))] ^= draw(st.integers(1, 255))
    elif kind == "truncate" and raw:
        del out[draw(st.integers(0, len(raw) - 1)) :]
    elif kind == "insert":
        position = draw(st.integers(0, len(raw)))
        out[position:position] = draw(st.binary(min_size=1, max_size=16))
    elif kind == "edit":
        try:
            header = split(raw)[0]
        except ValueError:
            header = None
        if isinstance(header, dict) and any(isinstance(v, dict) for k, v in header.items() if k != "__metadata__"):
            return draw(header_edits(raw))
    elif kind == "size":
        out[:8] = struct.pack("<Q", draw(st.sampled_from([0, 1, n - 1, n + 8, n + 9, 10**8 + 1, 2**63])))
    return bytes(out)


def official_safetensors(path: Path) -> tuple[dict | None, str]:
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, ""
    except Exception as exc:  # SafetensorError, or TypeError/ValueError for a dtype torch cannot hold
        return None, str(exc)


def offsets_of(raw: bytes, key: str):
    try:
        return split(raw)[0][key]["data_offsets"]
    except Exception:
        return None


@SETTINGS
@given(data=st.data(), state=state_dicts(), metadata=st.booleans())
def test_safetensors_verdicts_match_the_library(data, state, metadata):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.safetensors"
        save_file(state, path, metadata={"format": "pt"} if metadata else None)
        raw = data.draw(corruptions(path.read_bytes()))
        if data.draw(st.booleans()):  # and sometimes a second corruption on top
            raw = data.draw(corruptions(raw))
        path.write_bytes(raw)
        expected, reason = official_safetensors(path)
        got, message = ours(path)
        if expected is None:
            assert got is None, f"segmerge read a file safetensors refuses ({reason})"
            assert str(path) in message
            named = re.search(r"tensor `([^`]*)`", reason)
            if named:  # the library names a tensor: so does segmerge (it, or one at the same offsets)
                ours_named = re.search(r"tensor '([^']*)'", message)
                assert ours_named, (reason, message)
                assert ours_named[1] == named[1] or offsets_of(raw, ours_named[1]) == offsets_of(raw, named[1])
        else:
            assert got is not None, f"segmerge refused a file safetensors reads: {message}"
            assert set(got) == set(expected)
            assert all(same_bytes(got[k], expected[k]) for k in got)


@pytest.mark.parametrize(
    "edit, says",
    [
        (lambda h: h["b"].update(shape=[-1]), "tensor 'b': the shape [-1]"),
        (
            lambda h: h["b"].update(data_offsets=[16, 24 + 16]),
            "tensor 'b' begins at byte 16 of the data area, inside 'a'",
        ),
        (
            lambda h: h["b"].update(data_offsets=[32, 48]),
            "tensor 'b' begins at byte 32 of the data area, leaving bytes",
        ),
        (
            lambda h: h["a"].update(dtype="F16"),
            "tensor 'a' spans 24 bytes in the header, but its shape and dtype need 12",
        ),
        (lambda h: h["a"].update(dtype="Q8"), "tensor 'a': the dtype 'Q8' is not one of safetensors'"),
    ],
)
def test_safetensors_refusals_name_file_and_tensor(tmp_path, edit, says):
    path = tmp_path / "m.safetensors"
    save_file({"a": torch.zeros(2, 3), "b": torch.zeros(4, dtype=torch.float32)}, path)
    header, data = split(path.read_bytes())
    edit(header)
    path.write_bytes(join(header, data + (b"\0" * 16 if "leaving" in says else b""), pad=True))
    with pytest.raises(CheckpointError, match=re.escape(f"{path}: {says}")):
        open_checkpoint(path)  # at open: before any merge work


def test_bytes_inserted_into_the_data_area_are_refused(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({"a": torch.zeros(2, 3), "b": torch.zeros(4)}, path)
    raw = path.read_bytes()
    path.write_bytes(raw[:-8] + b"\1\2\3\4" + raw[-8:])
    with pytest.raises(CheckpointError, match="4 bytes after the last tensor belong to no tensor"):
        open_checkpoint(path)


# --- .pth -------------------------------------------------------------------------------------


@st.composite
def pth_corruptions(draw, raw: bytes) -> bytes:
    out = bytearray(raw)
    kind = draw(st.sampled_from(["flip", "flip", "truncate", "insert"]))
    if kind == "flip":
        for _ in range(draw(st.integers(1, 3))):
            out[draw(st.integers(0, len(raw) - 1))] ^= 1 << draw(st.integers(0, 7))
    elif kind == "truncate":
        del out[draw(st.integers(0, len(raw) - 1)) :]
    else:
        position = draw(st.integers(0, len(raw)))
        out[position:position] = draw(st.binary(min_size=1, max_size=16))
    return bytes(out)


def official_pth(path: Path, mmap: bool):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap), ""
    except Exception as exc:
        return None, str(exc)


@SETTINGS
@given(data=st.data(), state=state_dicts())
def test_pth_verdicts_match_torch_load(data, state):
    """The reference is ``torch.load(map_location="cpu", weights_only=True)``, reading into memory.
    Where it refuses, segmerge refuses. Where it and its memory-mapped variant read the same
    state dict, segmerge reads those tensors. (Where the two variants differ - an empty storage
    shared under two dtypes, say - or what they read is no longer a state dict - a flipped opcode
    that leaves a string - segmerge either reads it or refuses with a message naming the file.)"""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.pth"
        torch.save(state, path)
        path.write_bytes(data.draw(pth_corruptions(path.read_bytes())))
        expected, reason = official_pth(path, mmap=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got, message = ours(path)
        if expected is None:
            assert got is None, f"segmerge read a file torch.load refuses ({reason})"
            assert str(path) in message
            return
        mapped, _ = official_pth(path, mmap=True)
        is_state_dict = (
            isinstance(expected, dict)
            and expected
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in expected.items())
        )
        agree = (
            is_state_dict
            and isinstance(mapped, dict)
            and list(mapped) == list(expected)
            and all(same_bytes(mapped[k], expected[k]) for k in expected)
        )
        if agree:
            assert got is not None, f"segmerge refused a state dict torch.load reads: {message}"
            assert list(got) == [k.removeprefix("module.") for k in expected] or set(got) == set(expected)
            for key, tensor in expected.items():
                assert same_bytes(got.get(key, got.get(key.removeprefix("module."))), tensor), key
        elif got is None:
            assert str(path) in message


def test_a_pth_whose_tensor_record_is_cut_short_is_refused(tmp_path):
    """A memory-mapped torch.load does not compare record sizes; segmerge does, as torch.load does."""
    path = tmp_path / "m.pth"
    torch.save({"w": torch.zeros(2, 3)}, path)
    raw = path.read_bytes()
    at = raw.index(b"cpuq\x06K\x06")  # the storage's location 'cpu', then its numel: BININT1 6
    path.write_bytes(raw[: at + 6] + b"\x09" + raw[at + 7 :])  # the pickle now wants 9 floats, 6 are stored
    assert official_pth(path, mmap=False)[0] is None
    with pytest.raises(
        CheckpointError, match=r"m\.pth: the tensor data record data/0 holds 24 bytes, but its tensor needs 36"
    ):
        open_checkpoint(path)

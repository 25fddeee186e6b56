"""Reading and writing every supported checkpoint layout, and refusing bad or unsafe files."""

from __future__ import annotations

import json
import os
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_models import tiny_state

from segmerge.checkpoints import load_checkpoint, open_checkpoint, save_checkpoint
from segmerge.errors import CheckpointError, UnsafeCheckpointError


def assert_same(a: dict, b: dict):
    assert list(a) == list(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("name", ["m.pth", "m.pt", "m.bin", "m.safetensors", "hf_out"])
def test_round_trip_each_format(tmp_path, name):
    state = tiny_state(1)
    state["half.weight"] = torch.randn(3, dtype=torch.float16)
    state["bf.weight"] = torch.randn(3).to(torch.bfloat16)
    path = save_checkpoint(state, tmp_path / name)
    assert_same(load_checkpoint(path), state)


def test_mmseg_layout_is_unwrapped_and_kept_on_output(tmp_path):
    from segmerge import api

    meta = {"CLASSES": ("road", "car"), "seed": np.int64(3), "hist": np.arange(4), "dtype": np.dtype("float32")}
    for i in (1, 2):
        torch.save(
            {"state_dict": tiny_state(i), "meta": meta, "optimizer": {"lr": torch.tensor(0.1)}}, tmp_path / f"{i}.pth"
        )
    assert_same(load_checkpoint(tmp_path / "1.pth"), tiny_state(1))
    api.merge_to_file([str(tmp_path / "1.pth"), str(tmp_path / "2.pth")], output=tmp_path / "m.pth")
    raw = torch.load(tmp_path / "m.pth", weights_only=False)
    assert set(raw) == {"state_dict", "meta"}  # optimizer state dropped
    assert raw["meta"]["CLASSES"] == ("road", "car") and raw["meta"]["seed"] == 3
    assert "recipe" in raw["meta"]["segmerge"] and len(raw["meta"]["segmerge"]["inputs"]) == 2
    assert list(raw["state_dict"]) == list(tiny_state(1))


def test_merge_returns_tensors_and_merge_to_file_writes_nothing_else_is_accepted(tmp_path):
    from segmerge import api
    from segmerge.errors import SegmergeError

    paths = []
    for i in (1, 2):
        torch.save(tiny_state(i), tmp_path / f"{i}.pth")
        paths.append(str(tmp_path / f"{i}.pth"))
    state = api.merge(paths, method="linear")
    assert list(state) == list(tiny_state(1)) and not (tmp_path / "m.pth").exists()
    with pytest.raises(SegmergeError, match="call merge_to_file"):
        api.merge(paths, output=tmp_path / "m.pth")
    with pytest.raises(SegmergeError, match="give output=PATH"):
        api.merge_to_file(paths)
    written = api.merge_to_file(paths, output=tmp_path / "m.pth", method="linear")
    assert written == tmp_path / "m.pth"
    assert_same(load_checkpoint(written), state)
    assert not (tmp_path / "m.pth.tmp").exists() and sorted(p.name for p in tmp_path.iterdir()) == [
        "1.pth",
        "2.pth",
        "m.pth",
    ]


def test_nested_model_and_data_parallel_prefix(tmp_path):
    state = tiny_state(1)
    torch.save({"model": {"module." + k: v for k, v in state.items()}, "epoch": 3}, tmp_path / "n.pth")
    assert_same(load_checkpoint(tmp_path / "n.pth"), state)


def test_plain_state_dict_output_stays_plain_with_provenance(tmp_path):
    from segmerge import api

    for i in (1, 2):
        torch.save(tiny_state(i), tmp_path / f"{i}.pth")
    api.merge_to_file([str(tmp_path / "1.pth"), str(tmp_path / "2.pth")], output=tmp_path / "m.pth")
    raw = torch.load(tmp_path / "m.pth", weights_only=True)
    assert list(raw) == list(tiny_state(1))
    assert "recipe" in raw._metadata["__segmerge__"]
    model = torch.nn.Module()  # load_state_dict accepts it: the provenance entry is ignored
    assert open_checkpoint(tmp_path / "m.pth").provenance()["inputs"][0]["path"].endswith("1.pth")
    del model


def test_sharded_safetensors_with_index(tmp_path):
    state = tiny_state(1)
    keys = list(state)
    shards = {"a.safetensors": keys[:5], "b.safetensors": keys[5:]}
    for name, ks in shards.items():
        save_file({k: state[k] for k in ks}, tmp_path / name)
    index = {"metadata": {}, "weight_map": {k: n for n, ks in shards.items() for k in ks}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    assert_same(load_checkpoint(tmp_path / "model.safetensors.index.json"), state)


def test_hf_folders_single_and_sharded_bin(tmp_path):
    state = tiny_state(1)
    single = tmp_path / "single"
    single.mkdir()
    (single / "config.json").write_text("{}")
    save_file(state, single / "model.safetensors")
    loaded = load_checkpoint(single)
    assert {k: loaded[k] for k in state} == loaded and set(loaded) == set(state)
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    keys = list(state)
    torch.save({k: state[k] for k in keys[:4]}, sharded / "pytorch_model-00001-of-00002.bin")
    torch.save({k: state[k] for k in keys[4:]}, sharded / "pytorch_model-00002-of-00002.bin")
    weight_map = {
        k: "pytorch_model-00001-of-00002.bin" if i < 4 else "pytorch_model-00002-of-00002.bin"
        for i, k in enumerate(keys)
    }
    (sharded / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    assert_same(load_checkpoint(sharded), state)


def test_folder_output_keeps_the_anchors_config(tmp_path):
    from segmerge import api

    for i in (1, 2):
        d = tmp_path / f"m{i}"
        d.mkdir()
        (d / "config.json").write_text(json.dumps({"model_type": "toy", "id": i}))
        (d / "preprocessor_config.json").write_text("{}")
        save_file(tiny_state(i), d / "model.safetensors")
    api.merge_to_file([str(tmp_path / "m2"), str(tmp_path / "m1")], output=tmp_path / "out")
    out = tmp_path / "out"
    assert json.loads((out / "config.json").read_text())["id"] == 2
    assert (out / "preprocessor_config.json").exists()
    provenance = json.loads((out / "segmerge_provenance.json").read_text())
    assert [i["path"] for i in provenance["inputs"]] == [str(tmp_path / "m2"), str(tmp_path / "m1")]
    from safetensors import safe_open

    with safe_open(out / "model.safetensors", "pt") as f:
        assert f.metadata()["format"] == "pt"
    assert set(load_file(out / "model.safetensors")) == set(tiny_state(1))


def test_legacy_pickle_format_loads(tmp_path):
    torch.save(tiny_state(1), tmp_path / "old.pth", _use_new_zipfile_serialization=False)
    assert_same(load_checkpoint(tmp_path / "old.pth"), tiny_state(1))


def _fake_class(monkeypatch, name: str, cls_name: str):
    """A class importable as ``name.cls_name`` while the checkpoint is written, then gone."""
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        monkeypatch.setitem(sys.modules, ".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
    cls = type(cls_name, (), {"__module__": name})
    setattr(sys.modules[name], cls_name, cls)
    return cls


def _forget(name: str):
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        sys.modules.pop(".".join(parts[:i]), None)


def test_openmmlab_metadata_objects_load_inert(tmp_path, monkeypatch):
    cls = _fake_class(monkeypatch, "mmengine.logging.history_buffer", "HistoryBuffer")
    buffer = cls()
    buffer.data = [1, 2, 3]
    torch.save({"state_dict": tiny_state(1), "meta": {"hub": buffer, "iter": 5}}, tmp_path / "mm.pth")
    _forget("mmengine.logging.history_buffer")
    checkpoint = open_checkpoint(tmp_path / "mm.pth")
    assert checkpoint.pth_content.meta == {"iter": 5}  # the opaque record is dropped from meta
    assert_same(checkpoint.state_dict(), tiny_state(1))


class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned-by-pickle",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"state_dict": tiny_state(1), "evil": RunsCode()}, tmp_path / "evil.pth")
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.pth.*(os|posix)\.system.*--trust-pickle"):
        open_checkpoint(tmp_path / "evil.pth")
    assert not (tmp_path / "pwned-by-pickle").exists()


def test_trust_pickle_loads_other_globals(tmp_path, monkeypatch):
    cls = _fake_class(monkeypatch, "my_project.things", "Config")
    torch.save({"state_dict": tiny_state(1), "cfg": cls()}, tmp_path / "c.pth")
    with pytest.raises(UnsafeCheckpointError, match="my_project.things.Config"):
        open_checkpoint(tmp_path / "c.pth")
    assert_same(load_checkpoint(tmp_path / "c.pth", trust_pickle=True), tiny_state(1))


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_files_are_named(tmp_path, suffix):
    path = tmp_path / f"t{suffix}"
    save_checkpoint(tiny_state(1), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=rf"t\{suffix}.*truncated"):
        open_checkpoint(path).state_dict()


@pytest.mark.parametrize("content", [b"", b"hello, this is not a checkpoint\n" * 10])
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_non_checkpoints_are_refused(tmp_path, content, suffix):
    path = tmp_path / f"x{suffix}"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=rf"x\{suffix}"):
        open_checkpoint(path)


def test_missing_file_and_unknown_suffix(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        open_checkpoint(tmp_path / "nope.pth")
    (tmp_path / "w.onnx").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="unknown checkpoint type"):
        open_checkpoint(tmp_path / "w.onnx")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(CheckpointError, match="without model weights"):
        open_checkpoint(tmp_path / "empty_dir")


def test_a_pth_without_tensors_is_refused(tmp_path):
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "x.pth")
    with pytest.raises(CheckpointError, match="no tensors found"):
        open_checkpoint(tmp_path / "x.pth")


def test_existing_output_is_not_overwritten(tmp_path):
    save_checkpoint(tiny_state(1), tmp_path / "a.safetensors")
    before = (tmp_path / "a.safetensors").read_bytes()
    with pytest.raises(CheckpointError, match="already exists"):
        save_checkpoint(tiny_state(2), tmp_path / "a.safetensors")
    assert (tmp_path / "a.safetensors").read_bytes() == before
    save_checkpoint(tiny_state(2), tmp_path / "a.safetensors", overwrite=True)
    assert_same(load_checkpoint(tmp_path / "a.safetensors"), tiny_state(2))
    assert [p.name for p in tmp_path.iterdir()] == ["a.safetensors"]  # no temp files left


def test_pth_source_reads_from_a_memory_map(tmp_path):
    torch.save(tiny_state(1), tmp_path / "a.pth")
    checkpoint = open_checkpoint(tmp_path / "a.pth")
    assert checkpoint.source._mapped
    first = checkpoint.get("stem.conv.weight")
    assert torch.equal(first, tiny_state(1)["stem.conv.weight"])
    assert torch.equal(checkpoint.get("stem.conv.weight"), first)  # pages handed back are re-read


def test_output_folder_and_path_format(tmp_path):
    with pytest.raises(CheckpointError, match="cannot tell the output format"):
        save_checkpoint(tiny_state(1), Path(tmp_path / "m.onnx"))


@pytest.mark.parametrize(
    "content, says",
    [
        (b"hello, these are my notes\n", "is a text file (it starts with 'hello, these are my note'), not a PyTorch"),
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 9\n", "Git LFS pointer, not the weights"),
        (b"<!DOCTYPE html><html><body>Sign in</body></html>", "an HTML page"),
        (b"", "is empty (0 bytes)"),
        ("safetensors", "is a safetensors file, not a PyTorch pickle: rename it to .safetensors"),
    ],
)
def test_a_pth_that_is_something_else_says_what_it_is(tmp_path, content, says):
    path = tmp_path / "model.pth"
    if content == "safetensors":
        save_file(tiny_state(1), path)
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=re.escape(f"{path}: ") + ".*" + re.escape(says)):
        open_checkpoint(path)


def test_packed_f4_and_e8m0_tensors_read_and_write_as_the_safetensors_library_does(tmp_path):
    from safetensors import safe_open

    if not hasattr(torch, "float4_e2m1fn_x2"):
        pytest.skip("this torch has no float4_e2m1fn_x2")
    header = json.dumps(
        {
            "f4": {"dtype": "F4", "shape": [3, 4], "data_offsets": [0, 6]},
            "e8": {"dtype": "F8_E8M0", "shape": [2], "data_offsets": [6, 8]},
        }
    ).encode()
    header += b" " * (-len(header) % 8)
    path = tmp_path / "packed.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + bytes(range(8)))
    state = load_checkpoint(path)
    assert state["f4"].shape == (3, 2) and state["f4"].dtype == torch.float4_e2m1fn_x2  # as safe_open gives it
    save_checkpoint(state, tmp_path / "again.safetensors")
    with safe_open(str(tmp_path / "again.safetensors"), "pt") as f:
        for key in state:
            assert torch.equal(f.get_tensor(key).view(torch.uint8), state[key].view(torch.uint8))
    assert (tmp_path / "again.safetensors").read_bytes().endswith(bytes(range(8)))


@pytest.mark.parametrize("name", ["m.pth", "m.safetensors", "legacy.pth"])
def test_borrow_lends_what_get_returns(tmp_path, name):
    """The merge reads inputs through ``borrow`` (in place, or into a reused buffer): same values,
    shapes and dtypes as ``get``, key after key, including empty and 0-d tensors."""
    state = tiny_state(1)
    state["half.weight"] = torch.randn(3, 2, dtype=torch.float16)
    state["empty"] = torch.zeros(0, 4)
    state["scalar"] = torch.tensor(7, dtype=torch.int64)
    state["flag"] = torch.tensor([True, False])
    path = tmp_path / name
    if name == "legacy.pth":  # not memory-mappable: lent from memory
        torch.save(state, path, _use_new_zipfile_serialization=False)
    else:
        save_checkpoint(state, path)
    checkpoint = open_checkpoint(path)
    for key in [*checkpoint.metas(), *reversed(checkpoint.metas())]:
        with checkpoint.borrow(key) as lent:
            assert lent.dtype == state[key].dtype and lent.shape == state[key].shape, key
            assert torch.equal(lent, state[key]), key
    assert_same(load_checkpoint(path), state)


def test_a_merge_through_borrowed_inputs_equals_the_weighted_sum(tmp_path):
    from segmerge import api

    states = [tiny_state(i) for i in range(3)]
    for fmt in ("pth", "safetensors"):
        paths = [save_checkpoint(s, tmp_path / f"m{i}.{fmt}") for i, s in enumerate(states)]
        merged = api.merge(paths, method="linear")
        for key, tensor in merged.items():
            if states[0][key].is_floating_point() and not key.endswith(("running_mean", "running_var")):
                expected = sum(s[key] / 3 for s in states)
                assert torch.allclose(tensor, expected, atol=1e-6), key

"""Input hashes for provenance are remembered by path, size, modification time and inode."""

from __future__ import annotations

import hashlib
import json
import os

from segmerge.checkpoints.provenance import hash_cache_file, sha256_of


def test_a_hash_is_remembered_and_a_changed_file_is_hashed_again(tmp_path, monkeypatch):
    cache = tmp_path / "cache" / "sha256.json"
    monkeypatch.setenv("SEGMERGE_HASH_CACHE", str(cache))
    data = tmp_path / "model.bin"
    data.write_bytes(b"a" * 1000)
    first = sha256_of(data)
    assert first == hashlib.sha256(b"a" * 1000).hexdigest()
    [(key, value)] = json.loads(cache.read_text()).items()
    assert value == first
    # The second call reads the cache, not the file: a planted value comes back.
    cache.write_text(json.dumps({key: "planted"}))
    assert sha256_of(data) == "planted"
    # Same size, new content and modification time: hashed again.
    data.write_bytes(b"b" * 1000)
    os.utime(data, ns=(data.stat().st_atime_ns, data.stat().st_mtime_ns + 1_000_000))
    assert sha256_of(data) == hashlib.sha256(b"b" * 1000).hexdigest()


def test_folders_are_keyed_by_every_file_and_the_cache_can_be_turned_off(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGMERGE_HASH_CACHE", "off")
    assert hash_cache_file() is None
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"x" * 10)
    before = sha256_of(folder)
    assert not any(tmp_path.rglob("sha256.json"))
    monkeypatch.setenv("SEGMERGE_HASH_CACHE", str(tmp_path / "c.json"))
    assert sha256_of(folder) == before
    (folder / "extra.txt").write_text("new file")
    assert sha256_of(folder) != before


def test_a_damaged_cache_is_ignored(tmp_path, monkeypatch):
    cache = tmp_path / "sha256.json"
    cache.write_text("{not json")
    monkeypatch.setenv("SEGMERGE_HASH_CACHE", str(cache))
    data = tmp_path / "m.pth"
    data.write_bytes(b"123")
    assert sha256_of(data) == hashlib.sha256(b"123").hexdigest()
    assert json.loads(cache.read_text())  # rewritten whole

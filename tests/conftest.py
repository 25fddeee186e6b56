import pytest
from tiny_models import shared_start_family


@pytest.fixture
def family():
    return shared_start_family(3)


@pytest.fixture(autouse=True)
def _hash_cache_in_tmp(tmp_path_factory, monkeypatch):
    """Tests never write segmerge's input-hash cache into the user's home."""
    monkeypatch.setenv("SEGMERGE_HASH_CACHE", str(tmp_path_factory.getbasetemp() / "sha256.json"))

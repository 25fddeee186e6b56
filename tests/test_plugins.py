"""The library's extension points, and what the command line costs to start.

segmerge's research harness (``segmerge_bench``) reaches the library only through the entry
points any package can declare (``segmerge.plugins``); the library never imports it
(import-linter checks that in CI). These tests check what a user sees of that design.
"""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import EntryPoint

import pytest

from segmerge import plugins
from segmerge.errors import SegmergeError


def test_plan_and_merge_start_without_the_heavy_or_harness_modules():
    code = (
        "import sys, segmerge.cli.app; "
        "heavy = ('scipy', 'matplotlib', 'cityscapesscripts', 'transformers', 'segmerge_bench.synthetic', "
        "'segmerge_bench.zoo', 'segmerge_bench.training', 'segmerge_bench.benchmark'); "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_harness_plugs_in_its_commands_dataset_kind_and_model_loader():
    from typer.testing import CliRunner

    from segmerge.cli.app import app
    from segmerge.datasets import dataset_kinds

    names = [c.name or c.callback.__name__ for c in app.registered_commands]
    assert {"plan", "merge", "eval", "tune", "data", "demo", "bench"} <= set(names)
    assert names.index("tune") < names.index("data")  # the library's commands first, in workflow order
    assert "synthetic" in dataset_kinds()
    loaders = plugins.plugins(plugins.SEGMENTERS)
    assert any(loader.__module__ == "segmerge_bench.zoo.segmenter" for loader in loaders)
    result = CliRunner().invoke(app, ["data", "--help"])
    assert result.exit_code == 0 and "--domain" in result.output


def test_a_broken_plugin_is_named_not_a_traceback(monkeypatch):
    broken = EntryPoint("mine", "no_such_module_xyz:register", plugins.COMMANDS)
    monkeypatch.setattr(plugins, "entry_points", lambda group: [broken] if group == "test.group" else [])
    plugins.plugins.cache_clear()
    try:
        with pytest.raises(SegmergeError, match=r"'mine' \(no_such_module_xyz:register\) failed to load"):
            plugins.plugins("test.group")
    finally:
        plugins.plugins.cache_clear()


def test_a_checkpoint_no_loader_recognises_is_refused_with_what_to_pass(tmp_path):
    import torch

    from segmerge.segmenters import load_segmenter

    torch.save({"w": torch.zeros(2)}, tmp_path / "plain.pth")
    with pytest.raises(SegmergeError, match="--model FILE.py:function"):
        load_segmenter(str(tmp_path / "plain.pth"))


def test_choices_written_out_for_a_fast_start_match_the_registries():
    """`merge`/`tune` list their choices without importing the merge methods or the tuning code (torch)."""
    from segmerge.cli import options, tune_command
    from segmerge.merging.methods import method_names
    from segmerge.tuning import LOSSES, SELECTION_RULES
    from segmerge.tuning.search import DEFAULT_CRITERION

    assert list(options.BUILTIN_METHODS) == method_names()
    assert list(tune_command.SELECTION_RULES) == list(SELECTION_RULES)
    assert list(tune_command.LOSSES) == list(LOSSES)
    assert tune_command.DEFAULT_CRITERION == DEFAULT_CRITERION


def test_import_segmerge_does_not_load_torch_until_a_name_needs_it():
    code = (
        "import sys, segmerge, segmerge.cli.app, segmerge.metrics\n"
        "before = 'torch' in sys.modules\n"
        "from segmerge import api\n"
        "print(before, callable(segmerge.merge), api.merge is segmerge.merge, 'torch' in sys.modules)\n"
        "print(segmerge.checkpoints.load_checkpoint is segmerge.load_checkpoint, hasattr(segmerge, 'no_such_name'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "True", "True", "True", "True", "False"]

"""The README's first command, end to end."""

import torch
from typer.testing import CliRunner

from segmerge.checkpoints import load_checkpoint, open_checkpoint
from segmerge.cli.app import app


def test_demo_writes_real_merges_that_load(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "every weight loaded" in result.output
    gta = load_checkpoint(tmp_path / "checkpoints" / "gta_daformer.pth")
    syn = load_checkpoint(tmp_path / "checkpoints" / "synthia_daformer.pth")
    soup = load_checkpoint(tmp_path / "soup.safetensors")
    key = "backbone.block.2.0.mlp.dense1.weight"
    assert torch.allclose(soup[key], (gta[key] + syn[key]) / 2, atol=1e-6)
    layerwise = load_checkpoint(tmp_path / "gta+synthia.pth")
    assert torch.equal(layerwise["decode_head.classifier.weight"], gta["decode_head.classifier.weight"])
    assert "rename" in open_checkpoint(tmp_path / "segformer+gta").provenance()["recipe"]

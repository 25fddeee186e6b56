"""`segmerge data` writes a synthetic domain that the evaluation readers take as Cityscapes."""

from typer.testing import CliRunner

from segmerge.cli.app import app
from segmerge.datasets import open_dataset


def test_data_command_writes_a_cityscapes_layout(tmp_path):
    out = tmp_path / "target"
    r = CliRunner().invoke(app, ["data", "--domain", "target", "--n", "4", "--out", str(out), "--split", "val"])
    assert r.exit_code == 0, r.output
    semantic = open_dataset(f"cityscapes:{out}", split="val")
    panoptic = open_dataset(f"cityscapes-panoptic:{out}", split="val")
    assert len(semantic) == len(panoptic) == 4
    sample = semantic[0]
    assert sample.image.shape == (96, 192, 3) and sample.label.shape == (96, 192)
    assert set(sample.label.ravel()) <= set(range(19)) | {255}
    again = CliRunner().invoke(app, ["data", "--domain", "target", "--n", "4", "--out", str(out)])
    assert again.exit_code == 2  # an existing folder is not overwritten


def test_unknown_domain_is_named(tmp_path):
    r = CliRunner().invoke(app, ["data", "--domain", "gta6", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "gta6" in r.output
    assert not (tmp_path / "x").exists()

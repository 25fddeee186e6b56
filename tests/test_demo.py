"""The README's first command, end to end, on the checkpoints shipped in the package."""

import json

import pytest
from typer.testing import CliRunner

from segmerge.checkpoints import load_checkpoint
from segmerge.cli.app import app
from segmerge_bench.benchmark.shipping import shipped_manifest


@pytest.mark.slow
def test_demo_json_reports_the_three_claims_in_every_shipped_regime(tmp_path):
    shipped = set(shipped_manifest()["regimes"])
    result = CliRunner().invoke(
        app, ["demo", "--json", "--test-images", "16", "--out", str(tmp_path)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    claims = printed["claims"]
    assert [c["name"] for c in claims] == ["same-architecture", "different-architecture", "semantic-to-panoptic"]
    # the regime behind the claims: every shipped model alone, and the oracle
    assert set(printed["models"]) == shipped and "appearance" in shipped
    for models in printed["models"].values():
        assert {"oracle", "UDA A", "UDA B", "DAFormer UDA B", "panoptic UDA B"} <= set(models)
        assert all(0.0 <= v <= 100.0 for v in models.values())
    assert isinstance(printed["full_run"], dict)
    for claim in claims:
        panoptic = claim["name"] == "semantic-to-panoptic"
        assert claim["metric"] == ("PQ" if panoptic else "mIoU")
        assert claim["paper_gain"] == {"same-architecture": 2.6, "different-architecture": 6.8}.get(claim["name"], 7.0)
        assert set(claim["by_regime"]) == shipped
        for numbers in [claim, *claim["by_regime"].values()]:
            for key in ("best_single", "uniform_soup", "layerwise", "ensemble"):
                assert 0.0 <= numbers[key] <= 100.0
            assert numbers["ensemble_cost"] == 2
            assert 0.0 <= numbers["tuned"] <= 100.0  # the merge learned from unlabelled target images
            assert abs(numbers["gain"] - (numbers["layerwise"] - numbers["best_single"])) < 0.02
        # the panoptic claim over the classes its SYNTHIA-like source labels in the appearance regime
        expected = {regime: 16 if panoptic and regime == "appearance" else 19 for regime in shipped}
        assert {regime: n["classes"] for regime, n in claim["by_regime"].items()} == expected
    assert (tmp_path / "report" / "claims.json").is_file()
    assert (tmp_path / "report" / "bench.md").read_text().count("### ") == 3 * len(shipped)
    semantic = claims[-1]["details"]["layer-wise (default)"]
    assert set(semantic) == {"PQ things", "PQ stuff", "mIoU"}


def test_demo_merges_keep_the_anchor_head_and_blend_the_encoder(tmp_path):
    result = CliRunner().invoke(
        app, ["demo", "--no-tune", "--test-images", "8", "--out", str(tmp_path)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert "paper's gain" in result.output
    manifest = shipped_manifest()
    from segmerge_bench.benchmark.models import shipped_path

    files = manifest["regimes"]["appearance"]
    anchor = load_checkpoint(shipped_path(files["UDA A"]))
    donor = load_checkpoint(shipped_path(files["DAFormer UDA B"]))
    merged_dir = tmp_path / "merges" / "appearance" / "different-architecture"
    merged = load_checkpoint(next(p for p in merged_dir.iterdir() if p.name.startswith("layer-wise")))
    head = [k for k in anchor if k.startswith("decode_head.")]
    assert head and all((merged[k] == anchor[k]).all() for k in head)
    first = "segformer.encoder.patch_embeddings.0.proj.weight"
    donor_first = "backbone." + first.removeprefix("segformer.encoder.")
    assert (merged[first] - (anchor[first] + donor[donor_first]) / 2).abs().max() < 1e-6

    panoptic = load_checkpoint(shipped_path(files["panoptic UDA B"]))
    merged_dir = tmp_path / "merges" / "appearance" / "semantic-to-panoptic"
    merged = load_checkpoint(next(p for p in merged_dir.iterdir() if p.name.startswith("layer-wise")))
    heads = [k for k in panoptic if not k.startswith("backbone.")]
    assert any(k.startswith("instance_head.") for k in heads)
    assert all((merged[k] == panoptic[k]).all() for k in heads)  # both heads stay the panoptic model's
    pan_first = "backbone.patch_embeddings.0.proj.weight"
    assert (merged[pan_first] - (panoptic[pan_first] + anchor[first]) / 2).abs().max() < 1e-6

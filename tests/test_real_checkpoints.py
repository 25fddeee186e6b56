"""The field's real checkpoint layouts (fixtures: tests/real_layouts.py, with their sources)."""

from __future__ import annotations

import torch
from real_layouts import daformer, mmcv_checkpoint, revise_and_check, uda_wrapper
from typer.testing import CliRunner

from segmerge import api
from segmerge.checkpoints import open_checkpoint
from segmerge.cli.app import app
from segmerge.merging.networks import find_networks
from segmerge.merging.sources import TensorMeta


def _save_uda(path, seed):
    torch.save(mmcv_checkpoint(uda_wrapper(seed)), path)
    return str(path)


def test_uda_networks_are_found_and_plain_models_are_not():
    metas = {k: TensorMeta.of(v) for k, v in uda_wrapper(0).items()}
    nets = find_networks(metas)
    assert [(n.prefix, n.role) for n in nets] == [
        ("model.", "student"),
        ("ema_model.", "teacher"),
        ("imnet_model.", "imagenet"),
    ]
    assert find_networks({k: TensorMeta.of(v) for k, v in daformer(0).items()}) == []


def test_uda_merge_schedules_the_student_alone_and_loads_origin_style(tmp_path):
    a, b = _save_uda(tmp_path / "a.pth", 1), _save_uda(tmp_path / "b.pth", 2)
    opened = api.open_merge([a, b])
    student = daformer(1)
    plan = opened.plan
    assert {k.key for k in plan.keys} == set(student)  # the student only, prefix stripped
    assert plan.layers[-1].depth == 1.0 and plan.layers[0].depth == 0.0
    # depth counted within the student: its last layer reaches the end weight
    assert plan.layers[-1].weights[0] == 0.75
    assert any("student" in n and "ema_model." in n and "imnet_model." in n for n in plan.notes)
    out = tmp_path / "m.pth"
    api.write_merge(opened, out, False)
    saved = torch.load(out, weights_only=False)
    assert set(saved) == {"state_dict", "meta"}
    assert len(saved["state_dict"]) == len(student)  # only the chosen network
    assert revise_and_check(saved, student) == []
    merged = saved["state_dict"]["backbone.block1.0.attn.q.weight"]
    expected = (
        0.5 * daformer(1)["backbone.block1.0.attn.q.weight"] + 0.5 * daformer(2)["backbone.block1.0.attn.q.weight"]
    )
    assert torch.allclose(merged, expected)


def test_uda_teacher_on_request_and_wrapper_kept_on_request(tmp_path):
    a, b = _save_uda(tmp_path / "a.pth", 1), _save_uda(tmp_path / "b.pth", 2)
    result = CliRunner().invoke(app, ["merge", a, b, "-o", str(tmp_path / "t.pth"), "--network", "teacher"])
    assert result.exit_code == 0, result.output
    saved = torch.load(tmp_path / "t.pth", weights_only=False)["state_dict"]
    key = "backbone.patch_embed1.proj.weight"
    assert torch.allclose(saved[key], 0.5 * daformer(51)[key] + 0.5 * daformer(52)[key])
    assert "network: teacher" in open_checkpoint(tmp_path / "t.pth").provenance()["recipe"]
    result = CliRunner().invoke(app, ["merge", a, b, "-o", str(tmp_path / "w.pth"), "--keep-wrapper"])
    assert result.exit_code == 0, result.output
    wrapped = torch.load(tmp_path / "w.pth", weights_only=False)["state_dict"]
    assert set(wrapped) == set(uda_wrapper(1))
    assert torch.equal(wrapped["ema_model." + key], uda_wrapper(1)["ema_model." + key])
    assert revise_and_check({"state_dict": wrapped}, daformer(1)) == []


def _rename_head(state: dict) -> dict:
    """DAFormer's head keys as a SegFormer-style head spells its MLP embeddings (8 keys, other widths)."""
    out = {}
    for k, v in state.items():
        if ".embed_layers." in k:
            k = k.replace("decode_head.embed_layers.", "decode_head.linear_c.")
            v = torch.zeros(v.shape[0] + 1, *v.shape[1:])
        out[k] = v
    return out


def test_merge_with_nothing_in_common_is_refused_and_writes_nothing(tmp_path):
    torch.save(mmcv_checkpoint(daformer(1)), tmp_path / "a.pth")
    hf_like = {k.replace("backbone.", "segformer.encoder.", 1): v for k, v in daformer(2).items()}
    hf_like = {k: v for k, v in hf_like.items() if not k.startswith("decode_head.")}
    torch.save(hf_like, tmp_path / "b.pth")
    out = tmp_path / "m.pth"
    result = CliRunner().invoke(app, ["merge", str(tmp_path / "a.pth"), str(tmp_path / "b.pth"), "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert not out.exists()
    assert "0.0% of the anchor's values" in result.output and "--allow-few" in result.output
    assert "hint:" in result.output and "--rename '1:^segformer\\.encoder\\.=backbone.'" in result.output
    allowed = ["merge", str(tmp_path / "a.pth"), str(tmp_path / "b.pth"), "-o", str(out), "--allow-few"]
    assert CliRunner().invoke(app, allowed).exit_code == 0 and out.exists()


def test_no_hint_that_leads_to_shape_mismatches():
    a = daformer(1)
    b = _rename_head(daformer(2))
    p = api.plan([a, b])
    assert not any("linear_c" in h for h in p.hints)


def test_relatedness_covers_norm_only_layers_and_merge_prints_it(tmp_path):
    a = daformer(1)
    b = {k: v.clone() for k, v in a.items()}
    gen = torch.Generator().manual_seed(5)
    b["backbone.norm4.weight"] = torch.randn(b["backbone.norm4.weight"].shape, generator=gen)
    b["backbone.norm4.bias"] = torch.randn(b["backbone.norm4.bias"].shape, generator=gen)
    p = api.plan([a, b], check_relatedness=True)
    assert any("backbone.norm4" in w and "unrelated" in w for w in p.warnings)
    torch.save(a, tmp_path / "a.pth")
    torch.save(b, tmp_path / "b.pth")
    result = CliRunner().invoke(
        app, ["merge", str(tmp_path / "a.pth"), str(tmp_path / "b.pth"), "-o", str(tmp_path / "m.pth")]
    )
    assert result.exit_code == 0 and "backbone.norm4" in result.output


def test_a_module_merged_in_part_is_reported():
    a = daformer(1)
    b = {k: (torch.zeros(v.shape[0] + 2, *v.shape[1:]) if ".attn.kv." in k else v) for k, v in daformer(2).items()}
    p = api.plan([a, b])
    assert any(
        "merged only in part" in w and "backbone.block1.0.attn (merged" in w and "kept kv" in w for w in p.warnings
    )

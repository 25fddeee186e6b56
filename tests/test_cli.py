"""The CLI end to end on tiny generated checkpoints, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file
from tiny_models import sha256, shared_start_family, tiny_state
from typer.testing import CliRunner

from segmerge.checkpoints import load_checkpoint
from segmerge.cli.app import app

runner = CliRunner()


def run(*args, cwd=None):
    old = os.getcwd()
    if cwd:
        os.chdir(cwd)
    try:
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    finally:
        os.chdir(old)


@pytest.fixture
def ckpts(tmp_path):
    base, models = shared_start_family(3)
    torch.save({"state_dict": models[0], "meta": {"iter": 1}}, tmp_path / "gta.pth")
    torch.save(models[1], tmp_path / "synthia.pth")
    save_file(models[2], tmp_path / "c.safetensors")
    torch.save(base, tmp_path / "base.pth")
    return tmp_path


def test_plan_prints_layers_weights_and_actions(ckpts):
    r = run("plan", ckpts / "gta.pth", ckpts / "synthia.pth", "--anchor", "1")
    assert r.exit_code == 0, r.output
    assert "7 layers to merge" in r.output and "m1*" in r.output
    assert "stem.conv" in r.output and "merged" in r.output


def test_plan_json(ckpts):
    r = run("plan", ckpts / "gta.pth", ckpts / "synthia.pth", ckpts / "c.safetensors", "--json")
    plan = json.loads(r.output)
    assert plan["anchor"] == 0 and len(plan["models"]) == 3
    assert plan["layers"][-1]["weights"] == [0.75, 0.125, 0.125]  # the default end weight, donors share the rest


def test_merge_each_output_format_and_reproduce_from_embedded_recipe(ckpts):
    inputs = [ckpts / "gta.pth", ckpts / "synthia.pth", ckpts / "c.safetensors"]
    before = [sha256(p) for p in inputs]
    for out in ("m.pth", "m.safetensors", "m_hf"):
        r = run("merge", *inputs, "-o", ckpts / out, "--anchor", "2", "--ramp-start", "0.25",
                "--end-weight", "0.9", "--ramp", "cosine")  # fmt: skip
        assert r.exit_code == 0, r.output
        shown = run("recipe", ckpts / out)
        (ckpts / f"{out}.yaml").write_text(shown.output)
        again = run("merge", "--recipe", ckpts / f"{out}.yaml", "-o", ckpts / f"again_{out}")
        assert again.exit_code == 0, again.output
        assert sha256(ckpts / out) == sha256(ckpts / f"again_{out}"), out
    assert [sha256(p) for p in inputs] == before  # inputs untouched
    a = load_checkpoint(ckpts / "m.pth")
    b = load_checkpoint(ckpts / "m.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_dump_recipe_and_rerun(ckpts):
    r = run("merge", ckpts / "gta.pth", ckpts / "synthia.pth", "-o", ckpts / "m.pth", "--dump-recipe",
            "--keep", "^head", "--weights", "-,1")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "keep: true" in r.stdout and "output:" in r.stdout


def test_rename_between_architectures(tmp_path):
    a = tiny_state(1, prefix="segformer.encoder.")
    b = tiny_state(2, prefix="backbone.", head_classes=9)
    save_file(a, tmp_path / "a.safetensors")
    torch.save({"state_dict": b, "meta": {}}, tmp_path / "hrda.pth")
    r = run("plan", tmp_path / "hrda.pth", tmp_path / "a.safetensors")
    assert "--rename '1:^segformer\\.encoder\\.=backbone.'" in r.output
    r = run("merge", tmp_path / "hrda.pth", tmp_path / "a.safetensors", "-o", tmp_path / "m.pth",
            "--rename", "1:^segformer\\.encoder\\.=backbone.", "--ramp-start", "1")  # fmt: skip
    assert r.exit_code == 0, r.output
    m = load_checkpoint(tmp_path / "m.pth")
    assert torch.equal(m["head.weight"], b["head.weight"])
    assert torch.allclose(
        m["backbone.stem.conv.weight"], (a["segformer.encoder.stem.conv.weight"] + b["backbone.stem.conv.weight"]) / 2
    )


@pytest.mark.parametrize(
    "method, extra", [("ties", ["--density", "0.5"]), ("dare", ["--drop-rate", "0.5"]), ("task-arithmetic", [])]
)
def test_task_vector_methods_from_the_cli(ckpts, method, extra):
    r = run("merge", ckpts / "gta.pth", ckpts / "synthia.pth", "-o", ckpts / "tv.pth", "-m", method,
            "--base", ckpts / "base.pth", *extra)  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "base:" in run("recipe", ckpts / "tv.pth").output


def cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "segmerge", *map(str, args)], cwd=cwd, capture_output=True, text=True)


@pytest.mark.parametrize(
    "case",
    ["missing", "truncated", "not_a_checkpoint", "output_is_input", "exists", "recipe_field", "nan", "unsafe"],
)
def test_bad_input_is_one_line_nonzero_and_leaves_nothing(ckpts, case):
    gta, syn = ckpts / "gta.pth", ckpts / "synthia.pth"
    args = ["merge", gta, syn, "-o", ckpts / "out.pth"]
    expect = None
    if case == "missing":
        args[2] = ckpts / "nope.pth"
        expect = "nope.pth: no such file"
    elif case == "truncated":
        data = syn.read_bytes()
        (ckpts / "cut.pth").write_bytes(data[: len(data) // 3])
        args[2] = ckpts / "cut.pth"
        expect = "cut.pth"
    elif case == "not_a_checkpoint":
        (ckpts / "notes.pth").write_text("hello")
        args[2] = ckpts / "notes.pth"
        expect = "notes.pth: is a text file (it starts with 'hello'), not a PyTorch checkpoint"
    elif case == "output_is_input":
        args[-1] = syn
        expect = "is (or contains) the input"
    elif case == "exists":
        (ckpts / "out.pth").write_text("keep me")
        expect = "already exists; pass --overwrite"
    elif case == "recipe_field":
        (ckpts / "r.yaml").write_text(f"models: [{gta}, {syn}]\nramp_start: 0.3\n")
        args = ["merge", "--recipe", ckpts / "r.yaml", "-o", ckpts / "out.pth"]
        expect = "field 'ramp_start': unknown field"
    elif case == "nan":
        state = torch.load(syn, weights_only=True)
        state["block.0.fc1.weight"][0, 0] = float("inf")
        torch.save(state, ckpts / "inf.pth")
        args[2] = ckpts / "inf.pth"
        expect = "inf.pth: tensor 'block.0.fc1.weight' holds 1 NaN/Inf"
    elif case == "unsafe":
        torch.save({"state_dict": tiny_state(1), "x": Evil()}, ckpts / "evil.pth")
        args[2] = ckpts / "evil.pth"
        expect = "--trust-pickle"
    before = {p.name: sha256(p) for p in ckpts.iterdir()}
    p = cli(*args, cwd=ckpts)
    assert p.returncode != 0
    assert expect in p.stderr, p.stderr
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert {q.name: sha256(q) for q in ckpts.iterdir()} == before  # nothing written, nothing changed


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_recipe_cannot_be_mixed_with_flags(ckpts):
    (ckpts / "r.yaml").write_text(f"models: [{ckpts / 'gta.pth'}, {ckpts / 'synthia.pth'}]\n")
    p = cli("merge", "--recipe", ckpts / "r.yaml", "--anchor", "1", "-o", ckpts / "o.pth", cwd=ckpts)
    assert p.returncode == 2 and "--anchor cannot be combined with --recipe" in p.stderr
    assert not (ckpts / "o.pth").exists()


def test_rename_flag_must_be_well_formed(ckpts):
    p = cli("plan", ckpts / "gta.pth", ckpts / "synthia.pth", "--rename", "backbone=x", cwd=ckpts)
    assert p.returncode == 2 and "expected MODEL:PATTERN=REPLACEMENT" in p.stderr


def test_help_lists_the_commands():
    r = run("--help")
    for command in ("plan", "merge", "recipe"):
        assert command in r.output

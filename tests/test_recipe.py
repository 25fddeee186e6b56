"""Recipes: validated with errors that name the field, and reproducible."""

from __future__ import annotations

from pathlib import Path

import pytest

from segmerge.errors import RecipeError
from segmerge.recipe import Recipe


def test_defaults_are_filled_in_and_round_trip():
    r = Recipe.from_yaml("models: [a.pth, b.pth]\n")
    assert r.method == "layerwise"
    assert r.parameters == {"ramp_start": 0.5, "end_weight": 0.75, "ramp": "linear"}
    again = Recipe.from_yaml(r.to_yaml())
    assert again == r and again.to_yaml() == r.to_yaml()


def test_full_recipe(tmp_path):
    text = """
models:
  - path: hrda.pth
  - path: segformer/
    weight: 2.0
    rename:
      - {pattern: '^segformer\\.encoder\\.', replace: 'backbone.'}
  - path: c.safetensors
anchor: 0
method: layerwise
parameters: {ramp_start: 0.25, end_weight: 0.9, ramp: cosine}
overrides:
  - {pattern: '^decode_head\\.', keep: true}
  - {pattern: 'norm', weights: [1, 1, 0]}
output: m.pth
"""
    path = tmp_path / "r.yaml"
    path.write_text(text)
    r = Recipe.from_file(path)
    assert r.renames()[1][0].pattern == r"^segformer\.encoder\."
    assert r.model_weights() == [None, 2.0, None]
    assert [o.keep for o in r.plan_overrides()] == [True, False]


@pytest.mark.parametrize(
    "text, field",
    [
        ("models: [a.pth, b.pth]\nmethd: linear\n", "methd"),
        ("models: [a.pth, b.pth]\nparameters: {ramp_strat: 0.3}\n", "ramp_strat"),
        ("models: [a.pth, b.pth]\nparameters: {ramp_start: 1.5}\n", "ramp_start"),
        ("models: [a.pth, b.pth]\nparameters: {ramp: zigzag}\n", "ramp"),
        ("models: [a.pth]\n", "models"),
        ("models: [a.pth, b.pth]\nanchor: 2\n", "anchor"),
        ("models: [a.pth, b.pth]\nmethod: soup\n", "soup"),
        ("models: [{path: a.pth, weight: 1}, b.pth]\n", "anchor"),
        ("models: [a.pth, {path: b.pth, rename: [{pattern: '(', replace: x}]}]\n", "rename"),
        ("models: [a.pth, b.pth]\noverrides: [{pattern: x, weights: [1]}]\n", "2 models"),
        ("models: [a.pth, b.pth]\nmethod: ties\n", "base"),
        ("- just a list\n", "mapping"),
        ("models: [a.pth, b.pth\n", "YAML"),
    ],
)
def test_bad_recipes_name_the_problem(text, field):
    with pytest.raises(RecipeError, match=field):
        Recipe.from_yaml(text, "r.yaml")


def test_an_unknown_field_points_to_the_docs_that_exist():
    with pytest.raises(RecipeError, match=r"docs/cli\.md#recipes") as caught:
        Recipe.from_yaml("models: [a.pth, b.pth]\nmethd: linear\n", "r.yaml")
    anchor = str(caught.value).split("docs/cli.md#")[1].rstrip(")")
    docs = (Path(__file__).parents[1] / "docs" / "cli.md").read_text()
    assert f"## {anchor.capitalize()}" in docs


def test_relative_paths_in_a_recipe_file_are_relative_to_its_folder(tmp_path, monkeypatch):
    import torch
    from tiny_models import tiny_state
    from typer.testing import CliRunner

    from segmerge.cli.app import app

    project = tmp_path / "project"
    (project / "ckpt").mkdir(parents=True)
    for i in (1, 2):
        torch.save(tiny_state(i), project / "ckpt" / f"{i}.pth")
    (project / "r.yaml").write_text("models: [ckpt/1.pth, ckpt/2.pth]\nmethod: linear\noutput: out/m.pth\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = CliRunner().invoke(app, ["merge", "-r", "../project/r.yaml"])
    assert result.exit_code == 0, result.output
    assert (project / "out" / "m.pth").is_file() and not (elsewhere / "out").exists()
    # -o stays relative to the working directory
    assert CliRunner().invoke(app, ["merge", "-r", "../project/r.yaml", "-o", "here.pth"]).exit_code == 0
    assert (elsewhere / "here.pth").is_file()
    # a missing model says what it was resolved against
    (project / "bad.yaml").write_text("models: [ckpt/1.pth, ckpt/3.pth]\n")
    result = CliRunner().invoke(app, ["merge", "-r", "../project/bad.yaml", "-o", "x.pth"])
    assert result.exit_code == 2
    assert "3.pth: no such file or folder ('ckpt/3.pth' is relative to the recipe's folder" in result.output


def test_a_tuned_recipe_beside_its_output_names_the_inputs_from_there(tmp_path, monkeypatch):
    import torch
    from tiny_models import tiny_state

    from segmerge import api
    from segmerge.checkpoints import load_checkpoint
    from segmerge.tuning.output import write_tuned

    monkeypatch.chdir(tmp_path)
    for i in (1, 2):
        torch.save(tiny_state(i), tmp_path / f"{i}.pth")
    written, recipe_file = write_tuned(api.make_recipe(["1.pth", "2.pth"]), "out/tuned.pth")
    saved = Recipe.from_file(recipe_file)
    assert [m.path for m in saved.models] == ["../1.pth", "../2.pth"]
    monkeypatch.chdir(tmp_path / "out")
    again = api.merge(Recipe.from_file("tuned.pth.recipe.yaml"))
    assert all(torch.equal(again[k], v) for k, v in load_checkpoint(tmp_path / written).items())

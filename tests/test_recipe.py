"""Recipes: validated with errors that name the field, and reproducible."""

from __future__ import annotations

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

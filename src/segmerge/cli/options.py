"""Turning CLI flags into recipe fields (shared by ``plan`` and ``merge``)."""

from __future__ import annotations

import re
from typing import Any

from segmerge.errors import RecipeError

BUILTIN_METHODS = ("dare", "layerwise", "linear", "task-arithmetic", "ties")
"""The merge methods segmerge ships, for ``--help``; written out so that the command line starts
without importing the methods (and torch). A test checks it against the methods' registry."""


def parse_rename(values: list[str] | None) -> dict[int, list[tuple[str, str]]]:
    """``N:PATTERN=REPL`` -> {N: [(PATTERN, REPL)]}; the first unescaped '=' splits."""
    out: dict[int, list[tuple[str, str]]] = {}
    for value in values or []:
        index, colon, rule = value.partition(":")
        split = re.search(r"(?<!\\)=", rule)
        if not colon or not index.strip().isdigit() or split is None:
            raise RecipeError(
                f"--rename {value!r}: expected MODEL:PATTERN=REPLACEMENT, e.g. '1:^backbone\\.=segformer.encoder.'"
            )
        pattern, replace = rule[: split.start()].replace("\\=", "="), rule[split.end() :]
        try:
            re.compile(pattern)
        except re.error as exc:
            raise RecipeError(f"--rename {value!r}: {pattern!r} is not a valid regular expression: {exc}") from None
        out.setdefault(int(index), []).append((pattern, replace))
    return out


def parse_weights(value: str | None) -> list[float | None] | None:
    """``0.3,0.7`` or ``-,1,2`` (``-`` leaves a model's weight to the method)."""
    if value is None:
        return None
    out: list[float | None] = []
    for part in value.split(","):
        part = part.strip()
        if part in ("-", ""):
            out.append(None)
            continue
        try:
            out.append(float(part))
        except ValueError:
            raise RecipeError(f"--weights {value!r}: {part!r} is not a number (use '-' to leave one unset)") from None
    return out


def recipe_options(
    *,
    anchor: int | None,
    method: str | None,
    base: str | None,
    weights: str | None,
    rename: list[str] | None,
    keep: list[str] | None,
    seed: int | None,
    **parameters: Any,
) -> dict[str, Any]:
    """The options given on the command line, as keyword arguments of :func:`segmerge.api.make_recipe`."""
    given = {
        "anchor": anchor,
        "method": method,
        "base": base,
        "weights": parse_weights(weights),
        "rename": parse_rename(rename) or None,
        "keep": keep or None,
        "seed": seed,
        **parameters,
    }
    return {k: v for k, v in given.items() if v is not None}

"""The recipe: everything that defines a merge, as a validated, reproducible file.

A recipe holds what the CLI flags hold. Every output embeds its recipe (without the
output path), so ``segmerge recipe OUTPUT > r.yaml; segmerge merge --recipe r.yaml -o X``
reproduces the output byte for byte.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from segmerge.errors import RecipeError
from segmerge.merging.keys import RenameRule
from segmerge.merging.methods import method_class
from segmerge.merging.plan import Override


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RenameSpec(_Strict):
    pattern: str = Field(description="regex matched against the donor's key names")
    replace: str = Field(description="replacement (re.sub syntax)")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return v


class ModelSpec(_Strict):
    path: str
    rename: list[RenameSpec] = Field(default_factory=list)
    weight: float | None = Field(None, description="donor share (layerwise), soup weight (linear) or task-vector scale")


class OverrideSpec(_Strict):
    pattern: str = Field(description="regex searched in the anchor's key names; first match wins")
    keep: bool = False
    weights: list[float] | None = None

    @model_validator(mode="after")
    def _one_of(self) -> OverrideSpec:
        re.compile(self.pattern)
        if self.keep == (self.weights is not None):
            raise ValueError("an override sets exactly one of 'keep: true' or 'weights: [...]'")
        return self


class Recipe(_Strict):
    models: list[ModelSpec] = Field(min_length=2)
    anchor: int = 0
    method: str = "layerwise"
    parameters: dict[str, Any] = Field(default_factory=dict)
    base: str | None = None
    overrides: list[OverrideSpec] = Field(default_factory=list)
    seed: int = 0
    output: str | None = None
    network: str | None = Field(
        None,
        description="in files that hold one network several times (UDA training files): which to merge - "
        "student (the default), teacher, imagenet, a key prefix, or 'all' for the whole file as one network",
    )
    keep_wrapper: bool = Field(False, description="write the other networks of a UDA training file too, unchanged")
    allow_few: bool = Field(False, description="write the merge even when (almost) nothing of the anchor is merged")
    order_from: int | None = Field(None, description="take layer order (depth) from this model's file order")
    #: The folder of the recipe file this was read from: its relative paths are relative to it.
    _folder: Path | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _consistent(self) -> Recipe:
        m = len(self.models)
        if not 0 <= self.anchor < m:
            raise ValueError(f"anchor {self.anchor} is not a model position (0..{m - 1})")
        cls = method_class(self.method)
        try:
            self.parameters = cls.Params(**self.parameters).model_dump(mode="json")
        except ValidationError as exc:
            raise ValueError(f"parameters of method {self.method!r}: {_first_error(exc)}") from None
        if cls.needs_base and self.base is None:
            raise ValueError(f"method {self.method!r} needs a base checkpoint (--base / base:)")
        if not cls.needs_base and self.base is not None:
            raise ValueError(f"method {self.method!r} takes no base; drop it or use a task-vector method")
        if not cls.anchor_takes_weight and self.models[self.anchor].weight is not None:
            raise ValueError(
                f"models[{self.anchor}] is the anchor: its weight comes from the depth schedule; "
                "give weights to the donors only"
            )
        if self.order_from is not None and not 0 <= self.order_from < m:
            raise ValueError(f"order_from {self.order_from} is not a model position (0..{m - 1})")
        if self.models[self.anchor].rename:
            raise ValueError(f"models[{self.anchor}] is the anchor: rename the donors onto its names instead")
        for o in self.overrides:
            if o.weights is not None and len(o.weights) != m:
                raise ValueError(f"override {o.pattern!r} gives {len(o.weights)} weights for {m} models")
        if any((mdl.weight or 0) < 0 for mdl in self.models) and not cls.needs_base:
            raise ValueError("model weights must be >= 0")
        return self

    # --- views used by the merge -------------------------------------------------
    def renames(self) -> dict[int, list[RenameRule]]:
        return {i: [RenameRule(r.pattern, r.replace) for r in m.rename] for i, m in enumerate(self.models) if m.rename}

    def model_weights(self) -> list[float | None]:
        return [m.weight for m in self.models]

    def plan_overrides(self) -> list[Override]:
        return [
            Override(o.pattern, o.keep, tuple(o.weights) if o.weights is not None else None) for o in self.overrides
        ]

    # --- paths --------------------------------------------------------------------
    @property
    def folder(self) -> Path | None:
        """The recipe file's folder, which its relative paths are relative to (None: the working directory)."""
        return self._folder

    def resolve(self, path: str) -> Path:
        """Where a path of this recipe (a model, the base, the output) points: as written when
        absolute or when the recipe did not come from a file, else relative to the file's folder."""
        given = Path(path).expanduser()
        return given if given.is_absolute() or self._folder is None else self._folder / given

    def where(self, path: str) -> str:
        """How :meth:`resolve` got there, for error messages."""
        if Path(path).expanduser().is_absolute() or self._folder is None:
            return ""
        return f" ({path!r} is relative to the recipe's folder, {self._folder}; see docs/cli.md#recipes)"

    def relative_to(self, folder: str | Path) -> Recipe:
        """This recipe with its relative paths rewritten for a recipe file saved in ``folder``."""
        folder = Path(folder)

        def rebase(path: str | None) -> str | None:
            if path is None or Path(path).expanduser().is_absolute() or path.startswith("<"):
                return path
            return os.path.relpath(self.resolve(path).absolute(), folder.absolute())

        models = [m.model_copy(update={"path": rebase(m.path)}) for m in self.models]
        copy = self.model_copy(update={"models": models, "base": rebase(self.base), "output": rebase(self.output)})
        copy._folder = folder
        return copy

    # --- files --------------------------------------------------------------------
    def to_yaml(self, with_output: bool = True) -> str:
        data = self.model_dump(mode="json", exclude_none=False)
        if not with_output:
            data.pop("output")
        for m in data["models"]:
            if not m["rename"]:
                m.pop("rename")
            if m["weight"] is None:
                m.pop("weight")
        if not data["overrides"]:
            data.pop("overrides")
        for name, default in (("network", None), ("keep_wrapper", False), ("allow_few", False), ("order_from", None)):
            if data[name] == default:
                data.pop(name)
        for o in data.get("overrides", []):
            if o["weights"] is None:
                o.pop("weights")
            if not o["keep"]:
                o.pop("keep")
        return yaml.safe_dump(data, sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str, source: str = "<recipe>") -> Recipe:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise RecipeError(f"{source}: not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise RecipeError(f"{source}: a recipe is a mapping with at least 'models'")
        return cls.validated(data, source)

    @classmethod
    def from_file(cls, path: str | Path) -> Recipe:
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise RecipeError(f"{path}: cannot read the recipe: {exc.strerror}") from None
        recipe = cls.from_yaml(text, str(path))
        recipe._folder = path.parent
        return recipe

    @classmethod
    def validated(cls, data: dict, source: str = "<recipe>") -> Recipe:
        if isinstance(data.get("models"), list):
            data = {**data, "models": [{"path": m} if isinstance(m, str) else m for m in data["models"]]}
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise RecipeError(f"{source}: {_first_error(exc)}") from None
        except RecipeError as exc:
            raise RecipeError(f"{source}: {exc}") from None


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "recipe"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown field; check the spelling (the fields: docs/cli.md#recipes)"
    extra = f" ({len(exc.errors()) - 1} more problems)" if len(exc.errors()) > 1 else ""
    return f"field '{where}': {msg}{extra}"

"""``segmerge plan``, ``segmerge merge`` and ``segmerge recipe``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from segmerge.cli.app import app, stderr, stdout, user_errors
from segmerge.cli.options import BUILTIN_METHODS, recipe_options
from segmerge.errors import RecipeError

# torch and the merge machinery are imported inside the commands, so that registering them
# (every ``segmerge`` start, ``segmerge score`` included) does not load torch.

Models = Annotated[list[str] | None, typer.Argument(help="checkpoints: .pth/.pt/.bin, .safetensors, HF folders")]
Anchor = Annotated[int | None, typer.Option("--anchor", help="0-based position of the anchor [default: 0]")]
Method = Annotated[str | None, typer.Option("--method", "-m", help=f"one of {', '.join(BUILTIN_METHODS)}")]
RampStart = Annotated[float | None, typer.Option("--ramp-start", help="layerwise: t0, depth where the ramp starts")]
EndWeight = Annotated[float | None, typer.Option("--end-weight", help="layerwise: anchor weight at the last layer")]
Ramp = Annotated[str | None, typer.Option("--ramp", help="layerwise: linear, cosine or step")]
Weights = Annotated[str | None, typer.Option("--weights", help="per model, comma-separated ('-' = unset)")]
Base = Annotated[str | None, typer.Option("--base", help="shared base checkpoint (task-vector methods)")]
Scaling = Annotated[float | None, typer.Option("--scaling", help="task vectors: lambda")]
Density = Annotated[float | None, typer.Option("--density", help="ties: fraction of each task vector kept")]
DropRate = Annotated[float | None, typer.Option("--drop-rate", help="dare: drop probability")]
Consensus = Annotated[str | None, typer.Option("--consensus", help="dare: sum or ties")]
Election = Annotated[
    str | None, typer.Option("--election", help="ties, dare --consensus ties: sign election, sum or count")
]
Normalize = Annotated[
    bool | None,
    typer.Option(
        "--normalize/--no-normalize", help="ties/dare: divide by the agreeing weights' sum (ties: on, dare: off)"
    ),
]
Rename = Annotated[list[str] | None, typer.Option("--rename", help="N:PATTERN=REPL, maps donor N's keys (repeatable)")]
Keep = Annotated[list[str] | None, typer.Option("--keep", help="REGEX: keys kept from the anchor (repeatable)")]
Seed = Annotated[int | None, typer.Option("--seed", help="seed for random methods (dare)")]
Network = Annotated[
    str | None,
    typer.Option(
        "--network",
        help="files holding one network several times (UDA training files): student (default), teacher, "
        "imagenet, a key prefix, or all",
    ),
]
KeepWrapper = Annotated[
    bool, typer.Option("--keep-wrapper", help="UDA training files: write the anchor's other networks too")
]
OrderFrom = Annotated[
    int | None, typer.Option("--order-from", help="take layer order (depth) from model N's key order")
]
AllowFew = Annotated[
    bool, typer.Option("--allow-few", help="write the merge even if (almost) nothing of the anchor is merged")
]
RecipeFile = Annotated[Path | None, typer.Option("--recipe", "-r", help="a recipe YAML file")]
TrustPickle = Annotated[
    bool,
    typer.Option("--trust-pickle", help="DANGEROUS: unpickle .pth files that could run code; only for trusted files"),
]


RECIPE_FLAGS = (
    "anchor", "method", "base", "weights", "rename", "keep", "seed",
    "ramp_start", "end_weight", "ramp", "scaling", "density", "drop_rate", "consensus", "election", "normalize",
    "network", "keep_wrapper", "order_from", "allow_few",
)  # fmt: skip
BOOL_FLAGS = ("keep_wrapper", "allow_few")


def _recipe(models, recipe_file, given: dict):
    """The recipe the command runs: from --recipe, or from the models and the recipe flags."""
    from segmerge import api

    options = recipe_options(**{k: (given.get(k) or None) if k in BOOL_FLAGS else given.get(k) for k in RECIPE_FLAGS})
    if recipe_file is not None:
        if models or options:
            given = ", ".join(["MODELS"] * bool(models) + [f"--{k.replace('_', '-')}" for k in options])
            raise RecipeError(f"{recipe_file}: {given} cannot be combined with --recipe; edit the recipe instead")
        return api.make_recipe(recipe_file)
    if not models or len(models) < 2:
        raise RecipeError("give at least two models to merge (or --recipe FILE)")
    return api.make_recipe(models, **options)


@app.command()
@user_errors
def plan(
    models: Models = None,
    anchor: Anchor = None,
    method: Method = None,
    ramp_start: RampStart = None,
    end_weight: EndWeight = None,
    ramp: Ramp = None,
    weights: Weights = None,
    base: Base = None,
    scaling: Scaling = None,
    density: Density = None,
    drop_rate: DropRate = None,
    consensus: Consensus = None,
    election: Election = None,
    normalize: Normalize = None,
    rename: Rename = None,
    keep: Keep = None,
    seed: Seed = None,
    network: Network = None,
    keep_wrapper: KeepWrapper = False,
    order_from: OrderFrom = None,
    recipe: RecipeFile = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the plan as JSON")] = False,
    check: Annotated[bool, typer.Option(help="read tensors to warn about unrelated layers")] = True,
    all_keys: Annotated[bool, typer.Option("--all-keys", help="list every unmatched key")] = False,
    trust_pickle: TrustPickle = False,
) -> None:
    """Show what a merge would do: every layer with its depth and weights, every key's fate."""
    from segmerge import api
    from segmerge.cli.plan_view import render_plan

    the_recipe = _recipe(models, recipe, locals())
    the_plan = api.plan(the_recipe, trust_pickle=trust_pickle, check_relatedness=check)
    if as_json:
        stdout.print_json(json.dumps(the_plan.to_dict()))
    else:
        render_plan(the_plan, stdout, all_keys)


@app.command()
@user_errors
def merge(
    models: Models = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="output: .pth, .safetensors or a folder")
    ] = None,
    anchor: Anchor = None,
    method: Method = None,
    ramp_start: RampStart = None,
    end_weight: EndWeight = None,
    ramp: Ramp = None,
    weights: Weights = None,
    base: Base = None,
    scaling: Scaling = None,
    density: Density = None,
    drop_rate: DropRate = None,
    consensus: Consensus = None,
    election: Election = None,
    normalize: Normalize = None,
    rename: Rename = None,
    keep: Keep = None,
    seed: Seed = None,
    network: Network = None,
    keep_wrapper: KeepWrapper = False,
    order_from: OrderFrom = None,
    allow_few: AllowFew = False,
    recipe: RecipeFile = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an existing output")] = False,
    dump_recipe: Annotated[bool, typer.Option("--dump-recipe", help="print the recipe that ran (YAML)")] = False,
    check: Annotated[bool, typer.Option(help="read a sample of the tensors to warn about unrelated layers")] = True,
    trust_pickle: TrustPickle = False,
) -> None:
    """Merge the models into one checkpoint (layer-wise by default, docs/method.md defaults)."""
    from segmerge import api
    from segmerge.merging.execute import single_threaded

    the_recipe = _recipe(models, recipe, locals())
    target = api.output_path(the_recipe, output)
    if target is None:
        raise RecipeError("no output: give -o/--output (or 'output:' in the recipe)")
    if output is not None:  # the recipe --dump-recipe prints names the output written
        the_recipe = the_recipe.model_copy(update={"output": str(output if recipe is None else output.absolute())})
    with single_threaded():  # the command owns the process: one thread per key is faster (execute.py)
        opened = api.open_merge(the_recipe, trust_pickle)
    for note in opened.plan.notes:
        stderr.print(f"[green]note:[/] {note}", highlight=False)
    for hint in opened.plan.hints:
        stderr.print(f"[cyan]hint:[/] {hint}", highlight=False)
    before = len(opened.plan.warnings)
    for warning in opened.plan.warnings:
        stderr.print(f"[yellow]warning:[/] {warning}", highlight=False)
    with single_threaded():  # the relatedness check reads the tensors the merge reads, as it reads them
        written = api.write_merge(opened, Path(target), overwrite, check_relatedness=check)
    for warning in opened.plan.warnings[before:]:
        stderr.print(f"[yellow]warning:[/] {warning}", highlight=False)
    counts = opened.plan.counts()
    stderr.print(
        f"wrote {written} ({counts.get('merged', 0)} keys merged in {len(opened.plan.layers)} layers, "
        f"{sum(counts.values()) - counts.get('merged', 0)} copied from the anchor)"
    )
    if dump_recipe:
        stdout.print(the_recipe.to_yaml(), end="", markup=False)


@app.command()
@user_errors
def convert(
    checkpoint: Annotated[str, typer.Argument(help="a checkpoint with a MiT encoder (SegFormer, DAFormer, HRDA, ...)")],
    output: Annotated[Path, typer.Argument(help="output: .pth, .safetensors or a folder (Hugging Face)")],
    to: Annotated[str, typer.Option("--to", help="layout to write: hf, mmseg (0.x, DAFormer's) or mmseg1")],
    network: Network = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an existing output")] = False,
    trust_pickle: TrustPickle = False,
) -> None:
    """Write a MiT encoder (and SegFormer MLP head) in another framework's key layout, exactly."""
    from segmerge import api

    written, layout, unchanged = api.convert(checkpoint, output, to, trust_pickle, network, overwrite)
    stderr.print(f"wrote {written} ({layout} -> {to})", highlight=False)
    if unchanged:
        shown = ", ".join(unchanged[:6]) + (f" and {len(unchanged) - 6} more" if len(unchanged) > 6 else "")
        stderr.print(
            f"[yellow]warning:[/] {len(unchanged)} tensors are not part of the MiT encoder or of a SegFormer head "
            f"the {to} layout names, and were written under their own names (another head?): {shown}",
            highlight=False,
        )


@app.command("recipe")
@user_errors
def show_recipe(
    checkpoint: Annotated[str, typer.Argument(help="an output segmerge wrote")],
    provenance: Annotated[
        bool, typer.Option("--provenance", help="print versions and input hashes too (JSON)")
    ] = False,
) -> None:
    """Print the recipe a segmerge output was made with (pass it to `merge --recipe` to reproduce it)."""
    from segmerge.checkpoints import open_checkpoint

    found = open_checkpoint(checkpoint).provenance()
    if not found:
        raise RecipeError(f"{checkpoint}: holds no segmerge recipe (was it written by segmerge merge?)")
    if provenance:
        stdout.print_json(json.dumps(found))
    else:
        stdout.print(found["recipe"], end="", markup=False)

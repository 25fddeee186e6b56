"""``segmerge tune``: choose (``--search grid``) or learn (``--learn``) the merge from unlabelled target images."""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from segmerge.cli.app import app, stderr, user_errors
from segmerge.cli.options import parse_rename
from segmerge.errors import SegmergeError

DEFAULT_IMAGES = 64
DEFAULT_STEPS = 100

# segmerge.tuning (and torch) is imported when the command runs, not when it is registered, so
# these choices are written out here; a test checks them against SELECTION_RULES, LOSSES and
# DEFAULT_CRITERION in segmerge.tuning.
SELECTION_RULES = ("entropy", "agreement", "consistency", "rank")
LOSSES = ("entropy", "distill", "both")
DEFAULT_CRITERION = "agreement"

# The choices as typer enums, so that --help lists them and typer refuses other values (exit 2).
SearchMode = Enum("SearchMode", {"grid": "grid"}, type=str)
Criterion = Enum("Criterion", {name: name for name in SELECTION_RULES}, type=str)
Loss = Enum("Loss", {name: name for name in LOSSES}, type=str)


def _size(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    found = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*", value)
    if not found:
        raise SegmergeError(f"--size {value!r}: expected HxW, e.g. 512x1024")
    return int(found[1]), int(found[2])


@app.command()
@user_errors
def tune(
    models: Annotated[list[str], typer.Argument(help="checkpoints to merge (HF folders, .pth, .safetensors)")],
    target_images: Annotated[
        str,
        typer.Option("--target-images", help="unlabelled target images: a folder, or a data set spec (KIND:ARG)"),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="the merged checkpoint (recipe: OUT.recipe.yaml)")],
    model: Annotated[
        str | None, typer.Option("--model", help="FILE.py:function or module:function building a model from a path")
    ] = None,
    report: Annotated[
        Path | None, typer.Option("--report", help="write tune.md and tune.json to this folder (replaced whole)")
    ] = None,
    search_mode: Annotated[
        SearchMode | None, typer.Option("--search", help="score candidate recipes (the default mode)")
    ] = None,
    learn_mode: Annotated[bool, typer.Option("--learn", help="learn per-layer merge weights by gradient")] = False,
    criterion: Annotated[
        Criterion, typer.Option("--criterion", help="search: the rule that picks the candidate")
    ] = Criterion(DEFAULT_CRITERION),
    loss: Annotated[Loss, typer.Option("--loss", help="learn: the loss on the target images")] = Loss("distill"),
    budget: Annotated[
        int | None,
        typer.Option("--budget", help=f"learn: steps [{DEFAULT_STEPS}]; search: images scored [--images]"),
    ] = None,
    images: Annotated[
        int, typer.Option("--images", help="target images read (a seeded random subset)")
    ] = DEFAULT_IMAGES,
    size: Annotated[str | None, typer.Option("--size", help="resize target images to HxW")] = None,
    anchor: Annotated[int, typer.Option("--anchor", help="0-based position of the anchor")] = 0,
    rename: Annotated[
        list[str] | None,
        typer.Option(
            "--rename",
            help="N:PATTERN=REPL, maps model N's keys onto the anchor's when N is a donor (repeatable); "
            "rules for every model let --search grid try each model as anchor",
        ),
    ] = None,
    adabn: Annotated[
        bool, typer.Option("--adabn", help="re-estimate BatchNorm statistics on the target images")
    ] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", help="images per forward pass / step")] = 8,
    lr: Annotated[float, typer.Option("--lr", help="learn: Adam learning rate on the weight logits")] = 0.05,
    seed: Annotated[int, typer.Option("--seed", help="seeds image choice, augmentation and learning")] = 0,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:1, ...")] = "cpu",
    amp: Annotated[bool, typer.Option("--amp", help="mixed precision (bfloat16 autocast)")] = False,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite", help="replace an existing output, and a --report folder segmerge tune did not write"
        ),
    ] = False,
) -> None:
    """Choose or learn the merge on unlabelled target images; write it, its recipe and a report."""
    from segmerge.evaluation.prediction import InferenceConfig
    from segmerge.tuning import TuningModels, learn, load_images, search, write_result

    if learn_mode and search_mode is not None:
        raise SegmergeError("--search and --learn are two modes; give one")
    if len(models) < 2:
        raise SegmergeError("give at least two models to merge")
    if output.exists() and not overwrite:
        raise SegmergeError(f"{output}: already exists; pass --overwrite to replace it")
    if report is not None:
        from segmerge.checkpoints.atomic import claim_folder

        claim_folder(report, "tune", overwrite)
    inference = InferenceConfig(device=device, amp=amp, batch_size=batch_size)  # checks --device before any work
    renames = parse_rename(rename) or None
    limit = budget if budget is not None and not learn_mode else images
    pixels = load_images(target_images, limit=limit, size=_size(size), seed=seed)
    opened = TuningModels.open(models, model, inference)
    stderr.print(f"tuning on {len(pixels)} target images of {tuple(pixels.shape[1:3])} (labels are not read)")
    if learn_mode:
        steps = budget if budget is not None else DEFAULT_STEPS
        result = learn(
            opened, pixels, anchor=anchor, rename=renames, loss=loss.value, steps=steps, batch_size=batch_size,
            lr=lr, seed=seed, adabn=adabn, progress=True,
        )  # fmt: skip
        stderr.print(
            f"learned {len(result.layer_weights)} layers' weights in {steps} steps: "
            f"{loss.value} loss {result.initial_loss:.4f} -> {result.final_loss:.4f}"
        )
    else:
        result = search(
            opened,
            pixels,
            anchor=anchor,
            rename=renames,
            criterion=criterion.value,
            adabn=adabn,
            seed=seed,
            progress=True,
        )
        chosen = result.chosen
        stderr.print(
            f"chose '{chosen.candidate.name}' of {len(result.rows)} candidates by {criterion.value} "
            f"(agreement {chosen.agreement:.2f}, consistency {chosen.consistency:.2f}, entropy {chosen.entropy:.4f})"
        )
    for note in result.notes:
        stderr.print(f"note: {note}")
    written, recipe_file = write_result(result, output, overwrite, report)
    stderr.print(f"wrote {written} and its recipe {recipe_file}" + (f"; report in {report}" if report else ""))

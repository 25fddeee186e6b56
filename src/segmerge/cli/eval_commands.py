"""``segmerge eval`` (run models on a dataset) and ``segmerge score`` (score files on disk)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperCommand

from segmerge.cli.app import app, stderr, stdout, user_errors
from segmerge.errors import SegmergeError


def _size(value: str, flag: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in value.lower().split("x"))
        return h, w
    except ValueError:
        raise SegmergeError(f"{flag} {value!r}: expected HEIGHTxWIDTH, e.g. 512x1024") from None


def _print_json(obj) -> None:
    def clean(o):
        if isinstance(o, float) and math.isnan(o):
            return None
        if isinstance(o, dict):
            return {k: clean(v) for k, v in o.items()}
        if isinstance(o, list):
            return [clean(v) for v in o]
        return o

    stdout.print(json.dumps(clean(obj), indent=2), markup=False, highlight=False)


ENSEMBLE_VALUE = re.compile(r"all|\d+(,\d+)*")


class EnsembleOption(TyperCommand):
    """``--ensemble`` alone (every model) or with the models' positions (``--ensemble 1,2``):
    typer has no option whose value may be left out, so the arguments are read here first."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        out: list[str] = []
        rest = list(args)
        while rest:
            arg = rest.pop(0)
            if arg == "--":
                out += [arg, *rest]
                break
            if arg == "--ensemble":
                value = rest.pop(0) if rest and ENSEMBLE_VALUE.fullmatch(rest[0]) else "all"
                arg = f"--ensemble={value}"
            out.append(arg)
        return super().parse_args(ctx, out)


def _ensemble(value: str | None) -> bool | tuple[int, ...]:
    if value is None:
        return False
    if value == "all":
        return True
    if not ENSEMBLE_VALUE.fullmatch(value):
        raise SegmergeError(f"--ensemble {value!r}: give model positions such as 1,2 (0-based), or nothing for all")
    return tuple(int(v) for v in value.split(","))


@app.command("eval", cls=EnsembleOption)
@user_errors
def evaluate_command(
    models: Annotated[list[str], typer.Argument(help="checkpoints or Hugging Face folders to evaluate")],
    data: Annotated[
        str, typer.Option("--data", help="cityscapes:ROOT | gta5:ROOT | synthia:ROOT | folder:images=DIR,labels=DIR")
    ],
    model_factory: Annotated[
        str | None, typer.Option("--model", help="FILE.py:function or module:function building a model from a path")
    ] = None,
    split: Annotated[str, typer.Option(help="dataset split")] = "val",
    num_classes: Annotated[int, typer.Option("--num-classes", help="classes of the protocol")] = 19,
    protocol: Annotated[
        list[str] | None,
        typer.Option("--protocol", help="extra mIoU over a class subset: synthia16, synthia13 (repeatable)"),
    ] = None,
    ensemble: Annotated[
        str | None,
        typer.Option(
            "--ensemble",
            metavar="[I,J,...]",
            help="also evaluate the average of the models' softmax: of all of them, or of those at "
            "0-based positions I,J,... (e.g. a merge and its inputs: eval merged a b --ensemble 1,2)",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="write results.json, results.md and plots to this folder (replaced whole)"),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="--out may replace a non-empty folder segmerge eval did not write")
    ] = False,
    mode: Annotated[
        str | None, typer.Option(help="inference: whole or slide [default: the model family's, else whole]")
    ] = None,
    crop: Annotated[str | None, typer.Option(help="slide: window HxW [default: the family's, else 512x1024]")] = None,
    stride: Annotated[str | None, typer.Option(help="slide: stride HxW [default: the family's, else 341x683]")] = None,
    scale: Annotated[
        str | None,
        typer.Option(help="rescale images to fit LONGxSHORT keeping the aspect ratio, or none [default: family's]"),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="windows per forward pass")] = 4,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1, ...")] = "cpu",
    amp: Annotated[
        bool, typer.Option("--amp", help="mixed precision (bfloat16; float16 on GPUs without bfloat16)")
    ] = False,
    limit: Annotated[int | None, typer.Option(help="evaluate the first N images only")] = None,
    qualitative: Annotated[int, typer.Option(help="images in the qualitative grid")] = 4,
    as_json: Annotated[bool, typer.Option("--json", help="print the results as JSON")] = False,
    panoptic: Annotated[
        bool, typer.Option("--panoptic", help="also PQ/SQ/RQ of panoptic models (needs panoptic ground truth)")
    ] = False,
    network: Annotated[
        str | None,
        typer.Option(help="which network of UDA training files: student (default), teacher, imagenet or a prefix"),
    ] = None,
    allow_unverified: Annotated[
        bool,
        typer.Option(
            "--allow-unverified", help="score a --model network even if the checkpoint's weights are not in it"
        ),
    ] = False,
) -> None:
    """Evaluate models (and their ensemble) on a labelled dataset: mIoU, per-class IoU, PQ, cost."""
    from segmerge.checkpoints.atomic import claim_folder, fresh_folder
    from segmerge.evaluation.prediction import InferenceConfig
    from segmerge.evaluation.runner import EvaluationConfig, evaluate_models
    from segmerge.labels import IGNORE_INDEX, class_names

    if out is not None:
        claim_folder(out, "eval", overwrite)  # before any work
    unset = {n for n, v in (("mode", mode), ("crop", crop), ("stride", stride), ("scale", scale)) if v is None}
    inference = InferenceConfig(
        mode or "whole", _size(crop or "512x1024", "--crop"), _size(stride or "341x683", "--stride"), batch_size,
        device, amp, scale=None if scale in (None, "none") else _size(scale, "--scale"),
    )  # fmt: skip
    config = EvaluationConfig(
        num_classes, class_names(num_classes), IGNORE_INDEX, tuple(protocol or ()), _ensemble(ensemble), qualitative,
        limit,
        panoptic=panoptic,
    )  # fmt: skip
    result = evaluate_models(models, data, config, inference, split, model_factory, unset, allow_unverified, network)
    if result is None:  # another process of a torchrun group: the main one reports
        return
    if out is not None:
        from segmerge.reports import write_report

        with fresh_folder(out, "eval", overwrite) as folder:
            written = write_report(result, folder)
        stderr.print(f"report written to {out} ({', '.join(p.name for p in written.values())})")
    if as_json:
        _print_json(result.to_dict() | {"models": [_row_json(r) for r in result.rows]})
    else:
        from segmerge.reports.tables import terminal_table

        stdout.print(terminal_table(result), markup=False, highlight=False, end="")
        where = f"{out}/results.md" if out is not None else "--out DIR (results.md) or --json"
        stdout.print(f"per-class scores and confusion matrices: {where}", markup=False, highlight=False)


def _row_json(row) -> dict:
    return {
        "name": row.name,
        "kind": row.kind,
        "parameters": row.parameters,
        "ms_per_image": row.ms_per_image,
        "cost": row.cost,
        **(row.semantic or {}),
        **({"panoptic": row.panoptic} if row.panoptic else {}),
        "confusion": row.confusion.tolist() if row.confusion is not None else None,
    }


@app.command("score")
@user_errors
def score_command(
    pred: Annotated[Path | None, typer.Option("--pred", help="semantic: folder of prediction PNGs (trainIds)")] = None,
    gt: Annotated[Path | None, typer.Option("--gt", help="semantic: folder of label PNGs")] = None,
    num_classes: Annotated[int, typer.Option("--num-classes")] = 19,
    ignore_index: Annotated[int, typer.Option("--ignore-index")] = 255,
    protocol: Annotated[
        list[str] | None, typer.Option("--protocol", help="extra mIoU over synthia16 / synthia13")
    ] = None,
    panoptic: Annotated[bool, typer.Option("--panoptic", help="score COCO panoptic files instead")] = False,
    gt_json: Annotated[Path | None, typer.Option("--gt-json")] = None,
    gt_dir: Annotated[Path | None, typer.Option("--gt-dir")] = None,
    pred_json: Annotated[Path | None, typer.Option("--pred-json")] = None,
    pred_dir: Annotated[Path | None, typer.Option("--pred-dir")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    workers: Annotated[
        int | None,
        typer.Option("--workers", help="processes reading and counting the images [default: all cores]", min=1),
    ] = None,
    engine: Annotated[
        str,
        typer.Option(
            "--engine", help="panoptic: numpy (segmerge's own) or hotcoco (optional package, faster; see docs)"
        ),
    ] = "numpy",
) -> None:
    """Score predictions on disk: mIoU of label PNGs, or PQ/SQ/RQ of COCO panoptic files.

    Reads the files in parallel (--workers) with numpy alone; the scores do not depend on the
    number of workers.
    """
    from segmerge.evaluation.scoring import keep_freed_memory, score_panoptic_folders, score_semantic_folders

    keep_freed_memory()  # this process is the command's: keep image buffers between images

    if panoptic:
        missing = [
            f
            for f, v in (
                ("--gt-json", gt_json),
                ("--gt-dir", gt_dir),
                ("--pred-json", pred_json),
                ("--pred-dir", pred_dir),
            )
            if v is None
        ]
        if missing:
            raise SegmergeError(f"--panoptic needs {', '.join(missing)}")
        semantic_only = [
            flag
            for flag, given in (
                ("--pred", pred is not None),
                ("--gt", gt is not None),
                ("--protocol", bool(protocol)),
                ("--num-classes", num_classes != 19),
                ("--ignore-index", ignore_index != 255),
            )
            if given
        ]
        if semantic_only:  # they would be ignored: the panoptic files carry their own categories and void
            raise SegmergeError(f"{', '.join(semantic_only)}: semantic scoring only; leave them out with --panoptic")
        summary = score_panoptic_folders(gt_json, gt_dir, pred_json, pred_dir, workers, engine).compute().as_dict()
    else:
        if pred is None or gt is None:
            raise SegmergeError("give --pred and --gt folders (or --panoptic with its files)")
        if engine != "numpy":
            raise SegmergeError(f"--engine {engine}: only --panoptic scoring has engines")
        from segmerge.evaluation.results import semantic_summary
        from segmerge.labels import class_names

        metric = score_semantic_folders(pred, gt, num_classes, list(class_names(num_classes)), ignore_index, workers)
        summary = semantic_summary(metric, tuple(protocol or ()))
    if as_json:
        _print_json(summary)
        return
    for key, value in summary.items():
        if isinstance(value, float):
            stdout.print(f"{key:>16}: {value:6.2f}")
    for row in summary.get("per_class", []):
        score = row.get("iou", row.get("pq"))
        stdout.print(
            f"{row['name']:>16}: {score:6.2f}"
            if score is not None and not math.isnan(score)
            else f"{row['name']:>16}:      -"
        )

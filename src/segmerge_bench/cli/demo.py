"""``segmerge demo``: the paper's three claims on the checkpoints shipped with segmerge, in under two minutes.

The shipped models come from the first seed of the built-in benchmark's full run (SegFormers
adapted from two synthetic source domains, a DAFormer-style model and a panoptic model, per
regime of domain shift the run covered). The demo merges them through the public API - the layer-wise merge with
the library's defaults and the uniform soup -, scores every model, the merges and the
output ensemble on freshly rendered target test images, and prints each claim beside the
paper's gain.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from segmerge.cli.app import stderr, stdout


def demo(
    out: Annotated[
        Path | None,
        typer.Option("--out", help="write the merged checkpoints and the report to this folder (replaced whole)"),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="--out may replace a non-empty folder segmerge demo did not write")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the claims as one JSON object")] = False,
    tune: Annotated[
        bool, typer.Option("--tune/--no-tune", help="also learn the merge from unlabelled target images (~20 s)")
    ] = True,
    test_images: Annotated[
        int | None, typer.Option("--test-images", help="target test images to score on (default: the run's)")
    ] = None,
) -> None:
    """Merge the shipped benchmark checkpoints and print the paper's claims beside ours."""
    from segmerge.checkpoints.atomic import claim_folder, fresh_folder
    from segmerge_bench.benchmark.shipping import run_demo

    if out is not None:
        claim_folder(out, "demo", overwrite)  # before any work
    start = time.perf_counter()
    log = (
        (lambda line: stderr.print(line, markup=False)) if as_json else (lambda line: stdout.print(line, markup=False))
    )
    if out is None:
        claims = run_demo(None, test_images, log, tune=tune)
    else:
        with fresh_folder(out, "demo", overwrite) as folder:  # this run only: replaces the folder whole
            claims = run_demo(folder, test_images, log, tune=tune)
    if as_json:
        print(json.dumps(claims, indent=1))
        return
    stdout.print()
    print_claims(claims)
    stdout.print(
        f"\ndone in {time.perf_counter() - start:.1f} s" + (f"; merges and report in {out}" if out is not None else "")
    )


def print_claims(claims: dict) -> None:
    header = (
        "claim",
        "regime",
        "metric",
        "best single",
        "uniform soup",
        "layer-wise",
        "learned",
        "ensemble (cost)",
        "gain",
        "paper's gain",
    )
    rows = [header]
    for claim in claims["claims"]:
        for regime, n in claim["by_regime"].items():
            rows.append(
                (
                    claim["name"],
                    regime,
                    claim["metric"] + (f" ({n['classes']} classes)" if n.get("classes", 19) != 19 else ""),
                    f"{n['best_single']:.1f}",
                    f"{n['uniform_soup']:.1f}",
                    f"{n['layerwise']:.1f}",
                    f"{n['tuned']:.1f}" if n.get("tuned") is not None else "-",
                    f"{n['ensemble']:.1f} ({n['ensemble_cost']}x)",
                    f"{n['gain']:+.1f}",
                    f"+{claim['paper_gain']}" if claim["paper_gain"] is not None else "-",
                )
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    stdout.print(
        "scores (%) on the synthetic target's test split in each claim's metric (PQ: the best single is the panoptic "
        "model); gain = layer-wise (default recipe) - best single model"
    )
    for k, row in enumerate(rows):
        cells = [c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        stdout.print("  ".join(cells), markup=False)
        if k == 0:
            stdout.print("  ".join("-" * w for w in widths), markup=False)
    print_regime(claims)


def print_regime(claims: dict) -> None:
    """The models behind the claims: each shipped model alone, and what the full run behind them
    measured over its seeds (the spread of the gain, the regime's preconditions)."""
    for regime, models in claims.get("models", {}).items():
        alone = ", ".join(f"{role} {value:.1f}" for role, value in models.items())
        stdout.print(f"{regime}: mIoU alone - {alone}", markup=False)
    full = claims.get("full_run") or {}
    for claim, regimes in full.get("claims", {}).items():
        for regime, numbers in regimes.items():
            gains = numbers.get("gains_per_seed") or []
            if gains:
                stdout.print(
                    f"full run, {claim} ({regime}): gain per seed "
                    + ", ".join(f"{g:+.1f}" for g in gains)
                    + f" (seeds {full.get('seeds')})",
                    markup=False,
                )
    for check in full.get("preconditions", []):
        verdict = "holds" if check["holds"] else "does NOT hold"
        stdout.print(f"regime {check['regime']}: {check['name']} {verdict} ({check['measured']})", markup=False)

"""``segmerge bench``: the built-in UDA benchmark, from synthetic data to the claims table."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from segmerge.cli.app import stderr, stdout


def bench(
    out: Annotated[Path, typer.Option("--out", help="folder for the cache, the merges and the report")] = Path(
        "segmerge-bench"
    ),
    quick: Annotated[
        bool, typer.Option("--quick", help="one seed, short training, small sweep, the shipped encoder (< 3 min)")
    ] = False,
    seed: Annotated[
        list[int] | None, typer.Option("--seed", help="training seed; repeat for several (default: 0 1 2, quick: 0)")
    ] = None,
    regime: Annotated[
        list[str] | None, typer.Option("--regime", help="appearance and/or classes (default: both)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the claims object as JSON on stdout")] = False,
    evaluation_reports: Annotated[
        bool | None,
        typer.Option(
            "--eval-reports/--no-eval-reports",
            help="write the per-claim evaluation reports (default: yes; --quick: no)",
        ),
    ] = None,
) -> None:
    """Train the synthetic benchmark's models, merge them every way, score and report (cached: reruns reuse)."""
    from dataclasses import replace

    from segmerge_bench.benchmark import FULL, QUICK, run_benchmark
    from segmerge_bench.benchmark.report import write_bench_report
    from segmerge_bench.benchmark.summary import claims_object, markdown_tables

    settings = QUICK if quick else FULL
    if seed:
        settings = settings.with_seeds(tuple(seed))
    if regime:
        settings = replace(settings, regimes=tuple(regime))
    result = run_benchmark(settings, out, log=lambda line: stderr.print(line, markup=False))
    command = "segmerge " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["bench"] else "segmerge bench"
    if evaluation_reports is None:
        evaluation_reports = settings.evaluation_reports
    write_bench_report(result, out / "report", command, evaluation_reports)
    if as_json:
        print(json.dumps(claims_object(result.runs), indent=1))
    else:
        stdout.print(markdown_tables(result.runs), markup=False)
    stderr.print(
        "measured times (s): "
        + ", ".join(f"{k} {v}" for k, v in result.timings.items())
        + f"\nreport: {out / 'report' / 'bench.md'}",
        markup=False,
    )

"""``segmerge bench``: the built-in UDA benchmark, from synthetic data to the claims table."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from segmerge.cli.app import stderr, stdout


def bench(
    out: Annotated[
        Path,
        typer.Option(
            "--out", help="folder for the cache, the merges and the report; a rerun reuses the cache of its own folder"
        ),
    ] = Path("segmerge-bench"),
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite", help="replace --out whole, cache included (needed for a folder bench did not write)"
        ),
    ] = False,
    quick: Annotated[
        bool, typer.Option("--quick", help="one seed, short training, small sweep, the shipped encoder (< 3 min)")
    ] = False,
    seed: Annotated[
        list[int] | None, typer.Option("--seed", help="training seed; repeat for several (default: 3 4 5, quick: 0)")
    ] = None,
    regime: Annotated[
        list[str] | None,
        typer.Option("--regime", help="appearance and/or classes (default: appearance; --quick: both)"),
    ] = None,
    pretrain: Annotated[
        bool,
        typer.Option(
            "--pretrain",
            help="pre-train the shared start from scratch (12000 + 12000 steps, about an hour on 2 cores) "
            "instead of using the shipped one",
        ),
    ] = False,
    jobs: Annotated[
        int | None,
        typer.Option(
            "--jobs",
            min=1,
            help="models trained side by side, one torch thread each (default 2; --quick: 1, one at a time)",
        ),
    ] = None,
    device: Annotated[
        str,
        typer.Option(
            "--device", help="where models train and are scored: cpu (the tested path), cuda or cuda:N; merges: cpu"
        ),
    ] = "cpu",
    size: Annotated[
        str,
        typer.Option(
            "--size",
            help="small: the tiny MiT, sized for 2 CPU cores; large: MiT-B0's shape pre-trained by the run, "
            "4x the steps and data, for a GPU (--device cuda; not yet run)",
        ),
    ] = "small",
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

    from segmerge.checkpoints.atomic import claim_folder
    from segmerge.errors import SegmergeError
    from segmerge_bench.benchmark import QUICK, run_benchmark
    from segmerge_bench.benchmark.report import write_bench_report
    from segmerge_bench.benchmark.settings import SIZES
    from segmerge_bench.benchmark.summary import claims_object, markdown_tables
    from segmerge_bench.training.devices import usable_device

    if size not in SIZES:
        raise SegmergeError(f"--size {size!r}: choose {' or '.join(SIZES)}")
    if quick and size != "small":
        raise SegmergeError(f"--quick is its own small run; leave out --size {size}")
    kind = usable_device(device, "--device").type
    state = claim_folder(out, "bench", overwrite)  # before any work
    settings = replace(QUICK if quick else SIZES[size], device=device)
    if size == "large" and kind == "cpu":
        stderr.print(
            "warning: --size large is sized for a GPU (--device cuda); on a CPU it trains for many hours "
            "(about 12 on 2 cores)",
            markup=False,
        )
    if seed:
        settings = settings.with_seeds(tuple(seed))
    if regime:
        settings = replace(settings, regimes=tuple(regime))
    if pretrain:
        settings = replace(settings, pretrain_from_scratch=True)
    if jobs is not None:
        settings = replace(settings, training_processes=jobs)
        warning = oversubscribed(jobs, os.cpu_count())
        if warning:
            stderr.print(warning, markup=False)
    command = "segmerge " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["bench"] else "segmerge bench"
    if evaluation_reports is None:
        evaluation_reports = settings.evaluation_reports

    def benchmark(folder: Path):
        return run_benchmark(settings, folder, log=lambda line: stderr.print(line, markup=False))

    def report(result, folder: Path) -> None:
        write_bench_report(result, folder, command, evaluation_reports)

    result = in_bench_folder(out, state, overwrite, benchmark, report)
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


def oversubscribed(jobs: int, cores: int | None) -> str | None:
    """A warning when ``--jobs`` asks for more side-by-side trainings (one thread each) than there are cores."""
    if cores is None or jobs <= cores:
        return None
    return (
        f"warning: --jobs {jobs} trains {jobs} models at once on {cores} CPU cores; they will compete for the "
        f"cores and the run will be slower, not faster (use --jobs {cores} or fewer)"
    )


def in_bench_folder(out: Path, state: str, overwrite: bool, benchmark, report):
    """Run the benchmark (``benchmark(folder)``, then ``report(result, report_folder)``) so that
    ``out`` holds this run only, and a rerun into a folder ``segmerge bench`` wrote reuses its cache.

    * A new folder, or one bench wrote (it holds bench's marker file), without ``--overwrite``:
      the run works in place. The previous run's merges and report go first; ``cache/``
      (rendered data and trained models, keyed by what made them) stays for reuse; the report
      is written to a temporary sibling of ``report/`` and renamed into place.
    * With ``--overwrite`` (required for any other non-empty folder): the run works in a
      temporary sibling that replaces ``out`` whole at the end, cache included.
    """
    from segmerge.checkpoints.atomic import atomic_folder, fresh_folder, mark_folder, remove

    if overwrite and state != "new":
        with fresh_folder(out, "bench", overwrite=True) as folder:
            result = benchmark(folder)
            report(result, folder / "report")
        return result
    out.mkdir(parents=True, exist_ok=True)
    mark_folder(out, "bench")
    for previous in ("merges", "report"):
        remove(out / previous)
    result = benchmark(out)
    with atomic_folder(out / "report") as folder:
        report(result, folder)
    return result

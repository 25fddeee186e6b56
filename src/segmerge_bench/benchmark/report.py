"""The benchmark report: ``bench.md`` (claims tables, timings, machine), ``bench.json``
(every run), ``claims.json``, the figures, and the evaluation report of the first seed's
models per regime and claim (per-class bars, confusion matrices, a qualitative grid)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from segmerge.checkpoints.atomic import atomic_file
from segmerge.reports.tables import generated_by
from segmerge_bench.benchmark.candidates import DEFAULT, SOUP
from segmerge_bench.benchmark.figures import (
    plot_anchor_weights,
    plot_layer_distances,
    plot_regime,
    plot_sweep,
    sweep_figure_name,
)
from segmerge_bench.benchmark.regime import preconditions, regime_table
from segmerge_bench.benchmark.runner import BenchResult
from segmerge_bench.benchmark.settings import TARGET
from segmerge_bench.benchmark.summary import claims_object, grouped, markdown_tables


def write_text(path: Path, text: str) -> Path:
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def write_bench_report(result: BenchResult, out: Path, command: str, evaluation_reports: bool = True) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = {"bench.json": write_text(out / "bench.json", json.dumps(result.to_dict(), indent=1) + "\n")}
    written["claims.json"] = write_text(out / "claims.json", json.dumps(claims_object(result.runs), indent=1) + "\n")
    figures = [plot_anchor_weights(result.runs, out / "anchor_weights.png")]
    regime_figure = plot_regime(result.regimes, out / "regime.png") if result.regimes else None
    distances = plot_layer_distances(result.runs, out / "layer_distances.png")
    if distances is not None:
        figures.append(distances)
    for (regime, claim), runs in grouped(result.runs).items():
        figure = plot_sweep(runs, out / sweep_figure_name(regime, claim))
        if figure is not None:
            figures.append(figure)
    if evaluation_reports:
        for (regime, claim), paths in result.first_seed_models.items():
            evaluation_report(paths, out / "evaluation" / regime / claim, result.settings)
    lines = [
        "# segmerge bench",
        "",
        f"Command: `{command}`. {generated_by()}.",
        f"Machine: {result.machine.get('platform')}, {result.machine.get('processor')}, "
        f"{result.machine.get('threads')} torch threads, torch {result.machine.get('torch')}.",
        "Timings (s): " + ", ".join(f"{k} {v}" for k, v in result.timings.items()) + ".",
        "",
        "mIoU over the 19 Cityscapes classes (for semantic-to-panoptic PQ, and the mIoU beside it, over the"
        " classes its panoptic model's source labels, scored on the whole ground truth and averaged over"
        " those classes, as EDAPS scores SYNTHIA: SYNTHIA's 16 for source B of the appearance regime) on the synthetic"
        f" target's held-out test split ({result.settings['test_images']} images)."
        " Mean ± sample standard deviation over seeds.",
        "",
        seeds_note(result.settings),
        "",
        *regime_section(result, regime_figure),
        markdown_tables(result.runs),
        "## Figures",
        "",
        *[f"![{f.stem}]({f.name})" for f in figures],
        "",
    ]
    if evaluation_reports:
        lines += [
            "Evaluation reports of the first seed's models: `evaluation/REGIME/CLAIM/results.md` (`segmerge eval`'s"
            " protocol: PQ over all 19 classes; mIoU also over SYNTHIA's 16 where a claim is scored over them).",
            "",
        ]
    written["bench.md"] = write_text(out / "bench.md", "\n".join(lines))
    return written


def seeds_note(settings: dict) -> str:
    """Which seeds the numbers come from, and whether any was used to choose the defaults."""
    seeds = list(settings["seeds"]) if "seeds" in settings else [settings.get("seed")]
    development = list(settings.get("development_seeds", []))
    chosen_on = sorted(set(seeds) & set(development))
    if chosen_on:
        return (
            f"Seeds {seeds}. **Seeds {chosen_on} were used to choose the method's defaults and the training "
            "settings, so these numbers are not a held-out test of those choices.**"
        )
    return f"Seeds {seeds}: held out (the defaults and training settings were chosen on seeds {development})."


def regime_section(result: BenchResult, figure: Path | None) -> list[str]:
    """The regime first: the four preconditions and the models behind them."""
    if not result.regimes:
        return []
    lines = [
        "## The regime",
        "",
        "Measured before any merge (see `segmerge_bench.benchmark.regime`); means over the seeds measured.",
        "",
        "| regime | precondition | measured | required | holds |",
        "|---|---|---|---|---|",
        *[
            f"| {c.regime} | {c.name} | {c.measured} | {c.required} | {'yes' if c.passed else '**no**'} |"
            for c in preconditions(result.regimes)
        ],
        "",
        regime_table(result.regimes),
        "",
    ]
    if figure is not None:
        lines += [f"![regime]({figure.name})", ""]
    return lines


def evaluation_report(paths: dict, folder: Path, settings: dict) -> None:
    """``segmerge eval``'s report for the two models, the soup, the default merge (and their
    ensemble) and the oracle, on the target test split; with PQ for a panoptic claim."""
    from segmerge.evaluation.runner import EvaluationConfig, evaluate
    from segmerge.labels import CITYSCAPES_CLASSES
    from segmerge.reports import write_report
    from segmerge.segmenters import load_segmenter
    from segmerge_bench.synthetic import SyntheticDataset

    dataset = SyntheticDataset(TARGET, n=settings["test_images"], seed=settings["data_seed"], split="test")
    names = ["model A", "model B"]
    segmenters = [load_segmenter(str(p), name=n) for p, n in zip(paths["models"], names, strict=True)]
    merges = [load_segmenter(str(paths["merges"][n]), name=n) for n in (SOUP, DEFAULT) if n in paths["merges"]]
    oracle = load_segmenter(str(paths["oracle"]), name="target oracle")
    config = EvaluationConfig(
        len(CITYSCAPES_CLASSES),
        tuple(CITYSCAPES_CLASSES),
        ensemble=True,
        qualitative=settings.get("qualitative", 4),
        progress=False,
        limit=settings.get("report_images"),
        panoptic=paths.get("metric") == "PQ",
        subsets=("synthia16",) if paths.get("classes") == 16 else (),
    )
    result = evaluate(segmenters, dataset, config, dataset_name=f"synthetic:{TARGET}", split="test")
    others = evaluate(
        [*merges, oracle], dataset, replace(config, ensemble=False), dataset_name=f"synthetic:{TARGET}", split="test"
    )
    result.rows = [*result.rows, *others.rows]
    for sample, extra in zip(result.qualitative, others.qualitative, strict=False):
        sample.predictions.update(extra.predictions)
    write_report(result, folder)

"""Evaluation reports: an :class:`~segmerge.evaluation.results.EvaluationResult` rendered into a folder.

``write_report(result, out_dir)`` writes ``results.json``, ``results.md`` and the figures
(per-class bars, one confusion matrix per model, a qualitative grid). Every file is written to
a temporary sibling first and renamed into place, so an interrupted run never leaves a
truncated report behind. Figures use matplotlib's Agg canvas only: no display is needed.
"""

from __future__ import annotations

from pathlib import Path

from segmerge.evaluation.results import EvaluationResult
from segmerge.reports.palette import colorize, colorize_instances
from segmerge.reports.tables import markdown_table, write_json, write_markdown

__all__ = ["colorize", "colorize_instances", "markdown_table", "write_report"]


def write_report(result: EvaluationResult, out_dir: Path) -> dict[str, Path]:
    """Write every report file for ``result`` into ``out_dir``; returns file name -> path.

    Figures come first so that ``results.md`` links only the ones that were written (a result
    with no confusion matrices or samples simply has fewer figures).
    """
    from segmerge.reports.plots import write_plots  # matplotlib: only when a report is written

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = write_plots(result, out_dir)
    # Summary charts first, then the examples, then one confusion matrix per row in row order.
    figures = sorted(written, key=lambda name: (not name.startswith("per_class"), name != "qualitative.png"))
    written["results.json"] = write_json(result, out_dir / "results.json")
    written["results.md"] = write_markdown(result, out_dir / "results.md", figures)
    return written

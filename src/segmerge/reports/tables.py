"""The numbers of an evaluation as files: ``results.json`` for machines, ``results.md`` for people.

The Markdown table puts every evaluated model (and the ensemble) on one row with its size,
speed and cost next to its scores, because a merge is only worth it if it matches the
ensemble's accuracy at one model's cost. The helpers that read scores out of a row also
serve the plots, so a chart never shows a value the table does not.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segmerge.checkpoints.atomic import atomic_file
from segmerge.evaluation.results import EvaluationResult, ModelScores

SEMANTIC = "semantic"
PANOPTIC = "panoptic"
#: The per-class score each task plots and tabulates.
PER_CLASS_KEY = {SEMANTIC: "iou", PANOPTIC: "pq"}
#: Summary columns per task: (header, key in the row's task dict).
SUMMARY_COLUMNS = {
    SEMANTIC: (("mIoU", "miou"), ("pixel acc", "pixel_accuracy")),
    PANOPTIC: (("PQ", "pq"), ("SQ", "sq"), ("RQ", "rq"), ("PQ_th", "pq_things"), ("PQ_st", "pq_stuff")),
}
MISSING = "-"


# --- reading scores -----------------------------------------------------------------------------


def tasks(result: EvaluationResult) -> list[str]:
    """The tasks (semantic, panoptic) that at least one row was scored on, in that order."""
    return [t for t in (SEMANTIC, PANOPTIC) if any(getattr(r, t) for r in result.rows)]


def number(value) -> float:
    """A score as a float; missing (None) or non-numeric becomes NaN, which every report shows as "-"."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def class_axis(result: EvaluationResult, task: str) -> list[str]:
    """Class names in display order: the result's, then any extra names the rows report."""
    names = list(result.class_names)
    for row in result.rows:
        for i, entry in enumerate((getattr(row, task) or {}).get("per_class") or ()):
            name = entry.get("name", names[i] if i < len(names) else str(i))
            if name not in names:
                names.append(name)
    return names


def per_class_scores(result: EvaluationResult, row: ModelScores, task: str) -> np.ndarray:
    """The row's per-class score (IoU or PQ) in percent, aligned to :func:`class_axis`; NaN if absent."""
    names = class_axis(result, task)
    values = np.full(len(names), math.nan)
    for i, entry in enumerate((getattr(row, task) or {}).get("per_class") or ()):
        name = entry.get("name", result.class_names[i] if i < len(result.class_names) else str(i))
        values[names.index(name)] = number(entry.get(PER_CLASS_KEY[task]))
    return values


def subset_names(result: EvaluationResult) -> list[str]:
    """Protocol subsets (e.g. the 16 and 13 classes shared with SYNTHIA) any row was scored on."""
    names: list[str] = []
    for row in result.rows:
        for name in (row.semantic or {}).get("subsets") or {}:
            if name not in names:
                names.append(name)
    return names


def subset_headers(names: Sequence[str]) -> dict[str, str]:
    """Column headers for protocol subsets: ``synthia16`` -> ``mIoU16``, as papers label them.

    The class count alone names the column unless two subsets share it; then the full name is
    kept (``mIoU (synthia16)``) so columns stay distinguishable.
    """
    counts = {name: re.search(r"(\d+)$", name) for name in names}
    clashes = Counter(m.group(1) for m in counts.values() if m)
    headers = {}
    for name, m in counts.items():
        if name.lower().startswith("miou"):
            headers[name] = name
        elif m and clashes[m.group(1)] == 1:
            headers[name] = f"mIoU{m.group(1)}"
        else:
            headers[name] = f"mIoU ({name})"
    return headers


# --- formatting ---------------------------------------------------------------------------------


def human_count(n) -> str:
    """Parameter counts as people quote them: 3.7M, 85.2M, 1.1B."""
    n = number(n)
    if not math.isfinite(n) or n <= 0:
        return MISSING
    for factor, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= factor:
            return f"{n / factor:.1f}{suffix}"
    return str(int(n))


def relative_cost(cost) -> str:
    """``1x`` for one model, ``3x`` for an ensemble of three."""
    cost = number(cost)
    return f"{cost:g}x" if math.isfinite(cost) else MISSING


def _fixed(value: float, decimals: int = 1) -> str:
    return f"{value:.{decimals}f}" if math.isfinite(value) else MISSING


def _cell_text(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


@dataclass
class Column:
    header: str
    cells: list[str]
    #: Scores are compared across rows and the best is bolded; size, speed and cost are not.
    score: bool = False
    #: One class's score (left out of the terminal table).
    per_class: bool = False


def _columns(result: EvaluationResult) -> list[Column]:
    rows = result.rows
    columns = [
        Column("model", [r.name for r in rows]),
        Column("kind", [r.kind for r in rows]),
        Column("params", [human_count(r.parameters) for r in rows]),
        Column("ms/image", [_fixed(number(r.ms_per_image)) for r in rows]),
        Column("cost", [relative_cost(r.cost) for r in rows]),
    ]
    both = len(tasks(result)) > 1
    for task in tasks(result):
        scores = [getattr(r, task) or {} for r in rows]
        for header, key in SUMMARY_COLUMNS[task]:
            columns.append(Column(header, [_fixed(number(s.get(key))) for s in scores], score=True))
        if task == SEMANTIC:
            for name, header in subset_headers(subset_names(result)).items():
                cells = [_fixed(number((s.get("subsets") or {}).get(name))) for s in scores]
                columns.append(Column(header, cells, score=True))
        per_class = [per_class_scores(result, r, task) for r in rows]
        prefix = "PQ " if both and task == PANOPTIC else ""
        for i, name in enumerate(class_axis(result, task)):
            cells = [_fixed(values[i]) for values in per_class]
            columns.append(Column(prefix + name, cells, score=True, per_class=True))
    return columns


def _bold_best(cells: Sequence[str]) -> list[str]:
    """Bold the highest shown value; ties at the shown precision are all bolded.

    One value, or all values equal, is not a contest: nothing is bolded then.
    """
    shown = [float(c) for c in cells if c != MISSING]
    if len(set(shown)) < 2:
        return list(cells)
    best = max(shown)
    return [f"**{c}**" if c != MISSING and float(c) == best else c for c in cells]


def markdown_table(result: EvaluationResult) -> str:
    """The result as one Markdown table: a header, a separator, then one line per row.

    Scores are percent with one decimal, ``-`` where not available (NaN or not measured);
    the best value of each score column is bold.
    """
    columns = _columns(result)
    for column in columns:
        column.cells = [_cell_text(c) for c in column.cells]
        if column.score:
            column.cells = _bold_best(column.cells)
    lines = [
        "| " + " | ".join(_cell_text(c.header) for c in columns) + " |",
        "|" + "|".join("---" if i < 2 else "---:" for i in range(len(columns))) + "|",
    ]
    for i in range(len(result.rows)):
        lines.append("| " + " | ".join(c.cells[i] for c in columns) + " |")
    return "\n".join(lines) + "\n"


#: The terminal table's width: summary columns only, per-class scores go to the report.
TERMINAL_WIDTH = 100
#: Model names longer than this are shortened in the middle in the terminal table.
NAME_WIDTH = 32
#: Columns left out, in this order, while the terminal table is too wide.
DROPPABLE = ("kind", "pixel acc", "ms/image", "params", "SQ", "RQ")


def terminal_table(result: EvaluationResult, width: int = TERMINAL_WIDTH) -> str:
    """The result's summary for a terminal, at most ``width`` characters a line: one row per model
    with size, speed, cost and the summary scores (mIoU, protocol subsets, PQ...), no per-class
    columns (``--out`` writes them to ``results.md``, ``--json`` prints them). Columns of least
    interest go, then long model names are shortened in the middle, until it fits."""
    columns = [c for c in _columns(result) if not c.per_class]
    names = columns[0]
    names.cells = [_shorten(n, NAME_WIDTH) for n in names.cells]

    def line_width(cols: list[Column]) -> int:
        return sum(max(len(c.header), *(len(x) for x in c.cells)) for c in cols) + 2 * (len(cols) - 1)

    for header in DROPPABLE:
        if line_width(columns) <= width:
            break
        columns = [c for c in columns if c.header != header]
    others = line_width(columns[1:]) + 2 if len(columns) > 1 else 0
    names.cells = [_shorten(n, max(width - others, 12)) for n in names.cells]
    widths = [max(len(c.header), *(len(x) for x in c.cells)) for c in columns]
    lines = []
    for i in range(-1, len(result.rows)):
        cells = [c.header if i < 0 else c.cells[i] for c in columns]
        aligned = (x.ljust(w) if k == 0 else x.rjust(w) for k, (x, w) in enumerate(zip(cells, widths, strict=True)))
        lines.append("  ".join(aligned))
    lines = [line.rstrip() for line in lines]
    lines.insert(1, "-" * max(len(line) for line in lines))
    return "\n".join(lines) + "\n"


def _shorten(text: str, room: int) -> str:
    if len(text) <= room:
        return text
    keep = room - 1
    return text[: (keep + 1) // 2] + "…" + text[len(text) - keep // 2 :]


# --- files --------------------------------------------------------------------------------------


def generated_by() -> str:
    from segmerge._version import __version__

    return f"segmerge {__version__}"


def _json_ready(value):
    """Strict JSON: numpy scalars and arrays as Python values, NaN and infinities as null."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_ready(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def results_json(result: EvaluationResult) -> dict:
    """``result.to_dict()`` plus which segmerge wrote it, ready for strict JSON."""
    return _json_ready({**result.to_dict(), "generated_by": generated_by()})


def write_json(result: EvaluationResult, path: Path) -> Path:
    """``results.json``: every number of the evaluation, confusion matrices included."""
    text = json.dumps(results_json(result), indent=2, allow_nan=False) + "\n"
    with atomic_file(Path(path)) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def markdown_report(result: EvaluationResult, figures: Sequence[str] = ()) -> str:
    """``results.md``'s text: what was evaluated, the table, and links to the figures beside it."""
    title = " ".join(p for p in (result.dataset, result.split) if p) or "evaluation"
    facts = [f"{result.num_images} images"]
    if result.protocol:
        facts.append(f"protocol: {result.protocol}")
    facts.append("scores in %, best of each column in **bold**, `-` where not available")
    parts = [f"# Results: {title}", "", "; ".join(facts) + ".", "", markdown_table(result)]
    if figures:
        parts += ["## Figures", ""]
        for f in figures:
            parts += [f"![{Path(f).stem}]({f})", ""]
    parts += [f"<sub>Generated by {generated_by()}.</sub>", ""]
    return "\n".join(parts)


def write_markdown(result: EvaluationResult, path: Path, figures: Sequence[str] = ()) -> Path:
    """``results.md``: the table for people, linking figures given as paths relative to it."""
    with atomic_file(Path(path)) as tmp:
        tmp.write_text(markdown_report(result, figures), encoding="utf-8")
    return Path(path)

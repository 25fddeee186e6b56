"""The evaluation as figures: per-class scores side by side, confusion matrices, and examples.

Merging trades some classes against others; a per-class bar chart and each model's confusion
matrix show which, and the qualitative grid shows what that looks like on real images.

Figures are drawn on matplotlib's Agg canvas directly (``Figure`` + ``FigureCanvasAgg``),
never through ``pyplot``: no display is needed, and no global backend or figure state is
touched, so reports can be written from any process or thread.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from segmerge.checkpoints.atomic import atomic_file
from segmerge.evaluation.results import EvaluationResult, ModelScores, QualitativeSample
from segmerge.reports.palette import class_colors, colorize, colorize_instances
from segmerge.reports.tables import (
    PANOPTIC,
    SEMANTIC,
    SUMMARY_COLUMNS,
    class_axis,
    number,
    per_class_scores,
    tasks,
)

DPI = 110
GROUND_TRUTH = "ground truth"
SCORE_LABEL = {SEMANTIC: "IoU", PANOPTIC: "PQ"}


def _figure(width: float, height: float, **kwargs) -> Figure:
    fig = Figure(figsize=(width, height), **kwargs)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: Path) -> Path:
    """Write a PNG atomically: a half-written image never takes the place of a good one."""
    path = Path(path)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path


def safe_name(name: str) -> str:
    """A model name as a file-name part: letters, digits, ``.``, ``_`` and ``-`` only."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"


# --- per-class bars -----------------------------------------------------------------------------


def plot_per_class(result: EvaluationResult, path: Path, task: str = SEMANTIC) -> Path | None:
    """Grouped bars of per-class IoU (semantic) or PQ (panoptic), one colour per row.

    Returns None when no row has per-class scores for ``task``.
    """
    rows = [r for r in result.rows if (getattr(r, task) or {}).get("per_class")]
    if not rows:
        return None
    names = class_axis(result, task)
    values = [per_class_scores(result, r, task) for r in rows]
    group = 0.82
    width = group / len(rows)
    fig = _figure(min(30.0, max(8.0, len(names) * (0.3 + 0.1 * len(rows)))), 4.8, layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(names))
    colors = [_series_color(i) for i in range(len(rows))]
    summary_header, summary_key = SUMMARY_COLUMNS[task][0]
    for i, (row, v) in enumerate(zip(rows, values, strict=True)):
        # The legend quotes the row's reported summary (as in the table), not a mean recomputed here.
        summary = number(getattr(row, task).get(summary_key))
        label = f"{row.name} ({summary_header} {summary:.1f})" if math.isfinite(summary) else row.name
        ax.bar(x - group / 2 + (i + 0.5) * width, np.nan_to_num(v, nan=0.0), width, label=label, color=colors[i])
    ax.set_xticks(x, names, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_ylim(0, 100)
    ax.set_ylabel(f"{SCORE_LABEL[task]} (%)")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    title = " ".join(p for p in (result.dataset, result.split) if p)
    ax.set_title(f"Per-class {SCORE_LABEL[task]}" + (f": {title}" if title else ""))
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9)
    return save_figure(fig, path)


def _series_color(i: int) -> tuple[float, ...]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"] if i < 10 else colormaps["tab20"]
    return cmap(i % cmap.N)


# --- confusion ----------------------------------------------------------------------------------


def row_normalised(confusion: np.ndarray) -> np.ndarray:
    """Each ground-truth row divided by its total (per-class recall); rows with no pixels are NaN."""
    counts = np.asarray(confusion, dtype=np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, counts / totals, np.nan)


def plot_confusion(row: ModelScores, class_names: list[str], path: Path) -> Path:
    """One row's confusion matrix, row-normalised, with class names on both axes.

    Classes absent from the ground truth (NaN rows) are left blank rather than drawn as zeros.
    """
    matrix = row_normalised(row.confusion)
    n_rows, n_cols = matrix.shape
    y_names = class_names if len(class_names) == n_rows else [str(i) for i in range(n_rows)]
    x_names = class_names if len(class_names) == n_cols else [str(i) for i in range(n_cols)]
    # Fixed geometry instead of a layout engine: the engine would measure every cell's number
    # twice, which makes a 19-class matrix several times slower to draw.
    cell = max(0.2, min(0.4, 7.0 / max(n_rows, n_cols)))
    label = 0.07 * max(len(n) for n in [*x_names, *y_names])  # inches taken by the longest tick label
    left, bottom, top, right = label + 0.55, 0.55 * label + 0.55, 0.45, 1.3
    width, height = left + n_cols * cell + right, bottom + n_rows * cell + top
    fig = _figure(width, height)
    ax = fig.add_axes((left / width, bottom / height, n_cols * cell / width, n_rows * cell / height))
    cax = fig.add_axes(((left + n_cols * cell + 0.25) / width, bottom / height, 0.18 / width, n_rows * cell / height))
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks(np.arange(n_cols), x_names, rotation=45, ha="right", rotation_mode="anchor", fontsize=8)
    ax.set_yticks(np.arange(n_rows), y_names, fontsize=8)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    ax.set_title(f"{row.name}: confusion, row-normalised (recall)")
    if max(n_rows, n_cols) <= 30:
        for (i, j), v in np.ndenumerate(matrix):
            if math.isfinite(v) and v >= 0.005:
                color = "white" if v > 0.55 else "black"
                ax.text(j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=6, color=color)
    fig.colorbar(image, cax=cax, label="fraction of ground-truth pixels")
    return save_figure(fig, path)


# --- qualitative grid ---------------------------------------------------------------------------


def _ordered(keys: list[str], preferred: list[str]) -> list[str]:
    return [k for k in preferred if k in keys] + [k for k in keys if k not in preferred]


def _grid_columns(result: EvaluationResult) -> list[tuple[str, str, str]]:
    """(title, what, key) per column: image, ground truth, each prediction, then panoptic maps."""
    samples = result.qualitative
    row_names = [r.name for r in result.rows]
    predicted = list(dict.fromkeys(k for s in samples for k in s.predictions))
    panoptic = list(dict.fromkeys(k for s in samples for k in s.panoptic))
    columns = [("image", "image", ""), (GROUND_TRUTH, "label", "")]
    columns += [(name, "prediction", name) for name in _ordered(predicted, row_names)]
    columns += [(f"{name} (panoptic)", "panoptic", name) for name in _ordered(panoptic, [GROUND_TRUTH, *row_names])]
    return columns


def _cell(sample: QualitativeSample, what: str, key: str) -> np.ndarray | None:
    if what == "image":
        image = np.asarray(sample.image)
        return np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image
    if what == "label":
        return None if sample.label is None else colorize(sample.label)
    if what == "prediction":
        return None if key not in sample.predictions else colorize(sample.predictions[key])
    return None if key not in sample.panoptic else colorize_instances(sample.panoptic[key])


def plot_qualitative(result: EvaluationResult, path: Path, column_width: float = 2.6) -> Path | None:
    """One row per sample: image | ground truth | each model's prediction | panoptic maps.

    Each row's height follows its image's aspect ratio so nothing is stretched; a legend of the
    classes that appear explains the colours. Returns None when there are no samples.
    """
    samples = result.qualitative
    if not samples:
        return None
    columns = _grid_columns(result)
    column_width = min(column_width, 26.0 / len(columns))
    aspects = [np.asarray(s.image).shape[0] / max(1, np.asarray(s.image).shape[1]) for s in samples]
    heights = [column_width * a for a in aspects]
    legend = _class_legend(result)
    top, left, bottom = 0.35, 0.3, (0.25 + 0.22 * math.ceil(len(legend) / 8) if legend else 0.1)
    gap = 0.06
    width = left + len(columns) * column_width + (len(columns) - 1) * gap + 0.1
    height = top + sum(heights) + (len(samples) - 1) * gap + bottom
    fig = _figure(width, height)
    grid = fig.add_gridspec(
        len(samples),
        len(columns),
        height_ratios=heights,
        left=left / width,
        right=1 - 0.1 / width,
        top=1 - top / height,
        bottom=bottom / height,
        wspace=gap / column_width,
        hspace=gap / (sum(heights) / len(heights)),
    )
    for i, sample in enumerate(samples):
        for j, (title, what, key) in enumerate(columns):
            ax = fig.add_subplot(grid[i, j])
            ax.set_xticks([])
            ax.set_yticks([])
            picture = _cell(sample, what, key)
            if picture is None:
                ax.text(0.5, 0.5, "n/a", ha="center", va="center", transform=ax.transAxes, color="0.5")
                ax.set_facecolor("0.95")
            else:
                ax.imshow(picture, interpolation="nearest", aspect="auto")
            if i == 0:
                ax.set_title(title, fontsize=9)
            if j == 0:
                ax.set_ylabel(sample.name, fontsize=8)
    if legend:
        fig.legend(handles=legend, loc="lower center", ncol=8, fontsize=7, frameon=False, handlelength=1.2)
    return save_figure(fig, path)


def _class_legend(result: EvaluationResult) -> list[Patch]:
    """Swatches for the classes that appear in the grid's labels and predictions (ignore excluded)."""
    present: set[int] = set()
    for sample in result.qualitative:
        maps = [*sample.predictions.values(), *([sample.label] if sample.label is not None else [])]
        for m in maps:
            present.update(int(v) for v in np.unique(np.asarray(m)))
    present.discard(255)
    present.discard(result.ignore_index)
    ids = sorted(present)
    colors = class_colors(np.array(ids, dtype=np.int64)) if ids else np.zeros((0, 3), np.uint8)
    names = result.class_names
    return [
        Patch(facecolor=c / 255.0, edgecolor="0.4", linewidth=0.3, label=names[i] if 0 <= i < len(names) else str(i))
        for i, c in zip(ids, colors, strict=True)
    ]


# --- all figures --------------------------------------------------------------------------------


def write_plots(result: EvaluationResult, out_dir: Path) -> dict[str, Path]:
    """Every figure the result supports, written into ``out_dir``; file name -> path."""
    out_dir = Path(out_dir)
    written: dict[str, Path] = {}

    def keep(path: Path | None) -> None:
        if path is not None:
            written[path.name] = path

    task_list = tasks(result)
    for task in task_list:
        # One chart per task; the first task (semantic when there is one) keeps the plain name.
        suffix = "" if task == task_list[0] else f"_{SCORE_LABEL[task].lower()}"
        keep(plot_per_class(result, out_dir / f"per_class_bars{suffix}.png", task))
    used: set[str] = set()
    for row in result.rows:
        if row.confusion is None or np.asarray(row.confusion).ndim != 2:
            continue
        stem = base = f"confusion_{safe_name(row.name)}"
        k = 2
        while stem in used:  # two names that differ only in unsafe characters must not overwrite
            stem, k = f"{base}_{k}", k + 1
        used.add(stem)
        keep(plot_confusion(row, class_axis(result, SEMANTIC), out_dir / f"{stem}.png"))
    keep(plot_qualitative(result, out_dir / "qualitative.png"))
    return written

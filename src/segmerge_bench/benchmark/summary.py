"""Runs -> tables: mean and spread over seeds per regime and claim, and the claims object.

The claims object is what ``segmerge demo --json`` and ``segmerge bench --json`` print:
``{"claims": [{"name", "metric", "best_single", "uniform_soup", "layerwise", "ensemble",
"paper_gain", ...}]}``, scores in percent, in the claim's ``metric`` (mIoU; PQ for
``semantic-to-panoptic``, whose ``details`` add PQ things/stuff and the semantic output's
mIoU). Its top-level numbers are the appearance regime's (the GTA5/SYNTHIA -> Cityscapes
analogue the paper measures); ``by_regime`` holds every regime's.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from segmerge_bench.benchmark.candidates import DEFAULT, SOUP, SWEEP
from segmerge_bench.benchmark.claims import CLAIMS, PAPER_GAINS
from segmerge_bench.benchmark.experiments import ENSEMBLE_ROW, ClaimRun
from segmerge_bench.benchmark.scoring import MIOU, PQ

HEADLINE_REGIME = "appearance"


@dataclass
class Stat:
    """Scores over seeds; NaN (a score a model cannot have, e.g. a semantic model's PQ) is left out."""

    values: list[float]

    def __post_init__(self) -> None:
        self.values = [v for v in self.values if not math.isnan(v)]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values) if self.values else math.nan

    @property
    def std(self) -> float:
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0

    def text(self) -> str:
        if not self.values:
            return "n/a"
        return f"{self.mean:.1f} ± {self.std:.1f}" if len(self.values) > 1 else f"{self.mean:.1f}"


DETAILS = {PQ: ("PQ things", "PQ stuff", MIOU)}
"""The numbers beside a claim's metric in its table: for PQ, the semantic output's mIoU too."""


@dataclass
class Row:
    label: str
    stat: Stat
    cost: int = 1
    note: str = ""
    details: dict[str, Stat] | None = None


def _details(per_seed: Sequence[dict[str, float]], metric: str) -> dict[str, Stat]:
    return {name: Stat([d.get(name, math.nan) for d in per_seed]) for name in DETAILS.get(metric, ())}


def rows(runs: Sequence[ClaimRun]) -> list[Row]:
    """The table of one (regime, claim) over its seeds."""
    first = runs[0]
    metric = first.metric
    claim = next(c for c in CLAIMS if c.name == first.claim)

    def merge_row(label: str, name: str, note: str = "") -> Row:
        merges = [r.merge(name) for r in runs]
        return Row(
            label, Stat([m.score for m in merges]), note=note, details=_details([m.details for m in merges], metric)
        )

    out = [
        Row(
            f"{role} alone",
            Stat([r.singles[i] for r in runs]),
            details=_details([r.details.get(str(i), {}) for r in runs], metric),
        )
        for i, role in enumerate(claim.roles)
    ]
    out.append(Row("best single", Stat([r.best_single for r in runs])))
    out.append(merge_row(SOUP, SOUP))
    out.append(merge_row(f"**{DEFAULT}**", DEFAULT, "headline: no target labels"))
    out.append(
        Row(
            "output ensemble",
            Stat([r.ensemble for r in runs]),
            cost=len(first.models),
            details=_details([r.details.get(ENSEMBLE_ROW, {}) for r in runs], metric),
        )
    )
    best = [r.sweep_best for r in runs]
    picks = Counter(b.name for b in best).most_common(1)[0][0]
    out.append(
        Row(
            "sweep best (chosen with target labels)",
            Stat([b.score for b in best]),
            note=f"most often: {picks}",
            details=_details([b.details for b in best], metric),
        )
    )
    if first.label_free and "pick_score" in first.label_free:
        criterion = first.label_free["criterion"]
        out.append(
            Row(
                f"unsupervised pick ({criterion}, no target labels)",
                Stat([r.label_free["pick_score"] for r in runs]),
                note="most often: " + Counter(r.label_free["pick"] for r in runs).most_common(1)[0][0],
            )
        )
    if first.label_free:
        out.append(
            Row("learned per-layer weights (no target labels)", Stat([r.label_free["learned_score"] for r in runs]))
        )
    for name in first.controls:
        out.append(Row(name, Stat([r.controls[name] for r in runs if name in r.controls]), note="first seed only"))
    oracle = Stat([r.oracle for r in runs])
    if metric == MIOU:
        out.append(Row("target oracle (trained on target labels)", oracle, note="upper bound"))
    else:  # the oracle is a semantic model: its mIoU is the upper bound of the semantic column
        details = {name: oracle if name == MIOU else Stat([]) for name in DETAILS[metric]}
        out.append(
            Row(
                "target oracle (semantic, trained on target labels)", Stat([]), note="mIoU upper bound", details=details
            )
        )
    return out


def grouped(runs: Sequence[ClaimRun]) -> dict[tuple[str, str], list[ClaimRun]]:
    groups: dict[tuple[str, str], list[ClaimRun]] = {}
    for run in runs:
        groups.setdefault((run.regime, run.claim), []).append(run)
    return groups


def claim_numbers(runs: Sequence[ClaimRun]) -> dict:
    best = Stat([r.best_single for r in runs]).mean
    layerwise = Stat([r.merge(DEFAULT).score for r in runs]).mean
    swept = any(m.group == SWEEP for m in runs[0].merges)
    metric = runs[0].metric
    numbers = {
        "best_single": round(best, 2),
        "uniform_soup": round(Stat([r.merge(SOUP).score for r in runs]).mean, 2),
        "layerwise": round(layerwise, 2),
        "ensemble": round(Stat([r.ensemble for r in runs]).mean, 2),
        "ensemble_cost": len(runs[0].models),
        "sweep_best_with_target_labels": round(Stat([r.sweep_best.score for r in runs]).mean, 2) if swept else None,
        "oracle": round(Stat([r.oracle for r in runs]).mean, 2) if metric == MIOU else None,
        "gain": round(layerwise - best, 2),
        **label_free_numbers(runs),
        "seeds": sorted({r.seed for r in runs}),
        "classes": runs[0].class_count,
    }
    if len(runs) > 1:
        per_seed = {
            "best_single": [r.best_single for r in runs],
            "uniform_soup": [r.merge(SOUP).score for r in runs],
            "layerwise": [r.merge(DEFAULT).score for r in runs],
            "ensemble": [r.ensemble for r in runs],
            "gain": [r.merge(DEFAULT).score - r.best_single for r in runs],
        }
        numbers["spread"] = {key: round(Stat(values).std, 2) for key, values in per_seed.items()}
        numbers["gains_per_seed"] = [round(g, 2) for g in per_seed["gain"]]
    if metric in DETAILS:
        numbers["details"] = {
            row.label.strip("*"): {k: round(v.mean, 2) for k, v in row.details.items() if v.values}
            for row in rows(runs)
            if row.details
        }
    return numbers


def mean_correlations(runs: Sequence[ClaimRun]) -> dict[str, float]:
    names = runs[0].label_free.get("rank_correlation", {})
    out = {}
    for name in names:
        # Stat leaves out NaN: a criterion or the true score was constant over a seed's candidates.
        stat = Stat([r.label_free["rank_correlation"][name] for r in runs])
        out[name] = round(stat.mean, 2) if stat.values else None
    return out


def label_free_numbers(runs: Sequence[ClaimRun]) -> dict:
    if not runs[0].label_free:
        return {}
    if "pick_score" not in runs[0].label_free:  # the demo learns the merge but does not search
        return {"tuned": round(Stat([r.label_free["learned_score"] for r in runs]).mean, 2)}
    return {
        "unsupervised_pick": round(Stat([r.label_free["pick_score"] for r in runs]).mean, 2),
        "tuned": round(Stat([r.label_free["learned_score"] for r in runs]).mean, 2),
        "rank_correlation": mean_correlations(runs),
    }


def claims_object(runs: Sequence[ClaimRun], names: Sequence[str] | None = None) -> dict:
    groups = grouped(runs)
    claims = []
    for claim in CLAIMS:
        if names is not None and claim.name not in names:
            continue
        by_regime = {regime: claim_numbers(g) for (regime, name), g in groups.items() if name == claim.name}
        if not by_regime:
            continue
        headline = HEADLINE_REGIME if HEADLINE_REGIME in by_regime else next(iter(by_regime))
        claims.append(
            {
                "name": claim.name,
                "metric": claim.metric,
                "regime": headline,
                **by_regime[headline],
                "paper_gain": PAPER_GAINS.get(claim.name),
                "by_regime": by_regime,
            }
        )
    return {"claims": claims}


def markdown_tables(runs: Sequence[ClaimRun]) -> str:
    lines = []
    for (regime, name), group in grouped(runs).items():
        claim = next(c for c in CLAIMS if c.name == name)
        seeds = sorted({r.seed for r in group})
        paper = f"; the paper reports +{claim.paper_gain} {claim.metric}" if claim.paper_gain else ""
        extra = DETAILS.get(claim.metric, ())
        scored = group[0].scored_classes
        over = "" if scored is None else f" Scored over the {len(scored)} classes the panoptic model's source labels."
        lines += [
            f"### {name}, {regime} regime",
            "",
            f"{claim.title}. Seeds {seeds}{paper}.{over}",
            "",
            f"| model | {claim.metric} (%) | vs best single | " + "".join(f"{e} | " for e in extra) + "cost | note |",
            "|---|---:|---:|" + "---:|" * len(extra) + "---:|---|",
        ]
        table = rows(group)
        best = table[len(claim.roles)].stat.mean
        for row in table:
            delta = f"{row.stat.mean - best:+.1f}" if row.stat.values else ""
            cells = "".join(f"{row.details[e].text() if row.details else ''} | " for e in extra)
            lines.append(f"| {row.label} | {row.stat.text()} | {delta} | {cells}{row.cost}x | {row.note} |")
        if group[0].label_free.get("rank_correlation"):
            rho = ", ".join(
                f"{k} {v:+.2f}" if v is not None else f"{k} n/a" for k, v in mean_correlations(group).items()
            )
            lines += [
                "",
                f"Spearman rank correlation of each label-free criterion with target {claim.metric} over the tuning "
                f"candidates (mean over seeds): {rho}.",
            ]
        lines.append("")
    return "\n".join(lines)

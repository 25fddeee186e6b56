"""Printing a merge plan for people: a table per layer, then what did not match and why."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from segmerge.merging.plan import Action, MergePlan

SHOWN = 12


def render_plan(plan: MergePlan, console: Console, all_keys: bool = False) -> None:
    names = [f"m{i}{'*' if i == plan.anchor else ''}" for i in range(len(plan.models))]
    console.print(f"[bold]method[/] {plan.method} {plan.parameters}" + (f"  base {plan.base}" if plan.base else ""))
    for i, label in enumerate(plan.models):
        role = "anchor" if i == plan.anchor else "donor"
        console.print(f"  {names[i]:>4}  {role:<6} {label}")
    for note in plan.notes:
        console.print(f"[green]note:[/] {note}", highlight=False)
    table = Table(title=f"{len(plan.layers)} layers to merge (weights per model; * = anchor)")
    table.add_column("#", justify="right")
    table.add_column("layer", overflow="fold")
    table.add_column("depth", justify="right")
    for name in names:
        table.add_column(name, justify="right")
    table.add_column("action")
    table.add_column("keys", justify="right")
    for layer in plan.layers:
        weights = [f"{w:.3f}" for w in layer.weights]
        table.add_row(
            str(layer.index), layer.name, f"{layer.depth:.3f}", *weights, layer.action.value, str(len(layer.keys))
        )
    console.print(table)

    counts = plan.counts()
    console.print("[bold]anchor keys:[/] " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    for model, per in sorted(plan.donor_counts().items()):
        console.print(f"[bold]m{model} keys:[/] " + ", ".join(f"{v} {k}" for k, v in sorted(per.items())))

    _list(console, "anchor keys copied unchanged (no donor has them)", [
        k.key for k in plan.keys if k.action == Action.ANCHOR_ONLY
    ], all_keys)  # fmt: skip
    _list(console, "shape mismatches (anchor's value kept)", [
        f"{k.key}: {k.note}" for k in plan.keys if k.action == Action.SHAPE_MISMATCH
    ], all_keys)  # fmt: skip
    _list(console, "kept from the anchor by overrides", [k.key for k in plan.keys if k.action == Action.KEPT], all_keys)
    _list(console, "not in the base (anchor's value kept)", [
        k.key for k in plan.keys if k.action == Action.NOT_IN_BASE
    ], all_keys)  # fmt: skip
    _list(console, "donor keys that match nothing (not merged)", [
        f"m{d.model} {d.key}" + (f" -> {d.renamed}" if d.renamed != d.key else "") + (f" ({d.note})" if d.note else "")
        for d in plan.donor_keys
        if d.action == Action.DONOR_UNMATCHED
    ], all_keys)  # fmt: skip
    for hint in plan.hints:
        console.print(f"[cyan]hint:[/] {hint}")
    for warning in plan.warnings:
        console.print(f"[yellow]warning:[/] {warning}")


def _list(console: Console, title: str, items: list[str], all_keys: bool) -> None:
    if not items:
        return
    console.print(f"[bold]{title}:[/] {len(items)}")
    shown = items if all_keys else items[:SHOWN]
    for item in shown:
        console.print(f"  {item}", markup=False, highlight=False)
    if len(shown) < len(items):
        console.print(f"  ... {len(items) - len(shown)} more (--all-keys lists them)")

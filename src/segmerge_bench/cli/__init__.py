"""The harness's commands (``data``, ``demo``, ``bench``), added to the ``segmerge`` CLI through the
``segmerge.commands`` entry point, the same way any package adds its own."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    from segmerge.cli.app import user_errors
    from segmerge_bench.cli import bench, data, demo

    app.command("data")(user_errors(data.data))
    app.command("demo")(user_errors(demo.demo))
    app.command("bench")(user_errors(bench.bench))

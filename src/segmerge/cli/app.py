"""The typer application; each command group registers itself here."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Annotated

import typer
from rich.console import Console

from segmerge.errors import SegmergeError

app = typer.Typer(
    help="Merge trained segmentation models layer by layer, and measure the result.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
stdout = Console(highlight=False, soft_wrap=True)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def _print_version(value: bool) -> None:
    if value:
        from segmerge._version import __version__

        stdout.print(f"segmerge {__version__}", markup=False)
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="print the version and exit")
    ] = False,
) -> None:
    pass


def user_errors(func: Callable) -> Callable:
    """Print a :class:`SegmergeError` on one line and exit 2, without a traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except SegmergeError as exc:
            stderr.print(f"[red]error:[/] {exc}", markup=True, highlight=False)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            stderr.print("interrupted; nothing was written")
            sys.exit(130)

    return wrapper


# Registration: importing the modules adds their commands to ``app``, in this order in --help;
# then the commands of installed plugins (``segmerge.commands`` entry points, segmerge.plugins).
from segmerge.cli import merge_commands  # noqa: E402,F401,I001
from segmerge.cli import eval_commands  # noqa: E402,F401
from segmerge.cli import tune_command  # noqa: E402,F401


def add_plugin_commands() -> None:
    from segmerge.plugins import COMMANDS, plugins

    try:
        registers = plugins(COMMANDS)
    except SegmergeError as exc:  # one broken plugin must not take every command (and --version) down
        stderr.print(f"[yellow]warning:[/] {exc}", markup=True, highlight=False)
        return
    for register in registers:
        register(app)


add_plugin_commands()

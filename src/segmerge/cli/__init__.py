"""The ``segmerge`` command: a thin layer over :mod:`segmerge.api`."""

from __future__ import annotations

import sys

from segmerge.cli.app import app


def main() -> None:
    app(prog_name="segmerge")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

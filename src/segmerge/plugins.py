"""Extension points: other packages add dataset kinds, model loaders and commands to segmerge.

A package declares entry points in its ``pyproject.toml``; segmerge loads a group the first
time it needs it (never at ``import segmerge``):

- ``segmerge.datasets``: a module whose import registers dataset kinds with
  :func:`segmerge.datasets.register` (``open_dataset("kind:...")`` then finds them);
- ``segmerge.segmenters``: a callable ``(path: Path, label: str) -> Segmenter | None`` that
  builds a :class:`~segmerge.segmenters.Segmenter` from a checkpoint it recognises and returns
  ``None`` for one it does not;
- ``segmerge.commands``: a callable ``(app: typer.Typer) -> None`` that adds commands.

segmerge's own research harness (``segmerge_bench``) plugs in this way, like anyone's.
"""

from __future__ import annotations

import functools
from importlib.metadata import entry_points

from segmerge.errors import SegmergeError

DATASETS = "segmerge.datasets"
SEGMENTERS = "segmerge.segmenters"
COMMANDS = "segmerge.commands"


@functools.cache
def plugins(group: str) -> tuple:
    """The loaded objects of ``group``'s entry points, sorted by entry point name."""
    loaded = []
    for point in sorted(entry_points(group=group), key=lambda p: p.name):
        try:
            loaded.append(point.load())
        except Exception as exc:  # a broken plugin must name itself, not surface as a traceback elsewhere
            raise SegmergeError(
                f"the {group} plugin {point.name!r} ({point.value}) failed to load: {exc}; "
                "reinstall or uninstall the package that provides it"
            ) from None
    return tuple(loaded)

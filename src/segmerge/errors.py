"""Errors a user can act on.

Every error segmerge raises on bad input is a :class:`SegmergeError` whose message says
what was wrong, where (file, key, field) and what to do. The CLI prints it on one line
and exits non-zero; the Python API lets it propagate.
"""

from __future__ import annotations


class SegmergeError(Exception):
    """Bad input or an impossible request; the message is meant for the user."""


class CheckpointError(SegmergeError):
    """A checkpoint could not be read or written."""


class UnsafeCheckpointError(CheckpointError):
    """Loading the checkpoint would execute code from it."""


class RecipeError(SegmergeError):
    """A recipe (file or flags) is invalid."""


class MergeError(SegmergeError):
    """The models cannot be merged as asked."""

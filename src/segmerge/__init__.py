"""segmerge: layer-wise merging of segmentation models, and the evaluation to judge it."""

from segmerge._version import __version__

__all__ = ["__version__"]

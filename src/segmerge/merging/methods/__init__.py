"""Merge methods: one module each, found by name through the registry in ``base``."""

from segmerge.merging.methods import layerwise, linear, task_vectors  # noqa: F401  (registers)
from segmerge.merging.methods.base import (
    MergeMethod,
    MethodParams,
    build_method,
    method_class,
    method_names,
    register,
)

__all__ = ["MergeMethod", "MethodParams", "build_method", "method_class", "method_names", "register"]

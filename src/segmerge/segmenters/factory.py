"""A user's own model: ``FILE.py:function`` or ``module:function`` builds it from a checkpoint.

This is how mmsegmentation-based models (DAFormer, HRDA, MIC) plug in: the function takes
the checkpoint path and returns an ``nn.Module`` whose forward maps normalised RGB images
[N,3,H,W] (ImageNet mean/std) to logits [N,C,h,w] (a tensor, a dict with ``logits``, or an
object with ``.logits``). Its ``num_classes`` is read from the module's attribute of that
name, or found by running it once on a small image. A panoptic model (EDAPS) adds a method
``panoptic(outputs, index, size, thing_ids)`` returning image ``index``'s panoptic segmentation
(ids [H,W], segments_info with ``id``, ``category_id``, ``isthing``) from the forward pass's
outputs; or the factory returns a :class:`Segmenter` itself. Before anything is scored,
segmerge checks the network holds the checkpoint's weights (:mod:`segmerge.segmenters.verify`).
Running the factory runs the user's own code - that is the point - but never code from a
checkpoint.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import torch

from segmerge.errors import SegmergeError
from segmerge.segmenters.base import Segmenter


def resolve_factory(spec: str):
    target, colon, func = spec.rpartition(":")
    if not colon or not target or not func:
        raise SegmergeError(f"--model {spec!r}: expected FILE.py:function or module:function")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise SegmergeError(f"--model {spec!r}: {path} does not exist")
        module_spec = importlib.util.spec_from_file_location(f"segmerge_user_factory_{path.stem}", path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_spec.name] = module
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise SegmergeError(f"--model {spec!r}: cannot import {target}: {exc}") from None
    try:
        return getattr(module, func)
    except AttributeError:
        raise SegmergeError(f"--model {spec!r}: {target} has no function {func!r}") from None


def logits_of(output) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict) and "logits" in output:
        return output["logits"]
    if hasattr(output, "logits"):
        return output.logits
    raise SegmergeError(
        f"the factory's model returned {type(output).__name__}; it must return logits [N,C,h,w] "
        "(a tensor, a dict with 'logits', or an object with .logits)"
    )


def from_factory(spec: str, checkpoint: str, label: str, verify: bool = True, network: str | None = None) -> Segmenter:
    """What the factory builds from ``checkpoint``: an ``nn.Module`` giving logits (with, optionally,
    a ``panoptic(outputs, index, size, thing_ids)`` method for a panoptic output), or a whole
    :class:`Segmenter`. With ``verify`` the network must hold the checkpoint's weights."""
    build = resolve_factory(spec)
    built = build(checkpoint)
    if isinstance(built, Segmenter):
        segmenter = built
        segmenter.name, segmenter.source = label, segmenter.source or checkpoint
    elif isinstance(built, torch.nn.Module):
        segmenter = _module_segmenter(built, checkpoint, label)
    else:
        raise SegmergeError(
            f"--model {spec!r}: returned {type(built).__name__}, not a torch.nn.Module or a segmerge Segmenter"
        )
    segmenter.module.eval()
    if verify:
        from segmerge.segmenters.verify import verify_factory_weights

        verify_factory_weights(segmenter.module, checkpoint, spec, network)
    return segmenter


def _module_segmenter(module: torch.nn.Module, checkpoint: str, label: str) -> Segmenter:
    module.eval()
    num_classes = getattr(module, "num_classes", None)
    if num_classes is None:
        with torch.no_grad():
            num_classes = logits_of(module(torch.zeros(1, 3, 64, 64))).shape[1]
    panoptic = getattr(module, "panoptic", None)
    panoptic_head = None
    if callable(panoptic):

        def panoptic_head(outputs, index, size, thing_ids, classes=None):
            if classes is not None:
                return panoptic(outputs, index, size, thing_ids, classes=classes)
            return panoptic(outputs, index, size, thing_ids)

    return Segmenter(label, module, int(num_classes), logits_of, True, panoptic_head=panoptic_head, source=checkpoint)

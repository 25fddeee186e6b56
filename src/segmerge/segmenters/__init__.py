"""Segmenters: trained networks wrapped so evaluation can run any of them the same way.

A :class:`Segmenter` turns a batch of normalised images into per-class scores. Sources:
Hugging Face folders (SegFormer; Mask2Former semantic and panoptic), a user's factory
function (``FILE.py:function`` or ``module:function``, for mmseg-based DAFormer/HRDA/MIC),
and segmerge's own built-in models.
"""

from segmerge.segmenters.base import Segmenter, load_segmenter

__all__ = ["Segmenter", "load_segmenter"]

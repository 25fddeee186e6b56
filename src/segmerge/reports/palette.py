"""Label maps to colours: the Cityscapes trainId palette, and distinct colours per segment id.

Readers of segmentation figures recognise the Cityscapes palette at a glance (purple road,
green vegetation, ...), so predictions are drawn in it. Panoptic maps need each segment to
differ from its neighbours instead, so segment ids are hashed to colours: the same id gets
the same colour in every column and every run, which makes models' maps comparable.
"""

from __future__ import annotations

import numpy as np

from segmerge.labels import CITYSCAPES_PALETTE as _OFFICIAL_PALETTE
from segmerge.labels import IGNORE_INDEX

#: 19 x 3 uint8: row ``i`` is the colour of trainId ``i`` (the official label table).
CITYSCAPES_PALETTE = _OFFICIAL_PALETTE


def hash_colors(ids: np.ndarray) -> np.ndarray:
    """Deterministic, bright, well-spread colour per integer id (N -> N x 3 uint8).

    A bit-mixing hash (splitmix64's finaliser) picks hue, saturation and value, so ids that
    differ by one (neighbouring instances) still get unrelated colours, and no id maps to
    near-black, which is reserved for ignored pixels.
    """
    x = np.asarray(ids, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    hue = (x & np.uint64(0xFFFF)).astype(np.float64) / 65536.0
    sat = 0.55 + 0.4 * ((x >> np.uint64(16)) & np.uint64(0xFF)).astype(np.float64) / 255.0
    val = 0.65 + 0.35 * ((x >> np.uint64(24)) & np.uint64(0xFF)).astype(np.float64) / 255.0
    return _hsv_to_rgb(hue, sat, val)


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    from matplotlib.colors import hsv_to_rgb  # imported here: importing this module stays cheap

    rgb = hsv_to_rgb(np.stack([h, s, v], axis=-1))
    return np.clip(np.round(rgb * 255), 0, 255).astype(np.uint8)


def _paint(values: np.ndarray, colors_of) -> np.ndarray:
    """Colour a map through its distinct values only: maps are large, their value sets small."""
    values = np.asarray(values)
    if values.ndim != 2:
        raise ValueError(f"expected an HxW map, got shape {values.shape}")
    unique, inverse = np.unique(values.astype(np.int64), return_inverse=True)
    return colors_of(unique)[inverse.reshape(values.shape)]


def class_colors(class_ids: np.ndarray) -> np.ndarray:
    """Colour per trainId (N -> N x 3 uint8): palette for 0..18, black for 255, hashed otherwise."""
    class_ids = np.asarray(class_ids, dtype=np.int64)
    out = hash_colors(class_ids)
    known = (class_ids >= 0) & (class_ids < len(CITYSCAPES_PALETTE))
    out[known] = CITYSCAPES_PALETTE[class_ids[known]]
    out[class_ids == IGNORE_INDEX] = 0
    return out


def colorize(label: np.ndarray) -> np.ndarray:
    """A trainId map (HxW ints) as an HxWx3 uint8 image in the Cityscapes palette.

    255 (ignore) is black; ids outside the palette (other datasets' extra classes) get a
    deterministic hashed colour rather than an error, so any model's output can be drawn.
    """
    return _paint(label, class_colors)


def colorize_instances(ids: np.ndarray, label_divisor: int | None = None) -> np.ndarray:
    """A panoptic segment-id map (HxW ints) as HxWx3 uint8, one distinct colour per segment.

    Negative ids (void) are black. With ``label_divisor`` (the ``class * divisor + instance``
    convention, e.g. 1000 for Cityscapes), ids below the divisor are stuff and take their
    class colour, and each thing segment is its class colour mixed with its hashed colour, so
    instances stay recognisable by class yet distinct from one another.
    """

    def colors_of(unique: np.ndarray) -> np.ndarray:
        out = hash_colors(unique)
        if label_divisor:
            stuff = unique < label_divisor
            classes = np.where(stuff, unique, unique // label_divisor)
            tint = class_colors(classes).astype(np.uint16)
            mixed = ((tint + out.astype(np.uint16)) // 2).astype(np.uint8)
            out = np.where(stuff[:, None], tint.astype(np.uint8), mixed)
            out[classes == IGNORE_INDEX] = 0
        out[unique < 0] = 0
        return out

    return _paint(ids, colors_of)

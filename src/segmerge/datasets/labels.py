"""Label spaces: every reader returns Cityscapes trainIds (0..18, 255 = ignore).

The 19-class Cityscapes trainId space is the common currency of the field's benchmarks
(Cityscapes, GTA5 -> Cityscapes, SYNTHIA -> Cityscapes, ACDC, Dark Zurich), so models
trained on any of them can be merged and scored against the same classes. The facts come
from the official table in ``cityscapesscripts.helpers.labels`` rather than being retyped
here; only SYNTHIA's own class ids (from its README) are written out, by Cityscapes class
*name*, so their trainIds are derived from the same official table.

Lookup tables have 65,536 entries so 8- and 16-bit label images index them directly; ids
absent from a table map to 255, as in the reference conversion scripts (DAFormer, MIC).
"""

from __future__ import annotations

import numpy as np
from cityscapesscripts.helpers.labels import labels as _CITYSCAPES_LABELS

from segmerge.metrics.protocols import CITYSCAPES_CLASSES

IGNORE_INDEX = 255
NUM_CLASSES = 19
_LUT_SIZE = 1 << 16

_EVALUATED = sorted((lab for lab in _CITYSCAPES_LABELS if not lab.ignoreInEval), key=lambda lab: lab.trainId)
assert [lab.trainId for lab in _EVALUATED] == list(range(NUM_CLASSES)), "unexpected Cityscapes label table"

assert tuple(lab.name for lab in _EVALUATED) == CITYSCAPES_CLASSES, "unexpected Cityscapes label table"

CITYSCAPES_PALETTE: np.ndarray = np.array([lab.color for lab in _EVALUATED], dtype=np.uint8)
"""[19, 3] uint8 RGB colours of the official table, indexed by trainId."""
CITYSCAPES_PALETTE.flags.writeable = False

THING_TRAIN_IDS: tuple[int, ...] = tuple(lab.trainId for lab in _EVALUATED if lab.hasInstances)
"""trainIds of the countable classes (person .. bicycle); the rest are stuff."""


def _lookup_table(mapping: dict[int, int]) -> np.ndarray:
    table = np.full(_LUT_SIZE, IGNORE_INDEX, dtype=np.uint8)
    for raw, train_id in mapping.items():
        table[raw] = train_id
    table.flags.writeable = False
    return table


LABEL_ID_TO_TRAIN_ID: np.ndarray = _lookup_table(
    {lab.id: lab.trainId for lab in _CITYSCAPES_LABELS if lab.id >= 0 and 0 <= lab.trainId < NUM_CLASSES}
)
"""Cityscapes labelId -> trainId (7 road -> 0, 26 car -> 13, 0 unlabeled -> 255, ...).

GTA5's label PNGs use the same labelIds, so the same table serves both.
"""

_TRAIN_ID_BY_NAME = {lab.name: lab.trainId for lab in _EVALUATED}

SYNTHIA_CLASSES: dict[int, str] = {
    0: "void",
    1: "sky",
    2: "building",
    3: "road",
    4: "sidewalk",
    5: "fence",
    6: "vegetation",
    7: "pole",
    8: "car",
    9: "traffic sign",
    10: "pedestrian",
    11: "bicycle",
    12: "motorcycle",
    13: "parking-slot",
    14: "road-work",
    15: "traffic light",
    16: "terrain",
    17: "rider",
    18: "truck",
    19: "bus",
    20: "train",
    21: "wall",
    22: "lanemarking",
}
"""SYNTHIA class ids (the first channel of GT/LABELS/*.png), from SYNTHIA's README."""

_SYNTHIA_TO_CITYSCAPES_NAME = {"pedestrian": "person"}

SYNTHIA_TO_TRAIN_ID: dict[int, int] = {
    synthia_id: _TRAIN_ID_BY_NAME[_SYNTHIA_TO_CITYSCAPES_NAME.get(name, name)]
    for synthia_id, name in SYNTHIA_CLASSES.items()
    if _SYNTHIA_TO_CITYSCAPES_NAME.get(name, name) in _TRAIN_ID_BY_NAME
}
"""SYNTHIA id -> trainId, by class name; equals the id_to_trainid table of DAFormer's
``tools/convert_datasets/synthia.py``. void, parking-slot, road-work and lanemarking -> 255."""

SYNTHIA_ID_TO_TRAIN_ID: np.ndarray = _lookup_table(SYNTHIA_TO_TRAIN_ID)

SYNTHIA_16_TRAIN_IDS: tuple[int, ...] = tuple(
    t for t in range(NUM_CLASSES) if CITYSCAPES_CLASSES[t] not in ("terrain", "truck", "train")
)
"""The 16 classes SYNTHIA -> Cityscapes results report (mIoU16): SYNTHIA lacks terrain, truck, train."""

SYNTHIA_13_TRAIN_IDS: tuple[int, ...] = tuple(
    t for t in SYNTHIA_16_TRAIN_IDS if CITYSCAPES_CLASSES[t] not in ("wall", "fence", "pole")
)
"""The 13 classes of the older mIoU13 protocol (additionally without wall, fence, pole)."""

CITYSCAPES_PANOPTIC_CATEGORIES: tuple[dict, ...] = tuple(
    {
        "id": lab.trainId,
        "label_id": lab.id,
        "name": lab.name,
        "isthing": int(lab.hasInstances),
        "color": tuple(lab.color),
    }
    for lab in _EVALUATED
)
"""The 19 panoptic categories with trainIds as ids (8 things, 11 stuff).

Cityscapes' panoptic json (``createPanopticImgs.py``) uses labelIds as category ids; the
panoptic reader maps them to these trainIds so semantic and panoptic scores share one space.
"""


def map_ids(raw: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Raw ids (uint8/uint16 image) -> int64 trainIds through a lookup table above."""
    if raw.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"label ids must be uint8 or uint16, got {raw.dtype}")
    return table[raw].astype(np.int64)


def colorize(train_ids: np.ndarray) -> np.ndarray:
    """trainId map [H, W] -> RGB image [H, W, 3] with the official colours; ignore (and
    anything outside 0..18) is black."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[:NUM_CLASSES] = CITYSCAPES_PALETTE
    ids = np.asarray(train_ids)
    ids = np.where((ids >= 0) & (ids < NUM_CLASSES), ids, IGNORE_INDEX)
    return palette[ids]

"""The label space every part of segmerge shares: Cityscapes trainIds, their tables and protocols.

The 19-class Cityscapes trainId space is the common currency of the field's benchmarks
(Cityscapes, GTA5 -> Cityscapes, SYNTHIA -> Cityscapes, ACDC, Dark Zurich), so models
trained on any of them can be merged and scored against the same classes. Readers map their
raw ids into it, metrics count in it, reports draw it in the official colours.

This module is data and imports nothing of segmerge (nor cityscapesscripts): the table below
is the official one of ``cityscapesscripts.helpers.labels`` restricted to the evaluated
classes, and a test checks it entry by entry against that package. SYNTHIA's own class ids
(from its README) are written out by Cityscapes class *name*, so their trainIds derive from
the same table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IGNORE_INDEX = 255
"""The label of pixels that no metric counts (void, unlabelled, classes outside the protocol)."""


@dataclass(frozen=True)
class CityscapesClass:
    train_id: int
    label_id: int
    name: str
    color: tuple[int, int, int]
    is_thing: bool


CITYSCAPES: tuple[CityscapesClass, ...] = (
    CityscapesClass(0, 7, "road", (128, 64, 128), False),
    CityscapesClass(1, 8, "sidewalk", (244, 35, 232), False),
    CityscapesClass(2, 11, "building", (70, 70, 70), False),
    CityscapesClass(3, 12, "wall", (102, 102, 156), False),
    CityscapesClass(4, 13, "fence", (190, 153, 153), False),
    CityscapesClass(5, 17, "pole", (153, 153, 153), False),
    CityscapesClass(6, 19, "traffic light", (250, 170, 30), False),
    CityscapesClass(7, 20, "traffic sign", (220, 220, 0), False),
    CityscapesClass(8, 21, "vegetation", (107, 142, 35), False),
    CityscapesClass(9, 22, "terrain", (152, 251, 152), False),
    CityscapesClass(10, 23, "sky", (70, 130, 180), False),
    CityscapesClass(11, 24, "person", (220, 20, 60), True),
    CityscapesClass(12, 25, "rider", (255, 0, 0), True),
    CityscapesClass(13, 26, "car", (0, 0, 142), True),
    CityscapesClass(14, 27, "truck", (0, 0, 70), True),
    CityscapesClass(15, 28, "bus", (0, 60, 100), True),
    CityscapesClass(16, 31, "train", (0, 80, 100), True),
    CityscapesClass(17, 32, "motorcycle", (0, 0, 230), True),
    CityscapesClass(18, 33, "bicycle", (119, 11, 32), True),
)
"""The 19 evaluated Cityscapes classes, indexed by trainId (the official label table)."""

NUM_CLASSES = len(CITYSCAPES)
CITYSCAPES_CLASSES: tuple[str, ...] = tuple(c.name for c in CITYSCAPES)
CITYSCAPES_LABEL_IDS: tuple[int, ...] = tuple(c.label_id for c in CITYSCAPES)
"""Cityscapes labelId of each trainId: the official panoptic JSON uses these as category ids."""
THING_TRAIN_IDS: tuple[int, ...] = tuple(c.train_id for c in CITYSCAPES if c.is_thing)
"""person, rider, car, truck, bus, train, motorcycle, bicycle: the classes with instances."""

CITYSCAPES_PALETTE: np.ndarray = np.array([c.color for c in CITYSCAPES], dtype=np.uint8)
"""[19, 3] uint8 RGB colours of the official table, indexed by trainId."""
CITYSCAPES_PALETTE.flags.writeable = False

CITYSCAPES_PANOPTIC_CATEGORIES: tuple[dict, ...] = tuple(
    {"id": c.train_id, "label_id": c.label_id, "name": c.name, "isthing": int(c.is_thing), "color": c.color}
    for c in CITYSCAPES
)
"""The 19 panoptic categories with trainIds as ids (8 things, 11 stuff).

Cityscapes' panoptic json (``createPanopticImgs.py``) uses labelIds as category ids; the
panoptic reader maps them to these trainIds so semantic and panoptic scores share one space.
"""


def class_names(num_classes: int) -> tuple[str, ...]:
    """Names for a model's classes: Cityscapes' for 19, ``class i`` otherwise."""
    return CITYSCAPES_CLASSES if num_classes == NUM_CLASSES else tuple(f"class {i}" for i in range(num_classes))


def cityscapes_categories(ids: str = "train_id") -> list[dict]:
    """COCO-style panoptic categories for the 19 Cityscapes classes.

    ``ids="train_id"`` numbers them 0..18 (what a model predicts); ``ids="label_id"`` uses the
    Cityscapes labelIds (person = 24, ...), as in the official ``cityscapes_panoptic_*.json``.
    """
    if ids not in ("train_id", "label_id"):
        raise ValueError(f"ids={ids!r}: use 'train_id' (0..18) or 'label_id' (Cityscapes labelIds, person = 24)")
    return [{"id": getattr(c, ids), "name": c.name, "isthing": int(c.is_thing)} for c in CITYSCAPES]


# --- protocols: the class subsets UDA papers report on ----------------------------------------


@dataclass(frozen=True)
class ClassSubset:
    """A named set of trainIds over which a mean is taken (e.g. ``synthia16``).

    SYNTHIA -> Cityscapes results are reported as mIoU over 16 or 13 classes, but the model and
    its confusion matrix still cover all 19 trainIds, so a protocol is a list of trainIds to
    average over, not another label space.
    """

    name: str
    class_ids: tuple[int, ...]

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(CITYSCAPES_CLASSES[i] for i in self.class_ids)

    def __len__(self) -> int:
        return len(self.class_ids)


SYNTHIA_16_TRAIN_IDS: tuple[int, ...] = tuple(
    c.train_id for c in CITYSCAPES if c.name not in ("terrain", "truck", "train")
)
"""The 16 classes SYNTHIA -> Cityscapes results report (mIoU16): SYNTHIA lacks terrain, truck, train."""

SYNTHIA_13_TRAIN_IDS: tuple[int, ...] = tuple(
    t for t in SYNTHIA_16_TRAIN_IDS if CITYSCAPES_CLASSES[t] not in ("wall", "fence", "pole")
)
"""The 13 classes of the older mIoU13 protocol (additionally without wall, fence, pole)."""

PROTOCOLS: dict[str, ClassSubset] = {
    s.name: s
    for s in (
        ClassSubset("cityscapes19", tuple(range(NUM_CLASSES))),
        ClassSubset("synthia16", SYNTHIA_16_TRAIN_IDS),
        ClassSubset("synthia13", SYNTHIA_13_TRAIN_IDS),
    )
}


# --- raw ids of the data sets -> trainIds -----------------------------------------------------

_LUT_SIZE = 1 << 16


def _lookup_table(mapping: dict[int, int]) -> np.ndarray:
    """Lookup tables have 65,536 entries so 8- and 16-bit label images index them directly; ids
    absent from a table map to 255, as in the reference conversion scripts (DAFormer, MIC)."""
    table = np.full(_LUT_SIZE, IGNORE_INDEX, dtype=np.uint8)
    for raw, train_id in mapping.items():
        table[raw] = train_id
    table.flags.writeable = False
    return table


LABEL_ID_TO_TRAIN_ID: np.ndarray = _lookup_table({c.label_id: c.train_id for c in CITYSCAPES})
"""Cityscapes labelId -> trainId (7 road -> 0, 26 car -> 13, 0 unlabeled -> 255, ...).

GTA5's label PNGs use the same labelIds, so the same table serves both.
"""

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
    synthia_id: CITYSCAPES_CLASSES.index(_SYNTHIA_TO_CITYSCAPES_NAME.get(name, name))
    for synthia_id, name in SYNTHIA_CLASSES.items()
    if _SYNTHIA_TO_CITYSCAPES_NAME.get(name, name) in CITYSCAPES_CLASSES
}
"""SYNTHIA id -> trainId, by class name; equals the id_to_trainid table of DAFormer's
``tools/convert_datasets/synthia.py``. void, parking-slot, road-work and lanemarking -> 255."""

SYNTHIA_ID_TO_TRAIN_ID: np.ndarray = _lookup_table(SYNTHIA_TO_TRAIN_ID)


def map_ids(raw: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Raw ids (uint8/uint16 image) -> int64 trainIds through a lookup table above."""
    if raw.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"label ids must be uint8 or uint16, got {raw.dtype}")
    return table[raw].astype(np.int64)

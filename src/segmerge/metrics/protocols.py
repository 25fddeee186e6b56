"""Cityscapes class names and the class subsets that UDA papers report on.

Synthia->Cityscapes results are reported as mIoU over 16 or 13 classes, but the model and
its confusion matrix still cover all 19 Cityscapes trainIds: Synthia has no terrain, truck
or train (16 classes), and the 13-class protocol also drops wall, fence and pole. A subset
is therefore just a list of trainIds to average over, not a different label space.
"""

from __future__ import annotations

from dataclasses import dataclass

from segmerge.errors import SegmergeError

CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)
"""The 19 evaluated Cityscapes classes, indexed by trainId."""

CITYSCAPES_LABEL_IDS: tuple[int, ...] = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
"""Cityscapes labelId of each trainId: the official panoptic JSON uses these as category ids."""

CITYSCAPES_THING_TRAIN_IDS: tuple[int, ...] = tuple(range(11, 19))
"""person, rider, car, truck, bus, train, motorcycle, bicycle: the classes with instances."""


@dataclass(frozen=True)
class ClassSubset:
    """A named set of trainIds over which a mean is taken (e.g. ``synthia16``)."""

    name: str
    class_ids: tuple[int, ...]
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.class_ids)


def _cityscapes_subset(name: str, class_ids: tuple[int, ...]) -> ClassSubset:
    return ClassSubset(name, class_ids, tuple(CITYSCAPES_CLASSES[i] for i in class_ids))


_SYNTHIA16 = (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18)
_SYNTHIA13 = (0, 1, 2, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18)

PROTOCOLS: dict[str, ClassSubset] = {
    s.name: s
    for s in (
        _cityscapes_subset("cityscapes19", tuple(range(19))),
        _cityscapes_subset("synthia16", _SYNTHIA16),
        _cityscapes_subset("synthia13", _SYNTHIA13),
    )
}


def protocol(name: str) -> ClassSubset:
    """The class subset called ``name`` (``cityscapes19``, ``synthia16``, ``synthia13``)."""
    try:
        return PROTOCOLS[name]
    except KeyError:
        valid = ", ".join(sorted(PROTOCOLS))
        raise SegmergeError(f"unknown evaluation protocol {name!r}; valid protocols: {valid}") from None


def cityscapes_categories(ids: str = "train_id") -> list[dict]:
    """COCO-style panoptic categories for the 19 Cityscapes classes.

    ``ids="train_id"`` numbers them 0..18 (what a model predicts); ``ids="label_id"`` uses the
    Cityscapes labelIds (person = 24, ...), as in the official ``cityscapes_panoptic_*.json``.
    """
    if ids == "train_id":
        numbers = tuple(range(len(CITYSCAPES_CLASSES)))
    elif ids == "label_id":
        numbers = CITYSCAPES_LABEL_IDS
    else:
        raise SegmergeError(f"ids={ids!r}: use 'train_id' (0..18) or 'label_id' (Cityscapes labelIds, person = 24)")
    return [
        {"id": number, "name": name, "isthing": int(train_id in CITYSCAPES_THING_TRAIN_IDS)}
        for train_id, (number, name) in enumerate(zip(numbers, CITYSCAPES_CLASSES, strict=True))
    ]

"""Dataset readers for evaluation: every sample comes out in Cityscapes trainIds (:mod:`segmerge.labels`).

``open_dataset("cityscapes:/data/cityscapes", split="val")`` is what the CLI calls; the
kinds are registered by the reader modules imported below, so adding a dataset means one
module with an ``@register("kind")`` class and one import line here (or, from another
package, a ``segmerge.datasets`` entry point: :mod:`segmerge.plugins`).
"""

from __future__ import annotations

from segmerge.datasets.base import (
    DatasetShard,
    PairedDataset,
    PanopticLabel,
    Sample,
    SegmentationDataset,
    dataset_class,
    dataset_kinds,
    register,
)
from segmerge.datasets.cityscapes import CityscapesDataset, CityscapesPanopticDataset
from segmerge.datasets.folder import FolderDataset
from segmerge.datasets.gta5 import GTA5Dataset
from segmerge.datasets.synthia import SynthiaDataset
from segmerge.errors import SegmergeError

__all__ = [
    "CityscapesDataset",
    "CityscapesPanopticDataset",
    "DatasetShard",
    "FolderDataset",
    "GTA5Dataset",
    "PairedDataset",
    "PanopticLabel",
    "Sample",
    "SegmentationDataset",
    "SynthiaDataset",
    "dataset_class",
    "dataset_kinds",
    "open_dataset",
    "register",
]


def open_dataset(spec: str, split: str = "val") -> SegmentationDataset:
    """``kind:argument`` -> a dataset reader.

    ``cityscapes:/root``, ``cityscapes-panoptic:/root``, ``gta5:/root``, ``synthia:/root``
    take the dataset's root folder; ``folder:images=/x/img[,labels=/x/lbl]`` takes folders.
    ``split`` selects Cityscapes' split; GTA5, SYNTHIA and folders have none and ignore it.
    """
    kind, sep, argument = spec.partition(":")
    kind = kind.strip().lower()
    if not sep:
        raise SegmergeError(
            f"dataset spec {spec!r} needs the form KIND:ARGUMENT (e.g. cityscapes:/data/cityscapes); "
            f"valid kinds: {', '.join(dataset_kinds())}"
        )
    return dataset_class(kind).from_spec(argument, split)

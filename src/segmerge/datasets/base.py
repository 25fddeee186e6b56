"""What every dataset reader gives evaluation: indexable samples in the trainId space.

A reader lists its files when built (so a wrong path fails at once, not after an hour of
inference) and reads pixels only in ``__getitem__``. ``shard(rank, world_size)`` hands each
``torchrun`` process the indices rank, rank + world_size, ..., so the shards cover every
sample exactly once. Readers register under a kind (``cityscapes``, ``gta5``, ...) so that
``open_dataset("kind:argument")`` finds them and a new dataset is one small module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from segmerge.datasets.images import read_image, read_label
from segmerge.errors import SegmergeError
from segmerge.labels import CITYSCAPES_CLASSES, IGNORE_INDEX, NUM_CLASSES, map_ids

CONVERTED_SUFFIX = "_labelTrainIds"


@dataclass(frozen=True)
class PanopticLabel:
    """COCO-style panoptic ground truth of one image.

    ``ids``: int64 [H, W] segment ids (0 = void). ``segments_info``: one dict per segment,
    {id, category_id (a trainId), iscrowd, area}; ids absent from it are void.
    """

    ids: np.ndarray
    segments_info: list[dict]


@dataclass
class Sample:
    """One evaluation example.

    ``name``: stable relative id (``frankfurt/frankfurt_000000_000294``), used to key
    predictions and qualitative plots. ``image``: uint8 RGB [H, W, 3]. ``label``: int64
    trainIds [H, W] (0..18, 255 = ignore), None for unlabelled data.
    """

    name: str
    image: np.ndarray
    label: np.ndarray | None
    image_path: Path
    panoptic: PanopticLabel | None = None
    label_path: Path | None = None


class SegmentationDataset:
    """Base of all readers: ``len``, indexing (negative too), iteration and sharding."""

    kind: ClassVar[str] = ""
    num_classes: ClassVar[int] = NUM_CLASSES
    class_names: ClassVar[tuple[str, ...]] = CITYSCAPES_CLASSES
    ignore_index: ClassVar[int] = IGNORE_INDEX

    @classmethod
    def from_spec(cls, argument: str, split: str) -> SegmentationDataset:
        """Build from the part of a CLI spec after ``kind:`` (a root folder by default)."""
        return cls(_root_from_spec(cls.kind, argument), split=split)

    @property
    def names(self) -> Sequence[str]:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.names)

    def load(self, index: int) -> Sample:
        """Read sample ``index`` (0 <= index < len); ``__getitem__`` checks the index."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> Sample:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"sample index {index} is out of range for {n} samples")
        return self.load(index % n)

    def __iter__(self) -> Iterator[Sample]:
        for index in range(len(self)):
            yield self.load(index)

    def shard(self, rank: int, world_size: int) -> SegmentationDataset:
        """The samples rank, rank + world_size, ...: this process's part of a distributed run."""
        if not isinstance(world_size, int) or world_size < 1:
            raise SegmergeError(f"shard: world_size must be a positive integer, got {world_size!r}")
        if not isinstance(rank, int) or not 0 <= rank < world_size:
            raise SegmergeError(f"shard: rank must be in 0..{world_size - 1}, got {rank!r}")
        return DatasetShard(self, range(len(self))[rank::world_size])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} samples)"


class DatasetShard(SegmentationDataset):
    """A view over some indices of another dataset; reads nothing itself."""

    def __init__(self, parent: SegmentationDataset, indices: range) -> None:
        self.parent = parent
        self.indices = indices
        self.kind = parent.kind

    @property
    def names(self) -> Sequence[str]:
        names = self.parent.names
        return [names[i] for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def load(self, index: int) -> Sample:
        return self.parent.load(self.indices[index])

    def __repr__(self) -> str:
        return f"DatasetShard({self.parent!r}, indices={self.indices})"


@dataclass(frozen=True)
class Pair:
    """An image file and its label file (None when unlabelled)."""

    name: str
    image_path: Path
    label_path: Path | None = None


class PairedDataset(SegmentationDataset):
    """A list of image/label file pairs plus how to turn a label file into trainIds.

    Subclasses find the pairs and, where the files do not hold trainIds, override
    ``decode_label``. Every sample is checked: label and image the same size, values in
    0..18 or 255.
    """

    def __init__(self, pairs: list[Pair]) -> None:
        self.pairs = pairs

    @property
    def names(self) -> Sequence[str]:
        return [p.name for p in self.pairs]

    def __len__(self) -> int:
        return len(self.pairs)

    def decode_label(self, path: Path) -> np.ndarray:
        """A label file -> int64 trainIds [H, W]; by default the file holds trainIds."""
        return read_label(path).astype(np.int64)

    def load(self, index: int) -> Sample:
        pair = self.pairs[index]
        image = read_image(pair.image_path)
        label = None
        if pair.label_path is not None:
            label = self.decode_label(pair.label_path)
            check_same_size(image, pair.image_path, label, pair.label_path)
            check_train_ids(label, pair.label_path)
        return Sample(pair.name, image, label, pair.image_path, label_path=pair.label_path)


def read_label_ids(path: Path, table: np.ndarray) -> np.ndarray:
    """A label file of raw dataset ids -> int64 trainIds through a lookup table of labels.py."""
    raw = read_label(path)
    if raw.dtype not in (np.uint8, np.uint16):
        if raw.size and (raw.min() < 0 or raw.max() >= len(table)):
            raise SegmergeError(
                f"{path}: label ids range {raw.min()}..{raw.max()}, beyond any dataset's ids (0..{len(table) - 1}); "
                "is this really a label id map?"
            )
        raw = raw.astype(np.uint16)
    return map_ids(raw, table)


def check_same_size(image: np.ndarray, image_path: Path, label: np.ndarray, label_path: Path) -> None:
    if image.shape[:2] != label.shape[:2]:
        (ih, iw), (lh, lw) = image.shape[:2], label.shape[:2]
        raise SegmergeError(
            f"{image_path} is {iw}x{ih} (WxH) but its label {label_path} is {lw}x{lh}; "
            "image and label must have the same size - replace or remove this pair"
        )


def check_train_ids(label: np.ndarray, label_path: Path) -> None:
    bad = (label < 0) | ((label >= NUM_CLASSES) & (label != IGNORE_INDEX))
    if bad.any():
        values = np.unique(label[bad])
        shown = ", ".join(str(v) for v in values[:8]) + (", ..." if len(values) > 8 else "")
        raise SegmergeError(
            f"{label_path}: label values {shown} are not Cityscapes trainIds (0..{NUM_CLASSES - 1}, "
            f"{IGNORE_INDEX} = ignore); if the file holds labelIds, read it with the cityscapes/gta5 reader "
            "or `folder:...,ids=cityscapes`"
        )


def require_files(found: Sequence, folder: Path, layout: str) -> None:
    """Refuse an empty dataset, saying where we looked and what we expected there."""
    if found:
        return
    if not folder.exists():
        raise SegmergeError(f"{folder}: folder does not exist; expected the layout {layout}")
    raise SegmergeError(f"{folder}: no images found; expected the layout {layout}")


def describe_unmatched(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(sorted(names)[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def match_by_file_name(root: Path, image_dir: str, label_dir: str, layout: str) -> list[Pair]:
    """Pair ``root/image_dir/X.png`` with ``root/label_dir/X.png``; any unpaired file is an error.

    ``X_labelTrainIds.png``, which DAFormer/MIC's conversion scripts write next to the
    original labels, is preferred when present: it holds trainIds already.
    """
    images = {p.name: p for p in sorted((root / image_dir).glob("*.png"))}
    require_files(list(images), root / image_dir, layout)
    originals, converted = {}, {}
    for path in sorted((root / label_dir).glob("*.png")):
        if path.stem.endswith(CONVERTED_SUFFIX):
            converted[path.stem[: -len(CONVERTED_SUFFIX)] + path.suffix] = path
        else:
            originals[path.name] = path
    labels = {**originals, **converted}
    no_label = sorted(set(images) - set(labels))
    no_image = sorted(set(labels) - set(images))
    if no_label or no_image:
        parts = []
        if no_label:
            parts.append(
                f"{len(no_label)} images without a label in {root / label_dir} ({describe_unmatched(no_label)})"
            )
        if no_image:
            parts.append(
                f"{len(no_image)} labels without an image in {root / image_dir} ({describe_unmatched(no_image)})"
            )
        raise SegmergeError(
            f"{root}: {'; '.join(parts)}; expected the layout {layout} - check the archives unpacked fully"
        )
    return [Pair(Path(name).stem, path, labels[name]) for name, path in images.items()]


def is_converted(label_path: Path) -> bool:
    """Whether a label file is a ``*_labelTrainIds.png`` (holds trainIds, needs no mapping)."""
    return label_path.stem.endswith(CONVERTED_SUFFIX)


_KINDS: dict[str, type[SegmentationDataset]] = {}


def register(kind: str) -> Callable[[type[SegmentationDataset]], type[SegmentationDataset]]:
    """Class decorator: make a reader available as ``kind:...`` to :func:`open_dataset`."""

    def add(cls: type[SegmentationDataset]) -> type[SegmentationDataset]:
        if kind in _KINDS and _KINDS[kind] is not cls:
            raise ValueError(f"dataset kind {kind!r} is registered twice")
        cls.kind = kind
        _KINDS[kind] = cls
        return cls

    return add


def dataset_kinds() -> list[str]:
    from segmerge.plugins import DATASETS, plugins

    plugins(DATASETS)  # importing a dataset plugin registers its kinds
    return sorted(_KINDS)


def dataset_class(kind: str) -> type[SegmentationDataset]:
    if kind not in _KINDS:
        dataset_kinds()
    try:
        return _KINDS[kind]
    except KeyError:
        raise SegmergeError(
            f"unknown dataset kind {kind!r}; valid kinds: {', '.join(dataset_kinds())} "
            "(e.g. cityscapes:/data/cityscapes)"
        ) from None


def _root_from_spec(kind: str, argument: str) -> Path:
    if not argument.strip():
        raise SegmergeError(f"dataset spec {kind}: needs a folder, e.g. {kind}:/data/{kind}")
    return Path(argument.strip()).expanduser()

"""Cityscapes, semantic (gtFine label PNGs) and panoptic (COCO-format json + PNGs).

Semantic layout, as the official archives unpack::

    {root}/leftImg8bit/{split}/{city}/{name}_leftImg8bit.png
    {root}/gtFine/{split}/{city}/{name}_gtFine_labelIds.png       (labelIds, mapped here)
    {root}/gtFine/{split}/{city}/{name}_gtFine_labelTrainIds.png  (if present: used as is)

``_labelTrainIds.png`` files are what ``csCreateTrainIdLabelImgs`` (and DAFormer/mmseg's
conversion) write; when one exists it wins, otherwise labelIds are mapped with the
official table. The public test split's labels are placeholders (all ignore).

Panoptic layout, as ``cityscapesscripts.preparation.createPanopticImgs`` writes it::

    {root}/gtFine/cityscapes_panoptic_{split}.json
    {root}/gtFine/cityscapes_panoptic_{split}/{city}_{seq}_{frame}_gtFine_panoptic.png

The PNGs hold segment ids as R + 256 G + 256^2 B; the json's category ids are labelIds
(or trainIds for the ``_trainId`` variant, used when only that one exists). Categories
are mapped to trainIds here so panoptic and semantic scores share one class space.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from segmerge.datasets.base import (
    Pair,
    PairedDataset,
    PanopticLabel,
    Sample,
    SegmentationDataset,
    check_same_size,
    describe_unmatched,
    is_converted,
    read_label_ids,
    register,
)
from segmerge.datasets.images import read_image
from segmerge.errors import SegmergeError
from segmerge.labels import CITYSCAPES_PANOPTIC_CATEGORIES, IGNORE_INDEX, LABEL_ID_TO_TRAIN_ID, NUM_CLASSES

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_IDS_SUFFIX = "_gtFine_labelIds.png"
TRAIN_IDS_SUFFIX = "_gtFine_labelTrainIds.png"
SEMANTIC_LAYOUT = (
    "{root}/leftImg8bit/{split}/{city}/{name}_leftImg8bit.png with "
    "{root}/gtFine/{split}/{city}/{name}_gtFine_labelIds.png (or _gtFine_labelTrainIds.png)"
)
PANOPTIC_LAYOUT = (
    "{root}/gtFine/cityscapes_panoptic_{split}.json and {root}/gtFine/cityscapes_panoptic_{split}/*_panoptic.png "
    "(made by `python -m cityscapesscripts.preparation.createPanopticImgs`) with "
    "{root}/leftImg8bit/{split}/{city}/{name}_leftImg8bit.png"
)


def list_images(root: Path, split: str, layout: str) -> list[Path]:
    """All ``leftImg8bit`` images of a split, sorted; refuses a missing or empty split."""
    folder = root / "leftImg8bit" / split
    found = sorted(folder.glob(f"*/*{IMAGE_SUFFIX}"))
    if found:
        return found
    parent = root / "leftImg8bit"
    splits = sorted(p.name for p in parent.iterdir() if p.is_dir()) if parent.is_dir() else []
    where = f"{folder}: folder does not exist" if not folder.is_dir() else f"{folder}: no *{IMAGE_SUFFIX} images found"
    hint = f" ({parent} has the splits: {', '.join(splits)})" if splits else ""
    raise SegmergeError(f"{where}{hint}; expected the layout {layout}")


def sample_name(image_path: Path) -> str:
    """``.../val/frankfurt/frankfurt_000000_000294_leftImg8bit.png`` -> ``frankfurt/frankfurt_000000_000294``."""
    return f"{image_path.parent.name}/{image_path.name[: -len(IMAGE_SUFFIX)]}"


@register("cityscapes")
class CityscapesDataset(PairedDataset):
    """Cityscapes fine annotations as trainIds (500 val, 2,975 train, 1,525 test images)."""

    def __init__(self, root: Path | str, split: str = "val") -> None:
        self.root, self.split = Path(root), split
        pairs, missing = [], []
        labels = self.root / "gtFine" / split
        for image_path in list_images(self.root, split, SEMANTIC_LAYOUT):
            name = sample_name(image_path)
            train_ids, label_ids = labels / f"{name}{TRAIN_IDS_SUFFIX}", labels / f"{name}{LABEL_IDS_SUFFIX}"
            label = train_ids if train_ids.is_file() else label_ids if label_ids.is_file() else None
            if label is None:
                missing.append(name)
            pairs.append(Pair(name, image_path, label))
        if missing:
            raise SegmergeError(
                f"{labels}: no label for {len(missing)} of {len(pairs)} images ({describe_unmatched(missing)}); "
                f"expected the layout {SEMANTIC_LAYOUT} - unpack gtFine_trainvaltest.zip into {self.root}"
            )
        super().__init__(pairs)

    def decode_label(self, path: Path) -> np.ndarray:
        if is_converted(path):  # *_gtFine_labelTrainIds.png
            return super().decode_label(path)
        return read_label_ids(path, LABEL_ID_TO_TRAIN_ID)

    def __repr__(self) -> str:
        return f"CityscapesDataset(root={str(self.root)!r}, split={self.split!r}, {len(self)} samples)"


@register("cityscapes-panoptic")
class CityscapesPanopticDataset(SegmentationDataset):
    """Cityscapes panoptic ground truth; ``label`` is derived from the panoptic segments.

    ``categories``: the 19 categories with trainIds as ids and ``isthing`` marked.
    Thing pixels without an instance (segment id < 1000) are crowd segments (iscrowd 1).
    """

    categories = CITYSCAPES_PANOPTIC_CATEGORIES

    def __init__(self, root: Path | str, split: str = "val") -> None:
        self.root, self.split = Path(root), split
        self.json_path, self.png_dir, category_ids_are_label_ids = self._find_json()
        data = self._read_json()
        to_train_id = self._category_map(data, category_ids_are_label_ids)
        images = {p.name: p for p in list_images(self.root, split, PANOPTIC_LAYOUT)}
        file_names = {img.get("id"): img.get("file_name") for img in data.get("images", [])}
        self.entries: list[tuple[str, Path, Path, list[dict]]] = []
        missing = []
        for ann in sorted(data.get("annotations", []), key=lambda a: str(a.get("image_id"))):
            try:
                image_id = str(ann["image_id"])
                png = self.png_dir / ann["file_name"]
                segments = [
                    {
                        "id": int(s["id"]),
                        "category_id": to_train_id[int(s["category_id"])],
                        "iscrowd": int(s.get("iscrowd", 0)),
                        "area": int(s["area"]),
                    }
                    for s in ann["segments_info"]
                ]
            except (KeyError, TypeError, ValueError) as exc:
                raise SegmergeError(
                    f"{self.json_path}: annotation {ann.get('image_id', '?')!r} is malformed or uses an unknown "
                    f"category ({type(exc).__name__}: {exc}); regenerate the json with createPanopticImgs"
                ) from exc
            image_path = images.get(file_names.get(image_id) or f"{image_id}{IMAGE_SUFFIX}")
            if image_path is None or not png.is_file():
                missing.append(image_id if image_path is None else str(png))
                continue
            self.entries.append((sample_name(image_path), image_path, png, segments))
        if missing:
            image_dir = self.root / "leftImg8bit" / split
            raise SegmergeError(
                f"{self.json_path}: {len(missing)} annotations lack their image (in {image_dir}) or panoptic PNG "
                f"(in {self.png_dir}): {describe_unmatched(missing)}; expected the layout {PANOPTIC_LAYOUT}"
            )
        if not self.entries:
            raise SegmergeError(f"{self.json_path}: holds no annotations; expected the layout {PANOPTIC_LAYOUT}")

    def _find_json(self) -> tuple[Path, Path, bool]:
        gt = self.root / "gtFine"
        for suffix, label_ids in (("", True), ("_trainId", False)):
            json_path = gt / f"cityscapes_panoptic_{self.split}{suffix}.json"
            if json_path.is_file():
                return json_path, gt / f"cityscapes_panoptic_{self.split}{suffix}", label_ids
        raise SegmergeError(
            f"{gt / f'cityscapes_panoptic_{self.split}.json'}: not found; expected the layout {PANOPTIC_LAYOUT}"
        )

    def _read_json(self) -> dict:
        try:
            data = json.loads(self.json_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SegmergeError(f"{self.json_path}: cannot read this panoptic json ({exc}); regenerate it") from exc
        if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
            raise SegmergeError(f"{self.json_path}: not a COCO panoptic json (no 'annotations' list)")
        return data

    def _category_map(self, data: dict, label_ids: bool) -> dict[int, int]:
        """json category id -> trainId; a category outside the 19 classes is refused."""
        mapping = {}
        for category in data.get("categories", []):
            try:
                cid = int(category["id"])
            except (KeyError, TypeError, ValueError) as exc:
                raise SegmergeError(f"{self.json_path}: category {category!r} has no integer id") from exc
            train_id = int(LABEL_ID_TO_TRAIN_ID[cid]) if label_ids and 0 <= cid < 256 else cid
            if not 0 <= train_id < NUM_CLASSES:
                raise SegmergeError(
                    f"{self.json_path}: category {category.get('name', cid)!r} (id {cid}) is not one of the 19 "
                    "evaluated Cityscapes classes"
                )
            mapping[cid] = train_id
        return mapping

    @property
    def names(self) -> list[str]:
        return [entry[0] for entry in self.entries]

    def __len__(self) -> int:
        return len(self.entries)

    def load(self, index: int) -> Sample:
        name, image_path, png, segments = self.entries[index]
        image = read_image(image_path)
        rgb = read_image(png).astype(np.int64)
        ids = rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]
        check_same_size(image, image_path, ids, png)
        train_id_of = {s["id"]: s["category_id"] for s in segments}
        present, inverse = np.unique(ids, return_inverse=True)
        unknown = [int(i) for i in present if i != 0 and int(i) not in train_id_of]
        if unknown:
            raise SegmergeError(
                f"{png}: segment ids {unknown[:8]} are not in {self.json_path} for this image; "
                "the PNG and json do not belong together - regenerate them"
            )
        table = np.array([train_id_of.get(int(i), IGNORE_INDEX) for i in present], dtype=np.int64)
        label = table[inverse.reshape(ids.shape)]
        return Sample(name, image, label, image_path, panoptic=PanopticLabel(ids, segments), label_path=png)

    def __repr__(self) -> str:
        return f"CityscapesPanopticDataset(root={str(self.root)!r}, split={self.split!r}, {len(self)} samples)"

"""Any folder of images, with or without a parallel folder of label PNGs.

For data without a dedicated reader (ACDC, Dark Zurich, BDD100K, your own) and for
unlabelled target-domain images (``segmerge tune`` needs images only). Files are matched
by their path relative to their folder and their name without extension, after removing
an optional suffix::

    folder:images=/data/acdc/rgb_anon/night/val,labels=/data/acdc/gt/night/val,
           image_suffix=_rgb_anon,label_suffix=_gt_labelTrainIds

pairs ``GOPR0351/GOPR0351_frame_000159_rgb_anon.png`` with
``GOPR0351/GOPR0351_frame_000159_gt_labelTrainIds.png``. With a suffix given, files
without it are ignored (ACDC keeps colour and labelIds PNGs next to the trainIds ones).
Labels hold trainIds unless ``ids=cityscapes`` says they hold Cityscapes labelIds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segmerge.datasets.base import Pair, PairedDataset, describe_unmatched, read_label_ids, register, require_files
from segmerge.errors import SegmergeError
from segmerge.labels import LABEL_ID_TO_TRAIN_ID

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
LABEL_EXTENSIONS = (".png",)
ID_SPACES = ("train", "cityscapes")
SPEC_KEYS = ("images", "labels", "ids", "image_suffix", "label_suffix")
LAYOUT = "{images}/**/NAME.png|.jpg|.jpeg and optionally {labels}/**/NAME.png (trainIds), matched by NAME"


@register("folder")
class FolderDataset(PairedDataset):
    """Images (``.png``/``.jpg``/``.jpeg``, searched recursively) and optional label PNGs."""

    def __init__(
        self,
        images: Path | str,
        labels: Path | str | None = None,
        *,
        ids: str = "train",
        image_suffix: str = "",
        label_suffix: str = "",
        split: str | None = None,
    ) -> None:
        if ids not in ID_SPACES:
            raise SegmergeError(f"folder dataset: ids={ids!r} is not one of {', '.join(ID_SPACES)}")
        self.images = Path(images)
        self.labels = Path(labels) if labels is not None else None
        self.ids, self.split = ids, split
        found = index_files(self.images, IMAGE_EXTENSIONS, image_suffix)
        require_files(list(found), self.images, LAYOUT)
        if self.labels is None:
            super().__init__([Pair(name, path) for name, path in found.items()])
            return
        if not self.labels.is_dir():
            raise SegmergeError(f"{self.labels}: label folder does not exist; expected the layout {LAYOUT}")
        labels_found = index_files(self.labels, LABEL_EXTENSIONS, label_suffix)
        no_label = sorted(set(found) - set(labels_found))
        no_image = sorted(set(labels_found) - set(found))
        if no_label or no_image:
            parts = []
            if no_label:
                parts.append(f"{len(no_label)} images without a label ({describe_unmatched(no_label)})")
            if no_image:
                parts.append(f"{len(no_image)} labels without an image ({describe_unmatched(no_image)})")
            raise SegmergeError(
                f"{self.images} and {self.labels} do not match: {'; '.join(parts)}. Files pair up by relative path "
                "and name without extension; use image_suffix=/label_suffix= when the names differ by a suffix"
            )
        super().__init__([Pair(name, path, labels_found[name]) for name, path in found.items()])

    @classmethod
    def from_spec(cls, argument: str, split: str) -> FolderDataset:
        """``images=/x/img,labels=/x/lbl[,ids=cityscapes][,image_suffix=..][,label_suffix=..]`` or just a folder."""
        if "=" not in argument:
            options = {"images": argument}
        else:
            options = {}
            for item in filter(None, (part.strip() for part in argument.split(","))):
                key, sep, value = item.partition("=")
                key = key.strip()
                if not sep or key not in SPEC_KEYS:
                    raise SegmergeError(
                        f"folder dataset spec: {item!r} is not key=value with a key among {', '.join(SPEC_KEYS)}; "
                        "e.g. folder:images=/x/img,labels=/x/lbl"
                    )
                options[key] = value.strip()
        if not options.get("images"):
            raise SegmergeError("folder dataset spec needs images=FOLDER, e.g. folder:images=/x/img,labels=/x/lbl")
        images = Path(options.pop("images")).expanduser()
        labels = options.pop("labels", None)
        return cls(images, Path(labels).expanduser() if labels else None, split=split, **options)

    def decode_label(self, path: Path) -> np.ndarray:
        if self.ids == "cityscapes":
            return read_label_ids(path, LABEL_ID_TO_TRAIN_ID)
        return super().decode_label(path)

    def __repr__(self) -> str:
        labels = f", labels={str(self.labels)!r}" if self.labels else ""
        return f"FolderDataset(images={str(self.images)!r}{labels}, {len(self)} samples)"


def index_files(folder: Path, extensions: tuple[str, ...], suffix: str = "") -> dict[str, Path]:
    """Relative name (``sub/dir/stem`` without suffix) -> file, for the matching files under ``folder``.

    Hidden files (``._x.png`` from macOS archives) are skipped; two files with one name
    (``a.png`` and ``a.jpg``) are an error, as either could be meant.
    """
    found: dict[str, Path] = {}
    clashes = []
    for path in sorted(folder.rglob("*")):
        if path.name.startswith(".") or path.suffix.lower() not in extensions or not path.is_file():
            continue
        stem = path.stem
        if suffix:
            if not stem.endswith(suffix):
                continue
            stem = stem[: -len(suffix)]
        name = (path.parent.relative_to(folder) / stem).as_posix()
        if name in found:
            clashes.append(f"{found[name].name} / {path.name}")
            continue
        found[name] = path
    if clashes:
        raise SegmergeError(
            f"{folder}: several files share a name ({describe_unmatched(clashes)}); keep one file per name"
        )
    return found

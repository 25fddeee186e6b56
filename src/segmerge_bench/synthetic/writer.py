"""Writing a synthetic domain to disk in the Cityscapes layout, so Cityscapes tooling reads it.

For each of ``n`` scenes of a split (the same scenes :class:`SyntheticDataset` serves for
that split and seed), in ``out_dir``::

    leftImg8bit/{split}/{domain}/{domain}_{seed:06d}_{i:06d}_leftImg8bit.png
    gtFine/{split}/{domain}/{domain}_{seed:06d}_{i:06d}_gtFine_labelTrainIds.png   trainIds, 255 ignore
    gtFine/{split}/{domain}/{domain}_{seed:06d}_{i:06d}_gtFine_labelIds.png        Cityscapes labelIds
    gtFine/{split}/{domain}/{domain}_{seed:06d}_{i:06d}_gtFine_instanceIds.png     16-bit: labelId * 1000 + k
    gtFine/cityscapes_panoptic_{split}.json        COCO panoptic, category ids = labelIds
    gtFine/cityscapes_panoptic_{split}/{domain}_{seed:06d}_{i:06d}_gtFine_panoptic.png
    domain.json                                    the domain (``load_domain`` reads it back)

The domain plays the part of a Cityscapes city. labelIds come from the official table in
``cityscapesscripts.helpers.labels`` (``trainId2label[t].id``; ignore becomes 0,
"unlabeled"); instance and panoptic ids follow ``json2instanceImg`` and
``createPanopticImgs``: a thing's id is its labelId * 1000 + its index among the image's
objects of that class, a stuff segment's id its labelId, and the panoptic PNG holds
id = R + 256 G + 256^2 B.

Writing is atomic: everything goes to a temporary folder beside ``out_dir`` first and is
renamed into place, so an interrupted run leaves no half-written split. A folder that is
not empty is refused unless ``overwrite=True``, except that another split of the same
domain may be added to it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from segmerge.checkpoints.atomic import temporary_sibling
from segmerge.errors import SegmergeError
from segmerge.labels import IGNORE_INDEX
from segmerge_bench.synthetic.dataset import SPLIT_OFFSETS, SPLIT_SIZE
from segmerge_bench.synthetic.domains import TRAIN_ID_NAMES, Domain, get_domain
from segmerge_bench.synthetic.scenes import STUFF_SEGMENT_BASE, Scene, render


def _official_labels():
    try:
        from cityscapesscripts.helpers import labels
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise SegmergeError(
            "writing the Cityscapes layout needs the official label table: pip install cityscapesscripts"
        ) from exc
    return labels


def label_id_table() -> np.ndarray:
    """trainId (0..255) -> Cityscapes labelId, from the official ``trainId2label``."""
    labels = _official_labels()
    table = np.full(256, labels.trainId2label[IGNORE_INDEX].id, dtype=np.uint8)
    for train_id in range(len(TRAIN_ID_NAMES)):
        table[train_id] = labels.trainId2label[train_id].id
    return table


def panoptic_categories() -> list[dict]:
    """The 19 evaluated Cityscapes classes as COCO panoptic categories (ids = labelIds)."""
    labels = _official_labels()
    return [
        {
            "id": int(lab.id),
            "name": lab.name,
            "color": list(lab.color),
            "supercategory": lab.category,
            "isthing": int(lab.hasInstances),
        }
        for lab in labels.labels
        if not lab.ignoreInEval
    ]


def cityscapes_ids(scene: Scene, label_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict]]:
    """A scene in Cityscapes' ids: labelIds (uint8), instanceIds (uint16: labelId on stuff,
    labelId * 1000 + k on the k-th object of a class), panoptic segment ids (uint32, 0 void)
    and the panoptic segments (category ids = labelIds)."""
    labels = np.take(label_ids, scene.label)
    to_cityscapes = np.zeros(STUFF_SEGMENT_BASE + 256, dtype=np.uint32)
    segments = []
    per_class: dict[int, int] = {}
    for seg in scene.segments:
        label_id = int(label_ids[seg["category_id"]])
        if seg["id"] < STUFF_SEGMENT_BASE:
            k = per_class.get(label_id, 0)
            per_class[label_id] = k + 1
            cs_id = label_id * 1000 + k
        else:
            cs_id = label_id
        to_cityscapes[seg["id"]] = cs_id
        segments.append({**seg, "id": cs_id, "category_id": label_id})
    panoptic = np.take(to_cityscapes, scene.panoptic_ids)
    instance_ids = np.where(scene.instances > 0, panoptic, labels).astype(np.uint16)
    return labels, instance_ids, panoptic, segments


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """Segment ids -> RGB (id = R + 256 G + 256^2 B), as COCO panoptic PNGs store them."""
    ids = ids.astype(np.uint32)
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], axis=-1).astype(np.uint8)


def write_domain(
    domain: Domain | str, n: int, out_dir: Path | str, seed: int = 0, split: str = "train", overwrite: bool = False
) -> Path:
    """Render ``n`` scenes of ``domain`` (split ``split``, seed ``seed``) into ``out_dir`` in
    the Cityscapes layout (see the module docstring); returns ``out_dir``."""
    domain = get_domain(domain)
    if split not in SPLIT_OFFSETS:
        raise SegmergeError(f"split {split!r} is unknown; valid splits: {', '.join(SPLIT_OFFSETS)}")
    if isinstance(n, bool) or not isinstance(n, int) or not 0 < n <= SPLIT_SIZE:
        raise SegmergeError(f"n must be an integer in 1..{SPLIT_SIZE}, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 1_000_000:
        raise SegmergeError(f"seed must be an integer in 0..999999 (it is part of the file names), got {seed!r}")
    root = Path(out_dir).expanduser()
    targets = split_outputs(domain.name, split)
    mode = _plan(root, domain, targets, overwrite)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(root, ".writing", folder=True)  # the umask's permissions, as mkdir gives
    try:
        _write_split(domain, n, tmp, seed, split)
        if mode == "new":
            if root.exists():
                root.rmdir()  # empty (checked by _plan)
            os.replace(tmp, root)
            return root
        if mode == "replace-all":
            trash = temporary_sibling(root, ".replaced", folder=True)
            os.replace(root, trash / root.name)
            os.replace(tmp, root)
            shutil.rmtree(trash, ignore_errors=True)
            return root
        for rel in targets:  # add or replace this split in a root of the same domain
            if (root / rel).exists():
                old = tmp / f"old-{rel.replace('/', '-')}"
                os.replace(root / rel, old)
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp / rel, root / rel)
        os.replace(tmp / "domain.json", root / "domain.json")
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def split_outputs(name: str, split: str) -> list[str]:
    """The paths (relative to the root) that one split of one domain owns."""
    return [
        f"leftImg8bit/{split}/{name}",
        f"gtFine/{split}/{name}",
        f"gtFine/cityscapes_panoptic_{split}",
        f"gtFine/cityscapes_panoptic_{split}.json",
    ]


def _plan(root: Path, domain: Domain, targets: list[str], overwrite: bool) -> str:
    """'new' (absent or empty root), 'split' (add/replace a split of the same domain's root)
    or 'replace-all'; refuses what would overwrite without ``overwrite``."""
    if root.exists() and not root.is_dir():
        raise SegmergeError(f"{root}: exists and is not a folder")
    if not root.exists() or not any(root.iterdir()):
        return "new"
    same_domain = False
    marker = root / "domain.json"
    if marker.is_file():
        try:
            same_domain = Domain.from_dict(json.loads(marker.read_text(encoding="utf-8"))) == domain
        except (ValueError, SegmergeError):
            same_domain = False
    taken = [t for t in targets if (root / t).exists()]
    if same_domain and not taken:
        return "split"
    if not overwrite:
        what = f"already holds {', '.join(taken)}" if same_domain else "is not empty"
        raise SegmergeError(
            f"{root}: {what}; pass --overwrite (overwrite=True) to replace it, or choose another folder"
        )
    return "split" if same_domain else "replace-all"


def _write_split(domain: Domain, n: int, root: Path, seed: int, split: str) -> None:
    label_ids = label_id_table()
    name = domain.name
    images_dir = root / "leftImg8bit" / split / name
    labels_dir = root / "gtFine" / split / name
    panoptic_dir = root / "gtFine" / f"cityscapes_panoptic_{split}"
    for folder in (images_dir, labels_dir, panoptic_dir):
        folder.mkdir(parents=True)
    images, annotations = [], []
    for i in range(n):
        scene = render(domain, seed, SPLIT_OFFSETS[split] + i)
        base = f"{name}_{seed:06d}_{i:06d}"
        labels, instance_ids, panoptic, segments = cityscapes_ids(scene, label_ids)
        Image.fromarray(scene.image).save(images_dir / f"{base}_leftImg8bit.png")
        Image.fromarray(scene.label.astype(np.uint8)).save(labels_dir / f"{base}_gtFine_labelTrainIds.png")
        Image.fromarray(labels).save(labels_dir / f"{base}_gtFine_labelIds.png")
        Image.fromarray(instance_ids).save(labels_dir / f"{base}_gtFine_instanceIds.png")
        Image.fromarray(id_to_rgb(panoptic)).save(panoptic_dir / f"{base}_gtFine_panoptic.png")
        h, w = scene.label.shape
        images.append({"id": base, "file_name": f"{base}_leftImg8bit.png", "width": w, "height": h})
        annotations.append({"image_id": base, "file_name": f"{base}_gtFine_panoptic.png", "segments_info": segments})
    data = {"images": images, "annotations": annotations, "categories": panoptic_categories()}
    (root / "gtFine" / f"cityscapes_panoptic_{split}.json").write_text(json.dumps(data), encoding="utf-8")
    (root / "domain.json").write_text(json.dumps(domain.to_dict(), indent=2) + "\n", encoding="utf-8")

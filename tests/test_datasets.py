"""Dataset readers on tiny fabricated folders in each dataset's real layout (no downloads)."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from cityscapesscripts.helpers.labels import labels as cs_labels
from PIL import Image

from segmerge.datasets import (
    CityscapesDataset,
    CityscapesPanopticDataset,
    FolderDataset,
    GTA5Dataset,
    SynthiaDataset,
    dataset_kinds,
    open_dataset,
)
from segmerge.datasets.images import decode_png, read_png_channels
from segmerge.errors import SegmergeError
from segmerge.labels import (
    CITYSCAPES,
    CITYSCAPES_CLASSES,
    CITYSCAPES_PANOPTIC_CATEGORIES,
    LABEL_ID_TO_TRAIN_ID,
    SYNTHIA_TO_TRAIN_ID,
)
from segmerge.reports import colorize

H, W = 8, 16
ROAD, SIDEWALK, CAR, PERSON, UNLABELED, SKY = 7, 8, 26, 24, 0, 23  # Cityscapes labelIds
# SYNTHIA -> trainId table of DAFormer's tools/convert_datasets/synthia.py, typed out independently.
DAFORMER_SYNTHIA = {3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 16: 9, 1: 10, 10: 11, 17: 12}
DAFORMER_SYNTHIA |= {8: 13, 18: 14, 19: 15, 20: 16, 12: 17, 11: 18}


# ---------------------------------------------------------------- file writers


def write_rgb(path: Path, seed: int, size: tuple[int, int] = (H, W)) -> np.ndarray:
    image = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return image


def write_ids(path: Path, ids: np.ndarray, palette: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = np.asarray(ids).astype(np.uint8)
    if palette:  # GTA5 stores its labels as palette PNGs: the indices are the labelIds
        im = Image.new("P", (ids.shape[1], ids.shape[0]))
        colours = [c for lab in sorted(cs_labels, key=lambda lab: lab.id) if lab.id >= 0 for c in lab.color]
        im.putpalette(colours + [0] * (768 - len(colours)))
        im.frombytes(ids.tobytes())
    else:
        im = Image.fromarray(ids)
    im.save(path)


def encode_png(samples: np.ndarray) -> bytes:
    """A minimal PNG encoder (Pillow cannot write 16-bit colour), cycling through all five
    row filters so readers are exercised on Sub/Up/Average/Paeth as libpng writes them."""
    height, width, channels = samples.shape
    depth = 16 if samples.dtype == np.uint16 else 8
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    bpp = channels * depth // 8
    data = samples.astype(">u2" if depth == 16 else np.uint8).tobytes()
    rows = np.frombuffer(data, dtype=np.uint8).reshape(height, width * bpp).astype(np.int64)
    prior = np.zeros(width * bpp, dtype=np.int64)
    out = bytearray()
    for y, cur in enumerate(rows):
        left = np.concatenate([np.zeros(bpp, np.int64), cur[:-bpp]])
        upper_left = np.concatenate([np.zeros(bpp, np.int64), prior[:-bpp]])
        kind = y % 5
        if kind == 0:
            predictor = np.zeros_like(cur)
        elif kind == 1:
            predictor = left
        elif kind == 2:
            predictor = prior
        elif kind == 3:
            predictor = (left + prior) // 2
        else:
            p = left + prior - upper_left
            pa, pb, pc = np.abs(p - left), np.abs(p - prior), np.abs(p - upper_left)
            predictor = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prior, upper_left))
        out.append(kind)
        out += ((cur - predictor) % 256).astype(np.uint8).tobytes()
        prior = cur

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(out))) + chunk(b"IEND", b"")
    )


def synthia_label(classes: np.ndarray, instances: np.ndarray) -> np.ndarray:
    """SYNTHIA's GT/LABELS layout: uint16 [H, W, 3], class in channel 0, instance in channel 1."""
    return np.stack([classes, instances, np.zeros_like(classes)], axis=-1).astype(np.uint16)


def cityscapes_ids(seed: int) -> np.ndarray:
    ids = np.full((H, W), ROAD, dtype=np.uint8)
    ids[:2] = SKY
    ids[2:4, :4] = CAR
    ids[4:6, 4:8] = PERSON
    ids[6:, 8:] = UNLABELED
    ids[7, seed % W] = SIDEWALK
    return ids


@pytest.fixture
def cityscapes_root(tmp_path: Path) -> Path:
    root = tmp_path / "cityscapes"
    for i, (city, frame) in enumerate(
        [("frankfurt", "000000_000294"), ("frankfurt", "000001_000019"), ("lindau", "000000_000019")]
    ):
        name = f"{city}/{city}_{frame}"
        write_rgb(root / "leftImg8bit" / "val" / f"{name}_leftImg8bit.png", seed=i)
        write_ids(root / "gtFine" / "val" / f"{name}_gtFine_labelIds.png", cityscapes_ids(i))
    write_rgb(root / "leftImg8bit" / "train" / "aachen" / "aachen_000000_000019_leftImg8bit.png", seed=9)
    write_ids(root / "gtFine" / "train" / "aachen" / "aachen_000000_000019_gtFine_labelIds.png", cityscapes_ids(9))
    return root


# ---------------------------------------------------------------- label tables


def test_label_table_follows_cityscapesscripts():
    for lab in cs_labels:
        if lab.id < 0:
            continue
        expected = lab.trainId if 0 <= lab.trainId < 19 else 255
        assert LABEL_ID_TO_TRAIN_ID[lab.id] == expected, lab.name
    assert (
        LABEL_ID_TO_TRAIN_ID[ROAD] == 0 and LABEL_ID_TO_TRAIN_ID[CAR] == 13 and LABEL_ID_TO_TRAIN_ID[UNLABELED] == 255
    )
    assert (LABEL_ID_TO_TRAIN_ID[34:] == 255).all()
    assert CITYSCAPES_CLASSES[0] == "road" and CITYSCAPES_CLASSES[13] == "car" and len(CITYSCAPES_CLASSES) == 19


def test_class_table_is_the_official_one_entry_by_entry():
    evaluated = sorted((lab for lab in cs_labels if not lab.ignoreInEval), key=lambda lab: lab.trainId)
    assert len(CITYSCAPES) == len(evaluated) == 19
    for ours, official in zip(CITYSCAPES, evaluated, strict=True):
        assert (ours.train_id, ours.label_id, ours.name) == (official.trainId, official.id, official.name)
        assert ours.color == tuple(official.color) and ours.is_thing == official.hasInstances, official.name


def test_label_module_imports_nothing_of_segmerge_nor_cityscapesscripts():
    import ast

    import segmerge.labels

    tree = ast.parse(Path(segmerge.labels.__file__).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported == {"__future__", "dataclasses", "numpy"}


def test_synthia_table_matches_daformer():
    assert SYNTHIA_TO_TRAIN_ID == DAFORMER_SYNTHIA


def test_panoptic_categories_and_palette():
    assert [c["id"] for c in CITYSCAPES_PANOPTIC_CATEGORIES] == list(range(19))
    things = [c["name"] for c in CITYSCAPES_PANOPTIC_CATEGORIES if c["isthing"]]
    assert things == ["person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"]
    car = CITYSCAPES_PANOPTIC_CATEGORIES[13]
    assert car["label_id"] == CAR and car["color"] == (0, 0, 142)
    rgb = colorize(np.array([[0, 13, 255]]))
    assert rgb.tolist() == [[[128, 64, 128], [0, 0, 142], [0, 0, 0]]]


# ---------------------------------------------------------------- Cityscapes


def test_cityscapes_reads_labelids_as_trainids(cityscapes_root: Path):
    ds = CityscapesDataset(cityscapes_root, split="val")
    assert len(ds) == 3
    assert list(ds.names) == [
        "frankfurt/frankfurt_000000_000294",
        "frankfurt/frankfurt_000001_000019",
        "lindau/lindau_000000_000019",
    ]
    sample = ds[0]
    assert sample.image.dtype == np.uint8 and sample.image.shape == (H, W, 3)
    assert sample.label.dtype == np.int64 and sample.label.shape == (H, W)
    assert sample.label[0, 0] == 10  # sky
    assert sample.label[2, 0] == 13  # car
    assert sample.label[4, 4] == 11  # person
    assert sample.label[3, 10] == 0  # road
    assert sample.label[6, 10] == 255  # unlabeled
    assert sample.label[7, 0] == 1  # sidewalk
    expected = np.asarray(Image.open(sample.image_path).convert("RGB"))
    np.testing.assert_array_equal(sample.image, expected)
    assert ds[-1].name == "lindau/lindau_000000_000019"
    assert len(CityscapesDataset(cityscapes_root, split="train")) == 1


def test_cityscapes_prefers_label_train_ids(cityscapes_root: Path):
    name = "lindau/lindau_000000_000019"
    train_ids = np.full((H, W), 5, dtype=np.uint8)  # pole, unlike the labelIds file
    write_ids(cityscapes_root / "gtFine" / "val" / f"{name}_gtFine_labelTrainIds.png", train_ids)
    sample = CityscapesDataset(cityscapes_root)[2]
    assert sample.label_path.name.endswith("_gtFine_labelTrainIds.png")
    assert (sample.label == 5).all()


def test_cityscapes_errors_name_the_place(cityscapes_root: Path, tmp_path: Path):
    with pytest.raises(SegmergeError, match=r"leftImg8bit/test.*does not exist.*train, val"):
        CityscapesDataset(cityscapes_root, split="test")
    empty = tmp_path / "empty"
    (empty / "leftImg8bit" / "val").mkdir(parents=True)
    with pytest.raises(SegmergeError, match=r"empty/leftImg8bit/val.*no \*_leftImg8bit.png.*expected the layout"):
        CityscapesDataset(empty)
    (cityscapes_root / "gtFine" / "val" / "lindau" / "lindau_000000_000019_gtFine_labelIds.png").unlink()
    with pytest.raises(SegmergeError, match=r"no label for 1 of 3 images \(lindau/lindau_000000_000019\)"):
        CityscapesDataset(cityscapes_root)


# ---------------------------------------------------------------- Cityscapes panoptic


def _write_panoptic(root: Path) -> dict:
    """Two val images in the format createPanopticImgs.py writes (category ids = labelIds)."""
    categories = [
        {
            "id": lab.id,
            "name": lab.name,
            "color": list(lab.color),
            "supercategory": lab.category,
            "isthing": int(lab.hasInstances),
        }
        for lab in cs_labels
        if not lab.ignoreInEval
    ]
    images, annotations = [], []
    for i, (city, frame) in enumerate([("frankfurt", "000000_000294"), ("munster", "000001_000019")]):
        image_id = f"{city}_{frame}"
        write_rgb(root / "leftImg8bit" / "val" / city / f"{image_id}_leftImg8bit.png", seed=20 + i)
        ids = np.zeros((H, W), dtype=np.int64)  # 0 = void (unlabeled)
        ids[:4] = ROAD  # stuff: segment id = labelId
        ids[4:, :4] = CAR * 1000 + 1  # a car instance
        ids[4:, 4:8] = CAR * 1000 + 2  # another
        ids[4:, 8:12] = PERSON  # person pixels without instance: crowd
        segments = []
        for seg, cat, crowd in [
            (ROAD, ROAD, 0),
            (CAR * 1000 + 1, CAR, 0),
            (CAR * 1000 + 2, CAR, 0),
            (PERSON, PERSON, 1),
        ]:
            segments.append(
                {"id": seg, "category_id": cat, "area": int((ids == seg).sum()), "bbox": [0, 0, 1, 1], "iscrowd": crowd}
            )
        rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)
        file_name = f"{image_id}_gtFine_panoptic.png"
        (root / "gtFine" / "cityscapes_panoptic_val").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(root / "gtFine" / "cityscapes_panoptic_val" / file_name)
        images.append({"id": image_id, "width": W, "height": H, "file_name": f"{image_id}_leftImg8bit.png"})
        annotations.append({"image_id": image_id, "file_name": file_name, "segments_info": segments})
    data = {"images": images, "annotations": annotations, "categories": categories}
    (root / "gtFine" / "cityscapes_panoptic_val.json").write_text(json.dumps(data))
    return data


def test_cityscapes_panoptic(tmp_path: Path):
    root = tmp_path / "cityscapes"
    _write_panoptic(root)
    ds = CityscapesPanopticDataset(root)
    assert len(ds) == 2 and list(ds.names) == ["frankfurt/frankfurt_000000_000294", "munster/munster_000001_000019"]
    sample = ds[0]
    pan = sample.panoptic
    assert pan.ids.dtype == np.int64 and pan.ids[5, 0] == 26001 and pan.ids[5, 5] == 26002 and pan.ids[0, 0] == 7
    by_id = {s["id"]: s for s in pan.segments_info}
    assert by_id[26001] == {"id": 26001, "category_id": 13, "iscrowd": 0, "area": 16}
    assert by_id[7]["category_id"] == 0 and by_id[PERSON]["category_id"] == 11 and by_id[PERSON]["iscrowd"] == 1
    assert sample.label[0, 0] == 0 and sample.label[5, 0] == 13 and sample.label[5, 9] == 11
    assert sample.label[5, 13] == 255  # void
    assert ds.categories[13]["isthing"] == 1 and ds.categories[0]["isthing"] == 0
    assert isinstance(open_dataset(f"cityscapes-panoptic:{root}"), CityscapesPanopticDataset)


def test_cityscapes_panoptic_errors(tmp_path: Path):
    root = tmp_path / "cityscapes"
    with pytest.raises(SegmergeError, match=r"cityscapes_panoptic_val.json: not found.*createPanopticImgs"):
        CityscapesPanopticDataset(root)
    data = _write_panoptic(root)
    png = root / "gtFine" / "cityscapes_panoptic_val" / "munster_000001_000019_gtFine_panoptic.png"
    png.rename(png.with_suffix(".bak"))
    with pytest.raises(SegmergeError, match=rf"1 annotations lack their image .* or panoptic PNG .*: {png}"):
        CityscapesPanopticDataset(root)
    png.with_suffix(".bak").rename(png)
    data["annotations"][1]["segments_info"] = data["annotations"][1]["segments_info"][:1]  # drop the cars
    (root / "gtFine" / "cityscapes_panoptic_val.json").write_text(json.dumps(data))
    ds = CityscapesPanopticDataset(root)
    with pytest.raises(
        SegmergeError, match=r"munster_000001_000019_gtFine_panoptic.png: segment ids \[24, 26001, 26002\]"
    ):
        ds[1]
    data["annotations"][0]["segments_info"][0]["category_id"] = 4  # 'static': not an evaluated class
    (root / "gtFine" / "cityscapes_panoptic_val.json").write_text(json.dumps(data))
    with pytest.raises(SegmergeError, match=r"cityscapes_panoptic_val.json: annotation 'frankfurt_000000_000294'"):
        CityscapesPanopticDataset(root)


# ---------------------------------------------------------------- GTA5


def test_gta5_palette_labels(tmp_path: Path):
    root = tmp_path / "gta5"
    for i in range(1, 4):
        write_rgb(root / "images" / f"{i:05d}.png", seed=30 + i)
        write_ids(root / "labels" / f"{i:05d}.png", cityscapes_ids(i), palette=True)
    assert Image.open(root / "labels" / "00001.png").mode == "P"
    ds = open_dataset(f"gta5:{root}", split="val")
    assert isinstance(ds, GTA5Dataset) and len(ds) == 3 and list(ds.names) == ["00001", "00002", "00003"]
    label = ds[0].label
    assert label[0, 0] == 10 and label[2, 0] == 13 and label[3, 10] == 0 and label[6, 10] == 255


def test_gta5_uses_daformer_converted_labels(tmp_path: Path):
    root = tmp_path / "gta5"
    write_rgb(root / "images" / "00001.png", seed=1)
    write_ids(root / "labels" / "00001.png", cityscapes_ids(1), palette=True)
    write_ids(root / "labels" / "00001_labelTrainIds.png", np.full((H, W), 18))
    ds = GTA5Dataset(root)
    assert len(ds) == 1 and (ds[0].label == 18).all()


def test_gta5_mismatched_files(tmp_path: Path):
    root = tmp_path / "gta5"
    write_rgb(root / "images" / "00001.png", seed=1)
    write_rgb(root / "images" / "00002.png", seed=2)
    write_ids(root / "labels" / "00001.png", cityscapes_ids(1))
    write_ids(root / "labels" / "00007.png", cityscapes_ids(1))
    with pytest.raises(
        SegmergeError, match=r"1 images without a label .*\(00002.png\); 1 labels without an image .*00007"
    ):
        GTA5Dataset(root)
    with pytest.raises(SegmergeError, match=r"nowhere/images: folder does not exist; expected the layout"):
        GTA5Dataset(tmp_path / "nowhere")


# ---------------------------------------------------------------- SYNTHIA


def test_png_decoders_read_16bit_colour(tmp_path: Path):
    rng = np.random.default_rng(0)
    for channels in (1, 2, 3, 4):
        for dtype in (np.uint8, np.uint16):
            samples = rng.integers(0, np.iinfo(dtype).max + 1, (7, 5, channels)).astype(dtype)
            path = tmp_path / f"{channels}_{np.dtype(dtype).name}.png"
            path.write_bytes(encode_png(samples))
            np.testing.assert_array_equal(decode_png(path.read_bytes()), samples)
            np.testing.assert_array_equal(read_png_channels(path), samples)


def test_16bit_colour_uses_pillow_and_falls_back_to_zlib(tmp_path: Path, monkeypatch):
    from segmerge.datasets import images

    samples = np.random.default_rng(1).integers(0, 65536, (6, 9, 3)).astype(np.uint16)
    path = tmp_path / "rgb16.png"
    path.write_bytes(encode_png(samples))
    with monkeypatch.context() as m:  # the fast path must not need the pure decoder
        m.setattr(images, "decode_png", lambda data: pytest.fail("pure decoder used"))
        np.testing.assert_array_equal(read_png_channels(path), samples)
    with monkeypatch.context() as m:  # a Pillow whose internals differ: the pure decoder takes over
        m.setattr(images, "_decode_with_rawmode", lambda *args: None)
        np.testing.assert_array_equal(read_png_channels(path), samples)


def test_synthia_16bit_labels(tmp_path: Path):
    root = tmp_path / "synthia"
    classes = np.zeros((H, W), dtype=np.uint16)
    classes[:2] = 1  # sky -> 10
    classes[2:4] = 3  # road -> 0
    classes[4:6, :8] = 8  # car -> 13
    classes[4:6, 8:] = 21  # wall -> 3
    classes[6:, :4] = 13  # parking-slot -> 255
    classes[6:, 4:8] = 10  # pedestrian -> person 11
    classes[6:, 8:] = 22  # lanemarking -> 255
    instances = np.zeros((H, W), dtype=np.uint16)
    instances[4:6, :8] = 1234  # instance ids exceed 8 bits
    for i in range(2):
        write_rgb(root / "RGB" / f"{i:07d}.png", seed=40 + i)
        (root / "GT" / "LABELS").mkdir(parents=True, exist_ok=True)
        (root / "GT" / "LABELS" / f"{i:07d}.png").write_bytes(encode_png(synthia_label(classes, instances)))
    label_path = root / "GT" / "LABELS" / "0000000.png"
    # Why the reader decodes PNGs itself: Pillow keeps only the high byte of 16-bit colour samples.
    assert (np.asarray(Image.open(label_path))[..., 0] == 0).all()
    assert read_png_channels(label_path)[4, 0, 1] == 1234

    ds = open_dataset(f"synthia:{root}")
    assert isinstance(ds, SynthiaDataset) and len(ds) == 2 and list(ds.names) == ["0000000", "0000001"]
    label = ds[0].label
    assert label.dtype == np.int64
    assert label[0, 0] == 10 and label[2, 0] == 0 and label[4, 0] == 13 and label[4, 8] == 3
    assert label[6, 0] == 255 and label[6, 4] == 11 and label[6, 8] == 255


# ---------------------------------------------------------------- folder


def test_folder_pairs_by_name(tmp_path: Path):
    images, labels = tmp_path / "img", tmp_path / "lbl"
    write_rgb(images / "a.png", seed=1)
    write_rgb(images / "sub" / "b.jpg", seed=2)
    write_rgb(images / "c.jpeg", seed=3)
    (images / "notes.txt").write_text("ignored")
    for name in ("a", "sub/b", "c"):
        write_ids(labels / f"{name}.png", np.full((H, W), 4))
    ds = open_dataset(f"folder:images={images},labels={labels}")
    assert isinstance(ds, FolderDataset) and list(ds.names) == ["a", "c", "sub/b"]
    assert all((s.label == 4).all() for s in ds)
    unlabelled = open_dataset(f"folder:images={images}")
    assert len(unlabelled) == 3 and unlabelled[0].label is None and unlabelled[2].image.shape == (H, W, 3)
    assert len(open_dataset(f"folder:{images}")) == 3


def test_folder_suffixes_and_label_ids(tmp_path: Path):
    images, labels = tmp_path / "rgb_anon", tmp_path / "gt"
    write_rgb(images / "GOPR0351" / "GOPR0351_frame_000159_rgb_anon.png", seed=1)
    write_ids(labels / "GOPR0351" / "GOPR0351_frame_000159_gt_labelIds.png", cityscapes_ids(0))
    write_ids(labels / "GOPR0351" / "GOPR0351_frame_000159_gt_labelColor.png", cityscapes_ids(0))
    spec = f"folder:images={images},labels={labels},image_suffix=_rgb_anon,label_suffix=_gt_labelIds,ids=cityscapes"
    ds = open_dataset(spec)
    assert list(ds.names) == ["GOPR0351/GOPR0351_frame_000159"]
    assert ds[0].label[2, 0] == 13 and ds[0].label[6, 10] == 255


def test_folder_mismatch_lists_names(tmp_path: Path):
    images, labels = tmp_path / "img", tmp_path / "lbl"
    for name in ("a", "b", "c"):
        write_rgb(images / f"{name}.png", seed=1)
    write_ids(labels / "a.png", np.zeros((H, W)))
    write_ids(labels / "zz.png", np.zeros((H, W)))
    with pytest.raises(SegmergeError, match=r"2 images without a label \(b, c\); 1 labels without an image \(zz\)"):
        FolderDataset(images, labels)
    write_rgb(images / "a.jpg", seed=2)
    with pytest.raises(SegmergeError, match=r"img: several files share a name \(a.jpg / a.png\)"):
        FolderDataset(images)


def test_folder_spec_errors(tmp_path: Path):
    with pytest.raises(SegmergeError, match=r"'colour=x' is not key=value with a key among images, labels"):
        open_dataset(f"folder:images={tmp_path},colour=x")
    with pytest.raises(SegmergeError, match=r"needs images=FOLDER"):
        open_dataset(f"folder:labels={tmp_path}")
    with pytest.raises(SegmergeError, match=r"ids='rgb' is not one of train, cityscapes"):
        open_dataset(f"folder:images={tmp_path},ids=rgb")


# ---------------------------------------------------------------- sharding and spec


@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 7])
def test_shards_cover_every_sample_once(tmp_path: Path, world_size: int):
    images = tmp_path / "img"
    for i in range(5):
        write_rgb(images / f"{i}.png", seed=i)
    ds = FolderDataset(images)
    shards = [ds.shard(rank, world_size) for rank in range(world_size)]
    names = [name for shard in shards for name in shard.names]
    assert sorted(names) == sorted(ds.names) and len(names) == len(ds)
    assert sum(len(s) for s in shards) == len(ds)
    assert [s.name for s in shards[0]] == list(ds.names)[0::world_size]


def test_shard_arguments_are_checked(tmp_path: Path):
    write_rgb(tmp_path / "img" / "a.png", seed=0)
    ds = FolderDataset(tmp_path / "img")
    with pytest.raises(SegmergeError, match=r"rank must be in 0..1, got 2"):
        ds.shard(2, 2)
    with pytest.raises(SegmergeError, match=r"world_size must be a positive integer"):
        ds.shard(0, 0)
    with pytest.raises(IndexError):
        ds[1]


def test_open_dataset_spec(cityscapes_root: Path):
    assert dataset_kinds() == ["cityscapes", "cityscapes-panoptic", "folder", "gta5", "synthetic", "synthia"]
    ds = open_dataset(f"cityscapes:{cityscapes_root}", split="train")
    assert isinstance(ds, CityscapesDataset) and len(ds) == 1
    with pytest.raises(
        SegmergeError, match=r"unknown dataset kind 'kitti'; valid kinds: cityscapes, cityscapes-panoptic"
    ):
        open_dataset("kitti:/data")
    with pytest.raises(SegmergeError, match=r"needs the form KIND:ARGUMENT"):
        open_dataset(str(cityscapes_root))
    with pytest.raises(SegmergeError, match=r"needs a folder"):
        open_dataset("gta5:")


# ---------------------------------------------------------------- per-sample errors


def test_corrupt_image_names_the_file(cityscapes_root: Path):
    bad = cityscapes_root / "leftImg8bit" / "val" / "frankfurt" / "frankfurt_000001_000019_leftImg8bit.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    ds = CityscapesDataset(cityscapes_root)
    with pytest.raises(SegmergeError, match=rf"{bad}: cannot read this image"):
        ds[1]
    good = cityscapes_root / "leftImg8bit" / "val" / "lindau" / "lindau_000000_000019_leftImg8bit.png"
    good.write_bytes(good.read_bytes()[:60])  # truncated
    with pytest.raises(SegmergeError, match=rf"{good}: cannot read this image"):
        ds[2]


def test_corrupt_synthia_label_names_the_file(tmp_path: Path):
    root = tmp_path / "synthia"
    write_rgb(root / "RGB" / "0000000.png", seed=0)
    (root / "GT" / "LABELS").mkdir(parents=True)
    data = encode_png(synthia_label(np.ones((H, W)), np.zeros((H, W))))
    (root / "GT" / "LABELS" / "0000000.png").write_bytes(data[:-40])
    with pytest.raises(SegmergeError, match=r"GT/LABELS/0000000.png: cannot read this PNG"):
        SynthiaDataset(root)[0]


def test_size_mismatch_names_both_files(cityscapes_root: Path):
    image = cityscapes_root / "leftImg8bit" / "val" / "lindau" / "lindau_000000_000019_leftImg8bit.png"
    write_rgb(image, seed=0, size=(H, W + 2))
    with pytest.raises(SegmergeError, match=rf"{image} is 18x8 \(WxH\) but its label .*_gtFine_labelIds.png is 16x8"):
        CityscapesDataset(cityscapes_root)[2]


def test_out_of_range_label_names_the_file(tmp_path: Path):
    images, labels = tmp_path / "img", tmp_path / "lbl"
    write_rgb(images / "a.png", seed=0)
    ids = np.zeros((H, W))
    ids[0, :3] = [19, 26, 255]
    write_ids(labels / "a.png", ids)
    with pytest.raises(SegmergeError, match=rf"{labels / 'a.png'}: label values 19, 26 are not Cityscapes trainIds"):
        FolderDataset(images, labels)[0]
    with pytest.raises(SegmergeError, match=r"lbl/a.png: label image has mode 'RGB'"):
        write_rgb(labels / "a.png", seed=0)
        FolderDataset(images, labels)[0]

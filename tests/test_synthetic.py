"""The synthetic street-scene benchmark: determinism, label validity, domains, writer, data set."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from segmerge.errors import SegmergeError
from segmerge.labels import IGNORE_INDEX, THING_TRAIN_IDS
from segmerge_bench.synthetic import (
    DOMAINS,
    STUFF_SEGMENT_BASE,
    TRAIN_ID,
    TRAIN_ID_NAMES,
    Domain,
    SyntheticDataset,
    domain_key,
    generate,
    get_domain,
    load_domain,
    render,
    write_domain,
)

N_SCENES = 20
REQUIRED = ("road", "sidewalk", "building", "vegetation", "sky", "pole", "traffic sign", "person", "car")

_CACHE: dict[tuple[str, int], list] = {}


def scenes(name: str, seed: int = 0) -> list:
    """N_SCENES scenes of a domain, rendered once per test session."""
    if (name, seed) not in _CACHE:
        _CACHE[name, seed] = list(generate(name, N_SCENES, seed))
    return _CACHE[name, seed]


def horizontal_runs(mask: np.ndarray) -> np.ndarray:
    """Lengths of the horizontal runs of True in every row."""
    edges = np.diff(np.pad(mask, ((0, 0), (1, 1))).astype(np.int8), axis=1)
    return np.argwhere(edges == -1)[:, 1] - np.argwhere(edges == 1)[:, 1]


def class_mean_colour(name: str, train_id: int) -> np.ndarray:
    pixels = np.concatenate([s.image[s.label == train_id] for s in scenes(name)])
    return pixels.astype(np.float64).mean(axis=0)


# ----------------------------------------------------------------------------- determinism


def test_same_seed_and_index_give_identical_scenes():
    a, b = render("target", 3, 7), render("target", 3, 7)
    for field in ("image", "label", "instances", "panoptic_ids"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
    assert a.segments == b.segments


def test_other_seed_index_or_domain_give_other_scenes():
    base = render("target", 3, 7)
    for other in (render("target", 4, 7), render("target", 3, 8), render("appearance-a", 3, 7)):
        assert not np.array_equal(base.image, other.image)
        assert not np.array_equal(base.label, other.label)


def test_domain_key_is_stable_across_processes():
    # a hash of the name's UTF-8 bytes, not Python's per-process salted hash()
    assert domain_key("target") == domain_key("target") == 3967767882751823898
    assert domain_key("target") != domain_key("appearance-a")


def test_render_refuses_negative_seed():
    with pytest.raises(SegmergeError, match="seed"):
        render("target", -1, 0)


# ----------------------------------------------------------------------------- labels and instances


@pytest.mark.parametrize("name", list(DOMAINS))
def test_arrays_have_the_documented_types_and_values(name):
    for scene in scenes(name)[:5]:
        h, w = get_domain(name).height, get_domain(name).width
        assert scene.image.dtype == np.uint8 and scene.image.shape == (h, w, 3)
        assert scene.label.shape == (h, w) and scene.label.dtype == np.uint8
        assert scene.instances.dtype == np.int32 and scene.instances.shape == (h, w)
        values = np.unique(scene.label)
        assert all(v < len(TRAIN_ID_NAMES) or v == IGNORE_INDEX for v in values)


def test_required_classes_appear_in_the_target():
    seen = set().union(*(np.unique(s.label).tolist() for s in scenes("target")))
    missing = [n for n in REQUIRED if TRAIN_ID[n] not in seen]
    assert not missing


def test_absent_classes_are_never_drawn():
    domain = get_domain("appearance-b")
    assert set(domain.absent_classes) == {"terrain", "truck", "train"}
    absent = [TRAIN_ID[n] for n in domain.absent_classes]
    for scene in scenes("appearance-b"):
        assert not np.isin(scene.label, absent).any()
    # a user domain without sidewalks or poles still draws whole scenes, paving with the next best class
    bare = Domain.from_dict({"base": "target", "name": "bare", "absent_classes": ["sidewalk", "pole", "person"]})
    for scene in generate(bare, 8, 0):
        assert not np.isin(scene.label, [TRAIN_ID["sidewalk"], TRAIN_ID["pole"], TRAIN_ID["person"]]).any()
        assert (scene.label == TRAIN_ID["road"]).any()


@pytest.mark.parametrize("name", ["pole", "traffic sign", "traffic light"])
def test_thin_classes_are_at_least_four_pixels_wide(name):
    runs = np.concatenate([horizontal_runs(s.label == TRAIN_ID[name]) for s in scenes("target")])
    assert len(runs) > 20
    assert np.median(runs) >= 4


def test_instances_agree_with_labels():
    for scene in scenes("target") + scenes("appearance-b"):
        thing = np.isin(scene.label, THING_TRAIN_IDS)
        assert (scene.instances[thing] > 0).all() and (scene.instances[~thing] == 0).all()
        for instance in np.unique(scene.instances[thing]):
            assert len(np.unique(scene.label[scene.instances == instance])) == 1


def test_segments_describe_the_panoptic_map():
    for scene in scenes("target")[:8]:
        ids = scene.panoptic_ids
        listed = {s["id"] for s in scene.segments}
        assert listed == set(np.unique(ids[ids > 0]).tolist())
        for seg in scene.segments:
            mask = ids == seg["id"]
            ys, xs = np.nonzero(mask)
            assert seg["area"] == mask.sum() and seg["iscrowd"] == 0
            assert seg["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert (scene.label[mask] == seg["category_id"]).all()
            is_thing = seg["category_id"] in THING_TRAIN_IDS
            assert is_thing == (seg["id"] < STUFF_SEGMENT_BASE)
            if is_thing:
                assert (scene.instances[mask] == seg["id"]).all()


# ----------------------------------------------------------------------------- domains


def test_appearance_sources_differ_where_intended():
    for cls in ("road", "vegetation", "sky"):
        a, b = class_mean_colour("appearance-a", TRAIN_ID[cls]), class_mean_colour("appearance-b", TRAIN_ID[cls])
        assert np.abs(a - b).sum() > 30, cls
    warmth = {n: np.mean([s.image[..., 0].mean() - s.image[..., 2].mean() for s in scenes(n)]) for n in DOMAINS}
    assert warmth["appearance-a"] > warmth["target"] > warmth["appearance-b"]

    def sharpness(name):
        return np.mean([np.abs(np.diff(s.image.astype(np.int16), axis=1)).mean() for s in scenes(name)])

    assert sharpness("appearance-a") > sharpness("appearance-b")
    horizon_sky = {n: np.mean([(s.label == TRAIN_ID["sky"]).mean() for s in scenes(n)]) for n in DOMAINS}
    assert horizon_sky["appearance-a"] > horizon_sky["target"]  # a lower camera: more sky


def object_colours(name: str, cls: str) -> np.ndarray:
    """Mean colour of every object of a class (things) or of the class in every image (stuff)."""
    train_id, out = TRAIN_ID[cls], []
    for s in scenes(name):
        if train_id in THING_TRAIN_IDS:
            out += [s.image[s.instances == i].mean(axis=0) for i in np.unique(s.instances[s.label == train_id])]
        elif (s.label == train_id).any():
            out.append(s.image[s.label == train_id].mean(axis=0))
    return np.array(out, dtype=np.float64)


def test_class_shift_sources_each_keep_different_classes_target_like():
    def gap(name, cls):
        """Median distance from the source's objects to the most similar target object."""
        source, target = object_colours(name, cls), object_colours("target", cls)
        return np.median(np.abs(source[:, None] - target[None]).sum(axis=-1).min(axis=1))

    for cls in ("car", "person", "rider"):
        assert 2 * gap("classes-a", cls) < gap("classes-b", cls), cls
    for cls in ("vegetation", "sidewalk", "terrain"):
        assert 2 * gap("classes-b", cls) < gap("classes-a", cls), cls
    for cls in ("road", "building", "sky"):  # shared by both
        assert gap("classes-a", cls) < 25 and gap("classes-b", cls) < 25, cls


def test_pretrain_appearance_is_redrawn_every_image():
    def spread(name):
        means = [s.image[s.label == TRAIN_ID["road"]].mean(axis=0) for s in scenes(name)]
        return np.std(means, axis=0).mean()

    assert spread("pretrain") > 3 * spread("target")


@pytest.mark.parametrize("name", list(DOMAINS))
def test_domain_round_trips_through_plain_data(name):
    domain = get_domain(name)
    again = Domain.from_dict(json.loads(json.dumps(domain.to_dict())))
    assert again == domain and hash(again) == hash(domain)


def test_domain_files_and_overrides(tmp_path):
    yaml = pytest.importorskip("yaml")
    path = tmp_path / "dusk.yaml"
    path.write_text(
        yaml.safe_dump(
            {"base": "target", "name": "dusk", "lighting": {"brightness": 0.5}, "looks": {"car": {"jitter": 30}}}
        )
    )
    dusk = load_domain(path)
    target = get_domain("target")
    assert dusk.lighting.brightness == 0.5 and dusk.lighting.contrast == target.lighting.contrast
    assert dusk.looks["car"].jitter == 30 and dusk.looks["car"].colors == target.looks["car"].colors
    assert render(dusk, 0, 1).image.mean() < render(target.replace(name="dusk"), 0, 1).image.mean()
    bigger = target.replace(name="target-big", height=128, width=256)
    assert render(bigger, 0, 0).image.shape == (128, 256, 3)


def test_bad_domains_are_refused_with_the_reason():
    with pytest.raises(SegmergeError, match="appearance-a"):
        get_domain("gta")
    with pytest.raises(SegmergeError, match="no '_'"):
        get_domain("target").replace(name="my_domain")
    with pytest.raises(SegmergeError, match="unknown frequencies"):
        Domain.from_dict({"base": "target", "name": "x", "frequencies": {"cars": 3}})
    with pytest.raises(SegmergeError, match="absent_classes"):
        Domain.from_dict({"base": "target", "name": "x", "absent_classes": ["road"]})


# ----------------------------------------------------------------------------- data set


def test_dataset_samples_look_like_reader_samples():
    data = SyntheticDataset("target", 20, seed=0, split="val")
    sample = data[12]
    assert sample.name == "target/val/000012" and sample.image_path == "synthetic:target/val/000012"
    assert sample.image.dtype == np.uint8 and sample.label.dtype == np.int64
    ids, segments = sample.panoptic
    assert ids is sample.panoptic.ids and segments is sample.panoptic.segments_info
    scene = render("target", 0, data.scene_index(12))
    assert np.array_equal(sample.image, scene.image) and np.array_equal(ids, scene.panoptic_ids)


def test_splits_never_share_scenes():
    splits = {s: SyntheticDataset("target", 1000, seed=0, split=s) for s in ("train", "val", "test")}
    ranges = [set(range(d.scene_index(0), d.scene_index(len(d)))) for d in splits.values()]
    assert not (ranges[0] & ranges[1]) and not (ranges[0] & ranges[2]) and not (ranges[1] & ranges[2])
    assert not np.array_equal(splits["train"][0].image, splits["val"][0].image)


def test_shards_cover_every_sample_once():
    data = SyntheticDataset("classes-a", 10, seed=1, split="train")
    names = [name for rank in range(3) for name in data.shard(rank, 3).names]
    assert sorted(names) == sorted(data.names) and len(names) == len(set(names)) == 10
    assert data.shard(2, 3)[1].name == data[5].name


def test_dataset_spec():
    data = SyntheticDataset.from_spec("appearance-b,n=4,seed=2", split="test")
    assert len(data) == 4 and data.seed == 2 and data[0].name == "appearance-b/test/000000"
    assert len(SyntheticDataset.from_spec("target", split="val")) == 500
    with pytest.raises(SegmergeError, match="n=INT"):
        SyntheticDataset.from_spec("target,size=3", split="val")


# ----------------------------------------------------------------------------- writer


def test_writer_produces_the_cityscapes_layout(tmp_path):
    from cityscapesscripts.helpers.labels import id2label

    from segmerge.datasets import CityscapesDataset, CityscapesPanopticDataset

    root = write_domain("target", 3, tmp_path / "synth", seed=5, split="val")
    stem = "target_000005_000001"
    image_dir, label_dir = root / "leftImg8bit/val/target", root / "gtFine/val/target"
    assert sorted(p.name for p in image_dir.iterdir())[1] == f"{stem}_leftImg8bit.png"
    assert Domain.from_dict(json.loads((root / "domain.json").read_text())) == get_domain("target")
    scene = render("target", 5, SyntheticDataset("target", 3, 5, "val").scene_index(1))
    assert np.array_equal(np.asarray(Image.open(image_dir / f"{stem}_leftImg8bit.png")), scene.image)
    train_ids = np.asarray(Image.open(label_dir / f"{stem}_gtFine_labelTrainIds.png"))
    assert np.array_equal(train_ids, scene.label)
    label_ids = np.asarray(Image.open(label_dir / f"{stem}_gtFine_labelIds.png"))
    to_train = np.vectorize(lambda i: id2label[int(i)].trainId)
    assert np.array_equal(to_train(label_ids), scene.label)

    instance_ids = np.asarray(Image.open(label_dir / f"{stem}_gtFine_instanceIds.png")).astype(np.int64)
    thing = scene.instances > 0
    assert (instance_ids[~thing] == label_ids[~thing]).all()
    assert (instance_ids[thing] // 1000 == label_ids[thing]).all()
    pairs = set(zip(instance_ids[thing].tolist(), scene.instances[thing].tolist(), strict=True))
    assert len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs})  # one-to-one

    data = json.loads((root / "gtFine/cityscapes_panoptic_val.json").read_text())
    assert {c["id"] for c in data["categories"] if c["isthing"]} == {24, 25, 26, 27, 28, 31, 32, 33}
    ann = next(a for a in data["annotations"] if a["image_id"] == stem)
    rgb = np.asarray(Image.open(root / "gtFine/cityscapes_panoptic_val" / ann["file_name"])).astype(np.int64)
    ids = rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]
    by_id = {s["id"]: s for s in ann["segments_info"]}
    assert set(np.unique(ids[ids > 0]).tolist()) == set(by_id)
    assert (ids[thing] == instance_ids[thing]).all()
    for seg_id, seg in by_id.items():
        assert (label_ids[ids == seg_id] == seg["category_id"]).all() and seg["area"] == (ids == seg_id).sum()

    semantic = CityscapesDataset(root, split="val")
    assert len(semantic) == 3 and np.array_equal(semantic[1].label, scene.label.astype(np.int64))
    panoptic = CityscapesPanopticDataset(root, split="val")
    assert np.array_equal(panoptic[1].label[scene.label != IGNORE_INDEX], scene.label[scene.label != IGNORE_INDEX])


def test_writer_refuses_to_overwrite_and_leaves_no_temporaries(tmp_path):
    root = tmp_path / "synth"
    write_domain("classes-b", 2, root, split="train")
    with pytest.raises(SegmergeError, match="overwrite=True"):
        write_domain("classes-b", 2, root, split="train")
    write_domain("classes-b", 1, root, split="val")  # another split of the same domain is added
    write_domain("classes-b", 3, root, split="train", overwrite=True)
    assert len(list((root / "leftImg8bit/train/classes-b").iterdir())) == 3
    assert len(list((root / "leftImg8bit/val/classes-b").iterdir())) == 1
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(SegmergeError, match="not empty"):
        write_domain("target", 1, other)
    assert (other / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes", "synth"]

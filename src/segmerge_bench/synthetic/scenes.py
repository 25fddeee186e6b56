"""Procedural street scenes: a labelled image drawn from (domain, seed, index) alone.

A scene is laid out first, as labels: sky, skyline, ground and street fronts, then the
objects, far to near (painter's algorithm, z-buffered): vehicles in lanes or parked at the
kerb, pedestrians on the sidewalks or a crossing, riders, parked two-wheelers, lamp posts,
signs and traffic lights at the kerb, trees, walls and fences; the ego vehicle's bonnet
last where the domain has one. Only then is it painted in the domain's style
(``appearance.py``). Labels are Cityscapes trainIds (255 = ignore, only on the bonnet);
thing objects get instance ids.

Everything is a function of (domain name, seed, index): the random generator is
``numpy.random.default_rng([seed, index, domain_key(name)])``'s seed sequence, split into
one stream for the layout and one for the appearance, so a domain that changes only
colours keeps its layouts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial

import numpy as np
from scipy import ndimage

from segmerge.errors import SegmergeError
from segmerge.labels import IGNORE_INDEX, THING_TRAIN_IDS
from segmerge_bench.synthetic import objects as ob
from segmerge_bench.synthetic.appearance import paint
from segmerge_bench.synthetic.canvas import HOOD, Canvas, Sprites
from segmerge_bench.synthetic.domains import Domain, get_domain
from segmerge_bench.synthetic.street import (
    Street,
    coin_side,
    draw_fronts,
    draw_ground,
    draw_sky,
    draw_skyline,
    draw_street_end,
    sample_street,
)

STUFF_SEGMENT_BASE = 1000
"""Panoptic segment id of a stuff class: STUFF_SEGMENT_BASE + trainId (thing ids stay below)."""
MAX_INSTANCES = STUFF_SEGMENT_BASE - 1


@dataclass(frozen=True)
class Scene:
    """One rendered street scene.

    ``image``: uint8 RGB [H, W, 3]. ``label``: uint8 trainIds [H, W] (0..18, 255 ignore).
    ``instances``: int32 [H, W], 0 on stuff, a unique positive id per thing object.
    ``panoptic_ids``: int32 [H, W], the instance id on things, ``STUFF_SEGMENT_BASE +
    trainId`` on stuff, 0 on ignore. ``segments``: one COCO-style dict per id of
    ``panoptic_ids`` (things first): {id, category_id (a trainId), iscrowd: 0, area,
    bbox [x, y, width, height]}.
    """

    image: np.ndarray
    label: np.ndarray
    instances: np.ndarray
    panoptic_ids: np.ndarray
    segments: list[dict] = field(repr=False)
    domain: str = ""
    seed: int = 0
    index: int = 0


def domain_key(name: str) -> int:
    """A stable 63-bit integer for a domain name (Python's ``hash`` changes between runs)."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "little") >> 1


def render(domain: Domain | str, seed: int, index: int) -> Scene:
    """Scene ``index`` of ``domain`` for ``seed``; the same arguments give the same arrays."""
    domain = get_domain(domain)
    for what, value in (("seed", seed), ("index", index)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise SegmergeError(f"render: {what} must be a non-negative integer, got {value!r}")
    root = np.random.SeedSequence([int(seed), int(index), domain_key(domain.name)])
    layout_rng, look_rng = (np.random.default_rng(s) for s in root.spawn(2))
    cv = lay_out(domain, layout_rng)
    image = paint(cv, domain, look_rng)
    instances, panoptic_ids, segments = _panoptic(cv)
    return Scene(image, cv.label, instances, panoptic_ids, segments, domain.name, int(seed), int(index))


def generate(domain: Domain | str, n: int, seed: int, start: int = 0) -> Iterator[Scene]:
    """Scenes ``start`` .. ``start + n - 1`` of ``domain`` for ``seed``, one at a time."""
    domain = get_domain(domain)
    for index in range(start, start + n):
        yield render(domain, seed, index)


def lay_out(domain: Domain, rng: np.random.Generator) -> Canvas:
    """Draw a scene's label-side maps (see the module docstring)."""
    st = sample_street(domain, rng)
    cv = Canvas(domain.height, domain.width)
    sp = Sprites(domain.height, domain.width)
    draw_sky(cv, st)
    draw_skyline(cv, st, domain, rng)
    draw_ground(cv, st, domain, rng)
    draw_fronts(cv, st, domain, rng)
    draw_street_end(cv, st, domain, rng)
    placed = place_objects(cv, sp, st, domain, rng)
    for item in placed:
        if item.surface:
            item.draw()
    for item in sorted((p for p in placed if not p.surface), key=lambda p: -p.z):
        item.draw()
    cv.composite(sp, st.camera_height, st.horizon, st.f)
    if domain.camera.hood > 0:
        draw_hood(cv, domain.camera.hood)
    return cv


def place_objects(cv: Canvas, sp: Sprites, st: Street, domain: Domain, rng: np.random.Generator) -> list[ob.Placed]:
    """Sample every object's kind, place and size; drawing waits until all are known so
    they can be drawn far to near."""
    freq, scale, lot = domain.frequencies, domain.object_scale, ob.Lot()
    z_far = min(st.z_max - 3.0, 70.0)
    placed: list[ob.Placed] = []

    def count(name: str) -> int:
        return int(rng.poisson(freq[name])) if domain.draws(name) else 0

    def put(z: float, fn, *args) -> None:
        placed.append(ob.Placed(z, partial(fn, cv, sp, st, rng, *args)))

    def kerb(side: int, offset: float) -> float:
        """X just off the road edge on a side: > 0 offsets go onto the sidewalk."""
        return st.road_r + offset if side > 0 else st.road_l - offset

    def lane_x() -> tuple[float, float]:
        lane = int(rng.integers(st.lanes))
        X = st.lane_centre(lane) + rng.uniform(-0.3, 0.3)
        return X, (8.0 if abs(X) < st.lane / 2 else 3.0)

    vehicles = {"car": (1.9, 4.8), "truck": (2.6, 10.0), "bus": (2.6, 12.5), "train": (2.7, 35.0)}
    for kind, (width, length) in vehicles.items():
        for _ in range(count(kind)):
            for _attempt in range(8):
                parked = kind == "car" and rng.random() < 0.45
                if parked:
                    side = coin_side(rng)
                    X, z_near = kerb(side, -1.05 * scale), 2.5
                else:
                    X, z_near = lane_x()
                    z_near = max(z_near, 12.0) if kind == "train" else z_near
                if z_near >= z_far:
                    break
                z0 = rng.uniform(z_near, z_far)
                w, length_s = width * scale, length * scale
                if not lot.claim(X - w / 2, X + w / 2, z0, z0 + length_s):
                    continue
                if kind == "car":
                    put(z0, ob.draw_car, X, z0, scale, parked or rng.random() < 0.7)
                elif kind == "truck":
                    put(z0, ob.draw_truck, X, z0, scale)
                else:
                    put(z0, ob.draw_bus, X, z0, scale, kind == "train")
                break

    def sidewalk_x(side: int, margin: float = 0.3) -> float:
        lo, hi = (st.walk_l + margin, st.road_l - margin) if side < 0 else (st.road_r + margin, st.walk_r - margin)
        return rng.uniform(lo, hi)

    for _ in range(count("person")):
        for _attempt in range(8):
            if rng.random() < 0.15:  # crossing the road
                X, z = rng.uniform(st.road_l, st.road_r), rng.uniform(5.0, max(6.0, min(z_far, 30.0)))
            else:
                X, z = sidewalk_x(coin_side(rng)), rng.uniform(2.5, max(3.0, z_far * 0.8))
            if lot.claim(X - 0.3, X + 0.3, z - 0.3, z + 0.3):
                put(z, ob.draw_person, X, z, scale)
                break

    two_wheelers = [k for k in ("bicycle", "motorcycle") if domain.draws(k)]
    for _ in range(count("rider") if two_wheelers else 0):
        kind = two_wheelers[0] if len(two_wheelers) == 1 or rng.random() < 0.65 else two_wheelers[1]
        side = coin_side(rng)
        X, z = kerb(side, -rng.uniform(0.6, 1.4)), rng.uniform(4.0, max(5.0, z_far * 0.8))
        if lot.claim(X - 0.5, X + 0.5, z - 1.0, z + 1.0):
            put(z, ob.draw_rider, X, z, scale, kind)
    for kind in two_wheelers:
        for _ in range(count(kind)):
            side = coin_side(rng)
            X = sidewalk_x(side, 0.5) if kind == "bicycle" else kerb(side, -0.6)
            z = rng.uniform(3.0, max(4.0, z_far * 0.7))
            if lot.claim(X - 0.4, X + 0.4, z - 1.0, z + 1.0):
                put(z, ob.draw_two_wheeler, X, z, scale, kind, coin_side(rng))

    with_pole = domain.draws("pole")
    furniture = [
        ("pole", ob.draw_lamp_post),
        ("traffic sign", ob.draw_sign_post),
        ("traffic light", ob.draw_traffic_light),
    ]
    for name, fn in furniture:
        for _ in range(count(name)):
            side = coin_side(rng)
            X = kerb(side, rng.uniform(0.35, 0.6)) if rng.random() < 0.8 else sidewalk_x(side)
            z = rng.uniform(3.0, max(4.0, min(z_far, 45.0)))
            if not lot.claim(X - 0.2, X + 0.2, z - 0.2, z + 0.2):
                continue
            if name == "pole":
                if with_pole:
                    put(z, fn, X, z, -side)
            elif name == "traffic sign":
                put(z, fn, X, z, with_pole)
            else:
                put(z, fn, X, z, -side, with_pole)

    for _ in range(count("vegetation")):
        side = coin_side(rng)
        verge = (st.walk_l - st.front_l) if side < 0 else (st.front_r - st.walk_r)
        if verge > 1.2 and rng.random() < 0.5:
            X = (st.walk_l - rng.uniform(0.5, verge - 0.5)) if side < 0 else (st.walk_r + rng.uniform(0.5, verge - 0.5))
        else:
            X = kerb(side, rng.uniform(0.8, 1.5))
        z = rng.uniform(3.0, max(4.0, st.z_max - 3.0))
        if lot.claim(X - 0.3, X + 0.3, z - 0.3, z + 0.3):
            put(z, ob.draw_tree, X, z, scale)

    for kind in ("wall", "fence"):
        for _ in range(count(kind)):
            side = coin_side(rng)
            X = (st.walk_l if side < 0 else st.walk_r) + side * 0.05
            z0 = rng.uniform(2.0, 40.0)
            z1 = z0 + rng.uniform(5.0, 25.0)
            placed.append(ob.Placed(z0, partial(ob.draw_barrier, cv, st, rng, X, z0, z1, kind), surface=True))
    return placed


def draw_hood(cv: Canvas, share: float) -> None:
    """The ego vehicle's bonnet: a dark curved band at the bottom, labelled ignore."""
    h, w = cv.height, cv.width
    top = h * (1 - share)
    box, _ = cv.rect(0, top - 1, w, h)
    ys, xs = cv.centres(box)
    curve = top + share * h * 0.6 * ((xs - w / 2) / (w / 2)) ** 2
    mask = ys >= curve
    shade = np.broadcast_to(1.0 + 0.6 * np.clip((ys - top) / max(share * h, 1.0), 0, 1) * 0.4, mask.shape).copy()
    cv.fill((box, mask), cv.new_region(IGNORE_INDEX), 0.3, shade=shade, part=HOOD)


def _panoptic(cv: Canvas) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Instance map (things renumbered 1..K), panoptic id map and COCO-style segments."""
    region_class = np.asarray(cv.region_class)
    thing_region = np.isin(region_class, THING_TRAIN_IDS)
    present = np.unique(cv.region[np.take(thing_region, cv.region)])
    if len(present) > MAX_INSTANCES:
        raise SegmergeError(f"a scene holds {len(present)} objects, more than the {MAX_INSTANCES} ids allow")
    renumber = np.zeros(len(region_class), dtype=np.int32)
    renumber[present] = np.arange(1, len(present) + 1, dtype=np.int32)
    instances = np.take(renumber, cv.region)
    label = cv.label
    stuff = (instances == 0) & (label != IGNORE_INDEX)
    panoptic_ids = np.where(stuff, STUFF_SEGMENT_BASE + label.astype(np.int32), instances).astype(np.int32)
    areas = np.bincount(panoptic_ids.ravel())
    boxes = ndimage.find_objects(panoptic_ids)
    segments = []
    for seg_id in np.flatnonzero(areas):
        if seg_id == 0:
            continue
        ys, xs = boxes[seg_id - 1]
        if seg_id < STUFF_SEGMENT_BASE:
            category = int(region_class[present[seg_id - 1]])
        else:
            category = seg_id - STUFF_SEGMENT_BASE
        segments.append(
            {
                "id": int(seg_id),
                "category_id": int(category),
                "iscrowd": 0,
                "area": int(areas[seg_id]),
                "bbox": [int(xs.start), int(ys.start), int(xs.stop - xs.start), int(ys.stop - ys.start)],
            }
        )
    return instances, panoptic_ids, segments

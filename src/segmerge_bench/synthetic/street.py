"""The street a scene is set in: a pinhole camera over a straight road, and its surfaces.

Coordinates are metres: X to the right of the camera, Y up from the road, z forward. A
point projects to column ``vx + f X / z`` and row ``horizon + f (camera height - Y) / z``
with a Cityscapes-like focal length (f = 1.1 x image width), so road, sidewalks and
facades converge on one vanishing point and an object's size in pixels falls with its
distance exactly as in a dash-cam image. The surfaces drawn here, back to front, are the
sky, a distant skyline, the ground (road with lane markings and crossings, kerb-side
sidewalks, verges that are grass or paving), the two street fronts (buildings with window
grids or tree lines, with per-column depth) and what closes the street at its far end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from segmerge_bench.synthetic.canvas import MARKING, NO_PART, SKY_DEPTH, WINDOW, Box, Canvas
from segmerge_bench.synthetic.domains import TRAIN_ID, Domain

FAR = 1000.0
"""Ground depth cap (metres) just below the horizon."""
FRONT_FAR = 400.0
"""How far the street fronts run when nothing closes the street."""
REFERENCE_WIDTH = 192
"""Image width the pixel-valued parameters (thin-object width, blur, noise) refer to."""
THIN_PX = 4
"""Minimal width in pixels, at the reference width, of poles, signs and traffic lights."""


@dataclass(frozen=True)
class Street:
    """One scene's camera and street cross-section (X of each edge, in metres)."""

    height: int
    width: int
    f: float
    horizon: float
    vx: float
    camera_height: float
    lane: float
    lanes: int
    road_l: float
    road_r: float
    walk_l: float
    walk_r: float
    front_l: float
    front_r: float
    z_end: float
    end: str  # "buildings", "trees" or "open"

    @property
    def thin(self) -> int:
        """Minimal pixel width of thin objects at this image size."""
        return max(THIN_PX, math.ceil(THIN_PX * self.width / REFERENCE_WIDTH))

    @property
    def z_max(self) -> float:
        """Farthest distance at which the street's fronts (and objects) still stand."""
        return self.z_end if self.end != "open" else FRONT_FAR

    def x(self, X: float, z: float) -> float:
        return self.vx + self.f * X / z

    def y(self, Y: float, z: float) -> float:
        return self.horizon + self.f * (self.camera_height - Y) / z

    def lane_centre(self, lane: int) -> float:
        return self.road_l + (lane + 0.5) * self.lane


def coin_side(rng: np.random.Generator) -> int:
    """-1 (left) or +1 (right), evenly (``rng.choice`` costs ten times more)."""
    return 1 if rng.random() < 0.5 else -1


def choose(rng: np.random.Generator, options: tuple, weights: tuple[float, ...]):
    """One of ``options`` with probabilities ``weights`` (summing to 1)."""
    u, total = rng.random(), 0.0
    for option, weight in zip(options, weights, strict=True):
        total += weight
        if u < total:
            return option
    return options[-1]


def sample_street(domain: Domain, rng: np.random.Generator) -> Street:
    """Draw a camera pose and street cross-section from the domain's ranges."""
    width, height = domain.width, domain.height
    lanes = choose(rng, (1, 2, 3, 4), (0.05, 0.4, 0.35, 0.2))
    lane = rng.uniform(2.8, 3.5)
    ego = int(rng.integers(lanes))
    road_l = -(ego + 0.5) * lane + rng.uniform(-0.4, 0.4)
    road_r = road_l + lanes * lane
    walk_l, walk_r = road_l - rng.uniform(1.5, 3.5), road_r + rng.uniform(1.5, 3.5)
    verge_l, verge_r = (rng.uniform(1.0, 5.0) if rng.random() < 0.7 else 0.0 for _ in range(2))
    end = choose(rng, ("buildings", "trees", "open"), (0.55, 0.2, 0.25))
    return Street(
        height=height,
        width=width,
        f=1.1 * width,
        horizon=rng.uniform(*domain.camera.horizon) * height,
        vx=width * (0.5 + rng.uniform(-0.08, 0.08)),
        camera_height=rng.uniform(*domain.camera.height),
        lane=lane,
        lanes=lanes,
        road_l=road_l,
        road_r=road_r,
        walk_l=walk_l,
        walk_r=walk_r,
        front_l=walk_l - verge_l,
        front_r=walk_r + verge_r,
        z_end=rng.uniform(35.0, 140.0),
        end=end,
    )


def substitute(domain: Domain, *names: str) -> str | None:
    """The first of ``names`` this domain draws (a surface's fallback when its class is absent)."""
    return next((n for n in names if domain.draws(n)), None)


def draw_sky(cv: Canvas, st: Street) -> None:
    """Sky over the whole frame (everything else covers it), brighter towards the horizon."""
    region = cv.new_region(TRAIN_ID["sky"])
    rows = (np.arange(cv.height, dtype=np.float32) + 0.5)[:, None]
    shade = np.broadcast_to(0.88 + 0.22 * np.clip(rows / max(st.horizon, 1.0), 0, 1), (cv.height, cv.width))
    box = Box(0, cv.height, 0, cv.width)
    cv.fill((box, np.ones((cv.height, cv.width), dtype=bool)), region, SKY_DEPTH, shade=np.array(shade))


def draw_skyline(cv: Canvas, st: Street, domain: Domain, rng: np.random.Generator) -> None:
    """Distant blocks and tree tops along the horizon, seen over low street fronts (one fill:
    a top height per column)."""
    if rng.random() > 0.75:
        return
    classes = [c for c in ("building", "vegetation") if domain.draws(c)]
    if not classes:
        return
    z, unit = 300.0, st.width / REFERENCE_WIDTH
    starts, tops, regions = [], [], []
    x = -rng.uniform(0, 20) * unit
    while x < st.width:
        name = classes[0] if len(classes) == 1 or rng.random() < 0.75 else classes[1]
        starts.append(x)
        tops.append(rng.uniform(8, 60) if name == "building" else rng.uniform(8, 20))
        regions.append(cv.new_region(TRAIN_ID[name]))
        x += rng.uniform(6, 40) * unit
    xs = (np.arange(cv.width) + 0.5)[None, :]
    block = np.clip(np.searchsorted(np.asarray(starts), xs, side="right") - 1, 0, len(starts) - 1)
    row_top = st.y(np.asarray(tops)[block], z)
    ys = (np.arange(cv.height, dtype=np.float32) + 0.5)[:, None]
    mask = (ys >= row_top) & (ys < st.y(0, z) + 1)
    cv.fill(
        (Box(0, cv.height, 0, cv.width), mask),
        np.broadcast_to(np.asarray(regions, dtype=np.int32)[block], mask.shape),
        z,
    )


def terrain_patches(domain: Domain, st: Street, rng: np.random.Generator) -> list[tuple[int, float, float, float]]:
    """Grass as (side -1/+1, z from, z to, width): a lawn strip along the kerb (width > 0
    metres, taking that much of the sidewalk) or the whole verge behind the sidewalk
    (width 0). None where the domain lacks terrain."""
    if not domain.draws("terrain"):
        return []
    patches = []
    for _ in range(rng.poisson(domain.frequencies["terrain"])):
        z0 = rng.uniform(1.0, 50.0)
        width = rng.uniform(0.8, 2.0) if rng.random() < 0.5 else 0.0
        patches.append((coin_side(rng), z0, z0 + rng.uniform(10.0, 50.0), width))
    return patches


def draw_ground(cv: Canvas, st: Street, domain: Domain, rng: np.random.Generator) -> None:
    """Road, sidewalks and verges below the horizon, by back-projecting every pixel."""
    r0 = max(0, int(math.floor(st.horizon - 0.5)) + 1)
    if r0 >= cv.height:
        return
    ys = (np.arange(r0, cv.height, dtype=np.float32) + 0.5)[:, None]
    xs = (np.arange(cv.width, dtype=np.float32) + 0.5)[None, :]
    z = np.minimum(st.f * st.camera_height / np.maximum(ys - st.horizon, 1e-3), FAR)
    z = np.broadcast_to(z, (cv.height - r0, cv.width))
    X = (xs - st.vx) * z / st.f
    paved = substitute(domain, "sidewalk", "terrain", "road")
    grass = substitute(domain, "terrain", "sidewalk", "road")
    road = cv.new_region(TRAIN_ID["road"])
    walks = {-1: cv.new_region(TRAIN_ID[paved]), 1: cv.new_region(TRAIN_ID[paved])}
    region = np.where(X < st.road_l, walks[-1], np.where(X > st.road_r, walks[1], road)).astype(np.int32)
    for side, z0, z1, width in terrain_patches(domain, st, rng):
        if width > 0:
            strip = (X < st.road_l) & (X > st.road_l - width) if side < 0 else (X > st.road_r) & (X < st.road_r + width)
        else:
            strip = (X < st.walk_l) if side < 0 else (X > st.walk_r)
        region[strip & (z >= z0) & (z < z1)] = cv.new_region(TRAIN_ID[grass])
    on_road = region == road
    part = np.where(on_road & _markings(st, X, z, rng), MARKING, NO_PART).astype(np.uint8)
    box = Box(r0, cv.height, 0, cv.width)
    cv.fill((box, np.ones(region.shape, dtype=bool)), region, np.array(z), part=part, coord=np.array(z))


def _markings(st: Street, X: np.ndarray, z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Dashed lane lines (fading out where they get thinner than a pixel) and a zebra crossing."""
    width = 0.14
    visible = st.f * width / z > 0.35
    lines = np.zeros(X.shape, dtype=bool)
    phase = rng.uniform(0, 9)
    for k in range(1, st.lanes):
        lines |= np.abs(X - (st.road_l + k * st.lane)) < width / 2 + 0.5 * z / st.f
    lines &= ((z + phase) % 9.0) < 4.0
    if rng.random() < 0.3:
        zc = rng.uniform(6, 25)
        lines |= (z >= zc) & (z < zc + 3.5) & (((X - st.road_l) % 1.0) < 0.5)
    return lines & visible


def _side_columns(st: Street, X: float, z0: float, z1: float) -> tuple[int, int] | None:
    """Columns where a plane at lateral ``X`` is between depths z0 and z1."""
    a, b = sorted((st.x(X, z0), st.x(X, z1)))
    c0, c1 = max(0, int(math.floor(a))), min(st.width, int(math.ceil(b)))
    return (c0, c1) if c1 > c0 else None


def side_plane(st: Street, X: float, z0: float, z1: float):
    """A vertical plane parallel to the road at lateral X (a facade, wall or fence) between
    depths z0 and z1: its columns' box, the column depths [1, w] and pixel-centre rows [h, 1].
    None when it is out of view."""
    cols = _side_columns(st, X, z0, z1)
    if cols is None or abs(X) < 1e-3:
        return None
    c0, c1 = cols
    xs = (np.arange(c0, c1, dtype=np.float32) + 0.5)[None, :]
    with np.errstate(divide="ignore"):
        z = st.f * X / (xs - st.vx)
    ok = (z >= z0) & (z <= z1)
    z = np.where(ok, z, np.inf).astype(np.float32)
    ys = (np.arange(st.height, dtype=np.float32) + 0.5)[:, None]
    return Box(0, st.height, c0, c1), z, ys


def draw_fronts(cv: Canvas, st: Street, domain: Domain, rng: np.random.Generator) -> None:
    """Both street fronts: runs of buildings (window grids) and tree lines, from the nearest
    visible point to where the street ends. One pass over all columns: each column sees one
    front at one depth, so everything but the row tests is per column."""
    kinds = [k for k in ("building", "vegetation") if domain.draws(k)]
    if not kinds:
        return
    sun = rng.uniform(0.72, 0.95)
    segments = []  # per side: bounds, is_building, heights, spacing, floor, regions
    for _side in (-1, 1):
        bounds = [0.0]
        while bounds[-1] < st.z_max:
            bounds.append(bounds[-1] + rng.uniform(8.0, 30.0))
        n = len(bounds) - 1
        is_building = rng.random(n) < domain.frequencies["building"]
        if kinds == ["building"]:
            is_building[:] = True
        elif kinds == ["vegetation"]:
            is_building[:] = False
        heights = np.where(is_building, rng.uniform(7.0, 28.0, n), rng.uniform(4.0, 12.0, n))
        regions = [cv.new_region(TRAIN_ID["building" if b else "vegetation"]) for b in is_building]
        segments.append(
            (
                np.asarray(bounds),
                is_building,
                heights,
                rng.uniform(2.4, 4.0, n),
                rng.uniform(2.8, 3.6, n),
                np.asarray(regions, dtype=np.int32),
            )
        )
    (bl, bld_l, h_l, sp_l, fl_l, reg_l), (br, bld_r, h_r, sp_r, fl_r, reg_r) = segments
    xs = np.arange(cv.width) + 0.5
    left = xs < st.vx
    with np.errstate(divide="ignore", invalid="ignore"):
        z = st.f * np.where(left, st.front_l, st.front_r) / (xs - st.vx)
    ok = np.isfinite(z) & (z >= 0.5) & (z <= st.z_max)
    z = np.where(ok, z, 1.0)
    nl = len(h_l)
    seg = np.where(
        left,
        np.clip(np.searchsorted(bl, z, side="right") - 1, 0, nl - 1),
        nl + np.clip(np.searchsorted(br, z, side="right") - 1, 0, len(h_r) - 1),
    )
    start = np.concatenate([bl[:-1], br[:-1]])[seg]
    is_building = np.concatenate([bld_l, bld_r])[seg]
    spacing = np.concatenate([sp_l, sp_r])[seg]
    floor = np.concatenate([fl_l, fl_r])[seg]
    bump = np.where(is_building, 0.0, 1.2 * np.sin(z * 0.9 + 7 * seg) + 0.6 * np.sin(z * 2.7 + seg))
    top = np.concatenate([h_l, h_r])[seg] + bump
    row_top = st.horizon + st.f * (st.camera_height - top) / z
    row_bottom = st.horizon + st.f * st.camera_height / z
    ys = (np.arange(cv.height) + 0.5)[:, None]
    mask = (ys >= row_top) & (ys < row_bottom) & ok
    Y = (st.camera_height - (ys - st.horizon) * (z / st.f)).astype(np.float32)
    u = (z - start) / spacing
    u -= np.floor(u)
    columns = is_building & (u > 0.3) & (u < 0.8) & (st.f / z * spacing > 5.0)
    v = Y / floor
    v -= np.floor(v)
    windows = columns & (Y > 3.2) & (Y < top - 0.8) & (v > 0.3) & (v < 0.8)
    shape = mask.shape
    cv.fill(
        (Box(0, cv.height, 0, cv.width), mask),
        np.broadcast_to(np.concatenate([reg_l, reg_r])[seg], shape),
        np.broadcast_to(z.astype(np.float32), shape),
        shade=np.broadcast_to(np.where(left, sun, 1.0).astype(np.float32), shape),
        part=np.where(windows, WINDOW, NO_PART).astype(np.uint8),
        coord=Y,
    )


def draw_street_end(cv: Canvas, st: Street, domain: Domain, rng: np.random.Generator) -> None:
    """What closes the street at z_end: a row of buildings facing the camera, or trees."""
    if st.end == "open":
        return
    name = "building" if st.end == "buildings" else "vegetation"
    name = substitute(domain, name, "vegetation", "building")
    if name is None:
        return
    z = st.z_end
    X = st.front_l - rng.uniform(0, 10)
    X_stop = st.front_r + rng.uniform(0, 10)
    while X < X_stop:
        X1 = min(X + rng.uniform(10, 30), X_stop)
        top = rng.uniform(8, 30) if name == "building" else rng.uniform(5, 12)
        region = cv.new_region(TRAIN_ID[name])
        box, mask = cv.rect(st.x(X, z), st.y(top, z), st.x(X1, z), st.y(0, z))
        if not box.empty:
            ys, xs = cv.centres(box)
            Xp = (xs - st.vx) * z / st.f
            Yp = st.camera_height - (ys - st.horizon) * z / st.f
            if name == "vegetation":
                mask = mask & (Yp < top + 1.2 * np.sin(Xp * 0.8 + X) + 0.6 * np.sin(Xp * 2.1))
                part = NO_PART
            else:
                sx, fl = rng.uniform(2.4, 4.0), rng.uniform(2.8, 3.6)
                part = np.where(
                    (Yp > 3.2)
                    & (Yp < top - 0.8)
                    & ((Xp % sx) > 0.3 * sx)
                    & ((Xp % sx) < 0.8 * sx)
                    & ((Yp % fl) > 0.3 * fl)
                    & ((Yp % fl) < 0.8 * fl)
                    & (st.f / z * sx > 5.0),
                    WINDOW,
                    NO_PART,
                ).astype(np.uint8)
            cv.fill((box, mask), region, z, shade=0.95, part=part, coord=np.broadcast_to(Yp, mask.shape).copy())
        X = X1

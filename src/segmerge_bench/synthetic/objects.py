"""Objects standing in the street: vehicles, persons, riders, two-wheelers, poles with signs
and traffic lights, trees, walls and fences.

Vehicles are 3-D boxes (body and cabin, cargo box, bus or tram body) projected through
the street's camera, drawn as their camera-facing faces, so a car to the side shows its
flank in perspective and a far car is small; persons, riders, bicycles and trees are flat
cut-outs standing at one depth, sized in metres; walls and fences are planes along the
sidewalk. Every object is one region (so one instance for things) plus part marks
(windows, tyres, faces, lamps) that change its colour, not its class. Poles, signs and
traffic lights are never drawn thinner than ``Street.thin`` pixels, so stride-4 models
can still see them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from segmerge_bench.synthetic.canvas import (
    FRAME,
    LAMP_AMBER,
    LAMP_GREEN,
    LAMP_RED,
    MARKING,
    SIGN_FACE,
    SKIN,
    TAIL_LIGHT,
    TROUSERS,
    TRUNK,
    TYRE,
    WINDOW,
    Canvas,
    Sprites,
)
from segmerge_bench.synthetic.domains import TRAIN_ID
from segmerge_bench.synthetic.street import Street, choose, coin_side, side_plane

Draw = Callable[[], None]


@dataclass
class Placed:
    """An object ready to draw: its depth (for far-to-near order) and how to draw it.
    ``surface`` objects (walls, fences) go onto the canvas with per-pixel depth before the
    sprites are composited."""

    z: float
    draw: Draw
    surface: bool = False


class Lot:
    """Ground footprints already taken, so two objects never stand in the same place."""

    def __init__(self) -> None:
        self.taken: list[tuple[float, float, float, float]] = []

    def claim(self, X0: float, X1: float, z0: float, z1: float) -> bool:
        for a0, a1, b0, b1 in self.taken:
            if X0 < a1 and a0 < X1 and z0 < b1 and b0 < z1:
                return False
        self.taken.append((X0, X1, z0, z1))
        return True


# ----------------------------------------------------------------------------- projection helpers


Points = list[tuple[float, float]]


def rear_face(st: Street, X0: float, X1: float, Y0: float, Y1: float, z: float) -> Points:
    """A box face at depth z (the face towards, or away from, the camera): a rectangle."""
    return [(st.x(X, z), st.y(Y, z)) for X, Y in ((X0, Y0), (X1, Y0), (X1, Y1), (X0, Y1))]


def side_face(st: Street, X: float, Y0: float, Y1: float, z0: float, z1: float) -> Points:
    """A box face in the plane X, from z0 to z1 (a vehicle's flank): a trapezoid."""
    return [(st.x(X, z), st.y(Y, z)) for z, Y in ((z0, Y0), (z1, Y0), (z1, Y1), (z0, Y1))]


def top_face(st: Street, X0: float, X1: float, Y: float, z0: float, z1: float) -> Points:
    return [(st.x(X, z), st.y(Y, z)) for X, z in ((X0, z0), (X1, z0), (X1, z1), (X0, z1))]


_WHEEL = [(math.cos(a), math.sin(a)) for a in np.linspace(0, 2 * np.pi, 10, endpoint=False)]


def wheel(st: Street, X: float, Y: float, z: float, r: float) -> Points:
    """A wheel seen on a vehicle's flank: a circle in the plane X, as a 10-gon."""
    return [(st.x(X, z + r * c), st.y(Y + r * s, z + r * c)) for c, s in _WHEEL]


def visible_flank(X0: float, X1: float) -> float | None:
    """Which side of a box faces the camera (its X), or None when it is straight ahead."""
    if X0 > 0.05:
        return X0
    if X1 < -0.05:
        return X1
    return None


def draw_box(
    sp: Sprites,
    st: Street,
    region: int,
    depth: float,
    X0: float,
    X1: float,
    Y0: float,
    Y1: float,
    z0: float,
    z1: float,
    flank_shade: float = 0.8,
) -> float | None:
    """A 3-D box as the faces that face the camera (their union is its outline); returns
    the X of the visible flank, if any."""
    sp.polygon(rear_face(st, X0, X1, Y0, Y1, z0), region, depth)
    if Y1 < st.camera_height:
        sp.polygon(top_face(st, X0, X1, Y1, z0, z1), region, depth, shade=1.08)
    flank = visible_flank(X0, X1)
    if flank is not None:
        sp.polygon(side_face(st, flank, Y0, Y1, z0, z1), region, depth, shade=flank_shade)
    return flank


class Billboard:
    """Metres in the image plane of an upright cut-out at depth z, standing at X."""

    def __init__(self, st: Street, X: float, z: float) -> None:
        self.st, self.z = st, z
        self.scale = st.f / z
        self.x0 = st.x(X, z)

    def p(self, dx: float, Y: float) -> tuple[float, float]:
        return self.x0 + dx * self.scale, self.st.y(Y, self.z)

    def quad(self, *corners: tuple[float, float]) -> Points:
        return [self.p(dx, Y) for dx, Y in corners]

    def limb(self, a: tuple[float, float], b: tuple[float, float], width: float) -> Points:
        """A bar of ``width`` metres from a to b (both (dx, Y))."""
        (ax, ay), (bx, by) = a, b
        length = math.hypot(bx - ax, by - ay) or 1.0
        nx, ny = -(by - ay) / length * width / 2, (bx - ax) / length * width / 2
        return self.quad((ax + nx, ay + ny), (bx + nx, by + ny), (bx - nx, by - ny), (ax - nx, ay - ny))

    def disc(self, sp: Sprites, dx: float, Y: float, r: float, region: int | None = None, part: int = 0) -> None:
        x, y = self.p(dx, Y)
        sp.ellipse(x, y, r * self.scale, r * self.scale, region, self.z, part=part)


# ----------------------------------------------------------------------------- vehicles


def draw_car(
    cv: Canvas, sp: Sprites, st: Street, rng: np.random.Generator, Xc: float, z0: float, scale: float, away: bool
) -> None:
    """A car whose rear (``away``: driving away) or front faces the camera at depth z0."""
    w, length = rng.uniform(1.65, 1.9) * scale, rng.uniform(3.9, 4.8) * scale
    body, roof = rng.uniform(0.85, 1.0) * scale, rng.uniform(1.38, 1.6) * scale
    X0, X1, z1 = Xc - w / 2, Xc + w / 2, z0 + length
    c0, c1 = (z0 + 0.22 * length, z0 + 0.72 * length) if away else (z0 + 0.3 * length, z0 + 0.8 * length)
    inset = 0.1 * w
    region = cv.new_region(TRAIN_ID["car"])
    flank = draw_box(sp, st, region, z0, X0, X1, 0.0, body, z0, z1)
    draw_box(sp, st, region, z0, X0 + inset, X1 - inset, body, roof, c0, c1)
    if flank is not None:
        cin = flank + (inset if flank == X0 else -inset)
        sp.polygon(side_face(st, cin, body + 0.06, roof - 0.07, c0 + 0.1, c1 - 0.1), part=WINDOW)
        for zw in (z0 + 0.8 * scale, z1 - 0.85 * scale):
            sp.polygon(wheel(st, flank, 0.33 * scale, zw, 0.33 * scale), part=TYRE)
    sp.polygon(rear_face(st, X0 + inset + 0.08, X1 - inset - 0.08, body + 0.07, roof - 0.07, c0), part=WINDOW)
    sp.polygon(rear_face(st, X0 + 0.3, X1 - 0.3, 0.0, 0.22 * scale, z0), part=FRAME)
    for a, b in ((X0 + 0.03, X0 + 0.3), (X1 - 0.3, X1 - 0.03)):
        sp.polygon(rear_face(st, a, b, 0.0, 0.28 * scale, z0), part=TYRE)
        sp.polygon(rear_face(st, a + 0.02, b, 0.66 * scale, 0.8 * scale, z0), part=TAIL_LIGHT if away else MARKING)


def draw_truck(
    cv: Canvas, sp: Sprites, st: Street, rng: np.random.Generator, Xc: float, z0: float, scale: float
) -> None:
    """A lorry driving away: a tall cargo box in front of the camera, its cab beyond."""
    w, length = rng.uniform(2.3, 2.55) * scale, rng.uniform(6.5, 10.0) * scale
    cab_h, box_h = rng.uniform(2.7, 3.1) * scale, rng.uniform(3.2, 3.9) * scale
    X0, X1, z1 = Xc - w / 2, Xc + w / 2, z0 + length
    zc = z1 - 2.2 * scale
    region = cv.new_region(TRAIN_ID["truck"])
    draw_box(sp, st, region, z0, X0 + 0.1, X1 - 0.1, 0.0, 0.6, z0 + 0.5, z1 - 0.3)
    draw_box(sp, st, region, z0, X0 + 0.05, X1 - 0.05, 0.3, cab_h, zc, z1)
    flank = draw_box(sp, st, region, z0, X0, X1, 0.35, box_h, z0, zc - 0.15, flank_shade=0.82)
    if flank is not None:
        sp.polygon(side_face(st, flank, 1.6 * scale, cab_h - 0.3, zc + 0.3, z1 - 0.4), part=WINDOW)
        for zw in (z0 + 1.2 * scale, zc - 1.2 * scale, z1 - 1.0 * scale):
            sp.polygon(wheel(st, flank, 0.5 * scale, zw, 0.5 * scale), part=TYRE)
    sp.polygon(rear_face(st, Xc - 0.04, Xc + 0.04, 0.5, box_h - 0.1, z0), part=FRAME)
    sp.polygon(rear_face(st, X0 + 0.2, X1 - 0.2, 0.0, 0.35, z0 + 0.5), part=TYRE)


def draw_bus(
    cv: Canvas, sp: Sprites, st: Street, rng: np.random.Generator, Xc: float, z0: float, scale: float, tram: bool
) -> None:
    """A bus (or, with ``tram``, a long tram of the 'train' class) with a band of windows."""
    w = (2.6 if tram else 2.5) * scale
    length = (rng.uniform(25, 35) if tram else rng.uniform(10, 12.5)) * scale
    top = (rng.uniform(3.4, 3.7) if tram else rng.uniform(3.0, 3.3)) * scale
    X0, X1, z1 = Xc - w / 2, Xc + w / 2, z0 + length
    region = cv.new_region(TRAIN_ID["train" if tram else "bus"])
    flank = draw_box(sp, st, region, z0, X0, X1, 0.25, top, z0, z1, flank_shade=0.82)
    band = (1.1 * scale, top - 0.55 * scale)
    if flank is not None:
        sp.polygon(side_face(st, flank, *band, z0 + 0.5, z1 - 0.5), part=WINDOW)
        if not tram:
            for zw in (z0 + 2.5 * scale, z1 - 2.5 * scale):
                sp.polygon(wheel(st, flank, 0.5 * scale, zw, 0.5 * scale), part=TYRE)
    sp.polygon(rear_face(st, X0 + 0.2, X1 - 0.2, band[0] + 0.2, band[1], z0), part=WINDOW)
    sp.polygon(rear_face(st, X0, X1, 0.25, 0.5 * scale, z0), part=FRAME)


# ----------------------------------------------------------------------------- persons and two-wheelers


def draw_person(
    cv: Canvas, sp: Sprites, st: Street, rng: np.random.Generator, X: float, z: float, scale: float
) -> None:
    """A pedestrian, front or back view, legs in mid-stride, arms swinging."""
    h = rng.uniform(1.55, 1.92) * scale
    b = Billboard(st, X, z)
    hip, shoulder = 0.48 * h, 0.81 * h
    stride, swing = rng.uniform(-0.12, 0.12) * scale, rng.uniform(-0.1, 0.1) * scale
    sw = 0.2 * scale
    region = cv.new_region(TRAIN_ID["person"])
    sp.polygon(
        b.quad((-0.16 * scale, hip - 0.05), (0.16 * scale, hip - 0.05), (sw, shoulder), (-sw, shoulder)), region, z
    )
    sp.polygon(b.limb((-sw + 0.03, shoulder - 0.04), (-sw - 0.05 + swing, hip - 0.02), 0.09 * scale), region, z)
    sp.polygon(b.limb((sw - 0.03, shoulder - 0.04), (sw + 0.05 - swing, hip - 0.02), 0.09 * scale), region, z)
    sp.polygon(
        b.quad((-0.05, shoulder - 0.02), (0.05, shoulder - 0.02), (0.05, h - 0.15), (-0.05, h - 0.15)), region, z
    )
    b.disc(sp, 0.0, h - 0.12 * scale, 0.11 * scale, region, part=SKIN)
    sp.polygon(
        b.quad((-0.15 * scale, hip), (-0.01, hip), (-0.01 + stride, 0.0), (-0.14 * scale + stride, 0.0)),
        region,
        z,
        part=TROUSERS,
    )
    sp.polygon(
        b.quad((0.01, hip), (0.15 * scale, hip), (0.14 * scale - stride, 0.0), (0.01 - stride, 0.0)),
        region,
        z,
        part=TROUSERS,
    )


def draw_two_wheeler(
    cv: Canvas,
    sp: Sprites,
    st: Street,
    rng: np.random.Generator,
    X: float,
    z: float,
    scale: float,
    kind: str,
    direction: int,
) -> None:
    """A bicycle or motorcycle in side view (``direction`` +1 facing right, -1 left)."""
    b = Billboard(st, X, z)
    d = direction * scale
    region = cv.new_region(TRAIN_ID[kind])
    if kind == "bicycle":
        r, hub = 0.34 * scale, 0.52
        sp.polygon(b.quad((-hub * d, r), (-0.12 * d, 0.92 * scale), (0.36 * d, 0.96 * scale), (hub * d, r)), region, z)
        sp.polygon(b.limb((0.3 * d, 1.02 * scale), (0.42 * d, 1.02 * scale), 0.06 * scale), region, z)
    else:
        r, hub = 0.32 * scale, 0.7
        sp.polygon(
            b.quad(
                (-0.62 * d, 0.5 * scale), (0.6 * d, 0.45 * scale), (0.42 * d, 1.05 * scale), (-0.35 * d, 0.98 * scale)
            ),
            region,
            z,
        )
    for dx in (-hub * d, hub * d):
        b.disc(sp, dx, r, r, region, part=TYRE)
        b.disc(sp, dx, r, r * 0.72, part=FRAME)


def draw_rider(
    cv: Canvas, sp: Sprites, st: Street, rng: np.random.Generator, X: float, z: float, scale: float, kind: str
) -> None:
    """A rider on a bicycle or motorcycle: the vehicle and the person are two instances."""
    direction = coin_side(rng)
    draw_two_wheeler(cv, sp, st, rng, X, z, scale, kind, direction)
    b = Billboard(st, X, z)
    d = direction * scale
    seat = (0.95 if kind == "bicycle" else 0.85) * scale
    hip = (-0.18 * d, seat + 0.05)
    shoulder = (0.08 * d, seat + 0.62 * scale)
    foot = (0.05 * d, 0.4 * scale)
    knee = (0.18 * d, seat - 0.08)
    hand = (0.36 * d if kind == "bicycle" else 0.4 * d, 1.0 * scale)
    region = cv.new_region(TRAIN_ID["rider"])
    sp.polygon(b.limb(hip, shoulder, 0.36 * scale), region, z)
    sp.polygon(b.limb(shoulder, hand, 0.09 * scale), region, z)
    sp.polygon(b.limb(hip, knee, 0.15 * scale), region, z, part=TROUSERS)
    sp.polygon(b.limb(knee, foot, 0.13 * scale), region, z, part=TROUSERS)
    head_part = FRAME if kind == "motorcycle" else SKIN  # a helmet, or a face
    b.disc(sp, shoulder[0] + 0.06 * d, shoulder[1] + 0.2 * scale, 0.12 * scale, region, part=head_part)


# ----------------------------------------------------------------------------- street furniture and trees


def draw_pole(cv: Canvas, sp: Sprites, st: Street, X: float, z: float, top: float) -> float:
    """An upright pole at least ``st.thin`` pixels wide; returns its centre column."""
    width = max(st.thin, round(st.f * 0.16 / z))
    return sp.bar(st.x(X, z), st.y(top, z), st.y(0.0, z), width, cv.new_region(TRAIN_ID["pole"]), z)


def draw_lamp_post(
    cv: Canvas, sp: Sprites, st: Street, rng: np.random.Generator, X: float, z: float, toward: int
) -> None:
    """A street lamp: a tall pole with an arm over the road (all 'pole')."""
    top = rng.uniform(6.0, 9.0)
    width = max(st.thin, round(st.f * 0.16 / z))
    region = cv.new_region(TRAIN_ID["pole"])
    xc = sp.bar(st.x(X, z), st.y(top, z), st.y(0.0, z), width, region, z)
    s = st.f / z
    x1 = xc + toward * rng.uniform(1.0, 2.0) * s
    t = max(2.0, 0.12 * s)
    yt = st.y(top, z)
    sp.rect(min(xc, x1), yt, max(xc, x1), yt + t, region, z)
    head = 0.5 * s
    sp.rect(min(x1, x1 - toward * head), yt, max(x1, x1 - toward * head), yt + max(st.thin, 2 * t), region, z)


def draw_sign_post(
    cv: Canvas, sp: Sprites, st: Street, rng: np.random.Generator, X: float, z: float, with_pole: bool
) -> None:
    """A traffic sign (round, square, triangular or diamond; sometimes seen from behind) on a post."""
    top = rng.uniform(2.4, 3.4)
    s = st.f / z
    size = max(rng.uniform(0.6, 0.9) * s, st.thin + 1.0)
    xc = draw_pole(cv, sp, st, X, z, top) if with_pole else st.x(X, z)
    cx, cy = xc, st.y(top, z) + size / 2
    kind = choose(rng, ("circle", "square", "triangle", "diamond"), (0.4, 0.3, 0.2, 0.1))
    h = size / 2
    region = cv.new_region(TRAIN_ID["traffic sign"])
    back = rng.random() < 0.25
    face_part = FRAME if back else SIGN_FACE
    if kind == "circle":
        sp.ellipse(cx, cy, h, h, region, z - 0.05)
        if back:
            sp.ellipse(cx, cy, h, h, part=face_part)
        else:
            sp.ellipse(cx, cy, 0.68 * h, 0.68 * h, part=face_part)
    elif kind == "square":
        sp.rect(cx - h, cy - h, cx + h, cy + h * rng.uniform(0.6, 1.2), region, z - 0.05)
        sp.rect(cx - 0.7 * h, cy - 0.7 * h, cx + 0.7 * h, cy + 0.5 * h, part=face_part)
    elif kind == "triangle":
        sp.polygon([(cx - h * 1.1, cy - h), (cx + h * 1.1, cy - h), (cx, cy + h)], region, z - 0.05)
        sp.polygon([(cx - h * 0.6, cy - h * 0.7), (cx + h * 0.6, cy - h * 0.7), (cx, cy + h * 0.4)], part=face_part)
    else:
        sp.polygon([(cx, cy - h * 1.2), (cx + h * 1.2, cy), (cx, cy + h * 1.2), (cx - h * 1.2, cy)], region, z - 0.05)
        sp.polygon([(cx, cy - h * 0.7), (cx + h * 0.7, cy), (cx, cy + h * 0.7), (cx - h * 0.7, cy)], part=face_part)


def draw_traffic_light(
    cv: Canvas, sp: Sprites, st: Street, rng: np.random.Generator, X: float, z: float, toward: int, with_pole: bool
) -> None:
    """A traffic light on its post, or hanging from a mast arm over the road."""
    s = st.f / z
    top = rng.uniform(3.2, 4.5)
    w = max(st.thin, round(0.34 * s))
    h = max(2.7 * w, 0.95 * s)
    arm = rng.random() < 0.35
    if arm:
        top += 1.5
    if with_pole:
        width = max(st.thin, round(st.f * 0.16 / z))
        pole = cv.new_region(TRAIN_ID["pole"])
        xc = sp.bar(st.x(X, z), st.y(top, z), st.y(0.0, z), width, pole, z)
        if arm:
            yt = st.y(top, z)
            x1 = xc + toward * rng.uniform(2.0, 4.0) * s
            sp.rect(min(xc, x1), yt, max(xc, x1), yt + max(2.0, 0.15 * s), pole, z)
            xc = x1
    else:
        xc = st.x(X, z)
    y0 = st.y(top, z)
    region = cv.new_region(TRAIN_ID["traffic light"])
    x0 = sp.bar(xc, y0, y0 + h, w, region, z - 0.05) - w / 2
    lit = int(rng.integers(3))
    for i, lamp in enumerate((LAMP_RED, LAMP_AMBER, LAMP_GREEN)):
        sp.ellipse(x0 + w / 2, y0 + h * (i + 0.5) / 3, 0.32 * w, 0.13 * h, part=lamp if i == lit else FRAME)


def draw_tree(cv: Canvas, sp: Sprites, st: Street, rng: np.random.Generator, X: float, z: float, scale: float) -> None:
    """A street tree: a trunk and a lumpy crown, all 'vegetation' (as Cityscapes labels trunks)."""
    b = Billboard(st, X, z)
    trunk_h = rng.uniform(1.8, 3.5) * scale
    r = rng.uniform(1.4, 3.0) * scale
    trunk_w = max(0.3 * scale * b.scale, 2.0) / b.scale
    region = cv.new_region(TRAIN_ID["vegetation"])
    cy = trunk_h + 0.8 * r
    b.disc(sp, 0.0, cy, r, region)
    for _ in range(int(rng.integers(3, 6))):
        b.disc(sp, rng.uniform(-0.7, 0.7) * r, cy + rng.uniform(-0.35, 0.5) * r, rng.uniform(0.45, 0.8) * r, region)
    (x0, y0), (x1, y1) = b.p(-trunk_w / 2, trunk_h + 0.2 * r), b.p(trunk_w / 2, 0.0)
    sp.rect(x0, y0, x1, y1, region, z, part=TRUNK)


def draw_barrier(cv: Canvas, st: Street, rng: np.random.Generator, X: float, z0: float, z1: float, kind: str) -> None:
    """A wall or fence run along the sidewalk's outer edge, facing the road (a canvas surface)."""
    plane = side_plane(st, X, z0, z1)
    if plane is None:
        return
    box, z, ys = plane
    top = rng.uniform(0.8, 2.4) if kind == "wall" else rng.uniform(1.0, 2.0)
    zz = np.where(np.isfinite(z), z, 1.0)
    mask = (ys >= st.y(top, zz)) & (ys < st.y(0.0, zz)) & np.isfinite(z)
    Y = np.broadcast_to(st.camera_height - (ys - st.horizon) * zz / st.f, mask.shape)
    coord = Y if kind == "wall" else np.broadcast_to(zz, mask.shape)
    part = np.zeros(mask.shape, dtype=np.uint8)
    if kind == "fence":
        posts = np.broadcast_to(((zz - z0) % 2.5) < 0.15 + 0.5 * zz / st.f, mask.shape)
        part[posts | (np.abs(Y - top + 0.06) < 0.06 + 0.5 * zz / st.f)] = FRAME
    cv.fill(
        (box, mask),
        cv.new_region(TRAIN_ID[kind]),
        np.broadcast_to(zz, mask.shape).astype(np.float32),
        shade=0.9,
        part=part,
        coord=coord.astype(np.float32),
    )

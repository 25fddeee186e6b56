"""The label-side maps a scene is drawn on: surfaces per pixel, objects as sprites.

A scene is drawn once, as maps rather than colours: the trainId of every pixel, the
*region* it belongs to (one per object or surface, so each object can get its own colour
later), its depth in metres (for occlusion and haze), a *part* code (a window, a wheel, a
face: details that change the colour but not the class), a shading factor and a surface
coordinate (for paving joints and floors). Appearance is painted from these maps
afterwards, so one layout can be rendered in any domain's style.

Two ways of drawing, for speed: surfaces with per-pixel depth (ground, street fronts,
walls) are computed as numpy arrays and z-buffered into the :class:`Canvas`; objects are
many small polygons, rectangles and ellipses, rasterised far to near by Pillow's C filler
into a primitive-id image (:class:`Sprites`, the painter's algorithm) and then
composited onto the canvas where they are nearer than its surfaces. Pillow places a
vertex on a pixel index with the boundary included, so shapes are shifted by half a pixel
to sample pixel centres like the numpy side does; thin objects use :meth:`Sprites.bar`,
which is exact to the pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from segmerge.labels import IGNORE_INDEX

SKY_DEPTH = 1.0e4
"""Depth given to the sky: farther than anything drawn."""

# Part codes: details whose colour does not come from the class palette (see appearance.py).
NO_PART = 0
WINDOW = 1  # building and vehicle glass
MARKING = 2  # road paint
TYRE = 3
SKIN = 4
TROUSERS = 5
TRUNK = 6
LAMP_RED = 7
LAMP_AMBER = 8
LAMP_GREEN = 9
TAIL_LIGHT = 10
SIGN_FACE = 11
HOOD = 12
FRAME = 13  # darker structure: door frames, fence posts, sign backs
N_PARTS = 14


@dataclass(frozen=True)
class Box:
    """Integer pixel bounds [y0, y1) x [x0, x1), already clipped to the image."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def empty(self) -> bool:
        return self.y1 <= self.y0 or self.x1 <= self.x0

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)


Shape = tuple[Box, np.ndarray]
"""A bounding box and the boolean mask of covered pixels inside it."""


class Canvas:
    """The per-pixel maps of one scene, drawn with :meth:`fill` (see the module docstring)."""

    def __init__(self, height: int, width: int) -> None:
        self.height, self.width = height, width
        self.label = np.full((height, width), IGNORE_INDEX, dtype=np.uint8)
        self.region = np.zeros((height, width), dtype=np.int32)
        self.depth = np.full((height, width), np.inf, dtype=np.float32)
        self.part = np.zeros((height, width), dtype=np.uint8)
        self.shade = np.ones((height, width), dtype=np.float32)
        self.coord = np.zeros((height, width), dtype=np.float32)
        self.region_class: list[int] = [IGNORE_INDEX]  # region id -> trainId; region 0 is "nothing"
        self._row_centres = np.arange(height, dtype=np.float64)[:, None] + 0.5
        self._column_centres = np.arange(width, dtype=np.float64)[None, :] + 0.5

    def new_region(self, train_id: int) -> int:
        """A fresh region id (an object or surface that gets its own colour) of class ``train_id``."""
        self.region_class.append(train_id)
        return len(self.region_class) - 1

    def fill(
        self,
        shape: Shape,
        region: int | np.ndarray,
        depth: float | np.ndarray,
        shade: float | np.ndarray = 1.0,
        part: int | np.ndarray = NO_PART,
        coord: float | np.ndarray | None = None,
    ) -> np.ndarray | None:
        """Paint ``shape`` as ``region`` where it is nearer than what is there; returns the
        painted mask (inside the shape's box) or None when nothing was painted.

        ``region``, ``depth``, ``shade``, ``part`` and ``coord`` are scalars or arrays of
        the box's shape (a surface spanning many regions or depths is one fill)."""
        box, mask = shape
        if box.empty:
            return None
        sl = box.slices
        painted = mask & (self.depth[sl] >= depth)
        if not painted.any():
            return None
        regions = _pick(region, painted)
        if isinstance(region, np.ndarray):
            self.label[sl][painted] = np.asarray(self.region_class, dtype=np.uint8)[regions]
        else:
            self.label[sl][painted] = self.region_class[region]
        self.region[sl][painted] = regions
        self.depth[sl][painted] = _pick(depth, painted)
        self.shade[sl][painted] = _pick(shade, painted)
        self.part[sl][painted] = _pick(part, painted)
        if coord is not None:
            self.coord[sl][painted] = _pick(coord, painted)
        return painted

    def box(self, x0: float, y0: float, x1: float, y1: float) -> Box:
        """Pixels whose centres may fall in the float rectangle, clipped to the image."""
        by0 = min(max(0, int(np.floor(y0 + 0.5))), self.height)
        bx0 = min(max(0, int(np.floor(x0 + 0.5))), self.width)
        by1 = max(min(self.height, int(np.ceil(y1 - 0.5)) + 1), by0)
        bx1 = max(min(self.width, int(np.ceil(x1 - 0.5)) + 1), bx0)
        return Box(by0, by1, bx0, bx1)

    def centres(self, box: Box) -> tuple[np.ndarray, np.ndarray]:
        """Pixel-centre coordinates (ys column, xs row) of a box, for broadcasting."""
        return self._row_centres[box.y0 : box.y1], self._column_centres[:, box.x0 : box.x1]

    # ------------------------------------------------------------------ shapes

    def rect(self, x0: float, y0: float, x1: float, y1: float) -> Shape:
        """Pixels with centres in [x0, x1) x [y0, y1)."""
        box = self.box(x0, y0, x1, y1)
        ys, xs = self.centres(box)
        return box, (ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)

    def composite(self, sprites: Sprites, camera_height: float, horizon: float, f: float) -> None:
        """Put the sprites onto the canvas where they are nearer than its surfaces; their
        surface coordinate is the height above the road (for a lorry's ribs and the like)."""
        ids = np.asarray(sprites.ids)
        depth = np.take(np.asarray(sprites.depth, dtype=np.float32), ids)
        won = np.flatnonzero((ids > 0) & (depth <= self.depth))
        if not won.size:
            return
        winners = ids.ravel()[won]
        regions = np.take(np.asarray(sprites.region, dtype=np.int32), winners)
        won_depth = depth.ravel()[won]
        self.region.ravel()[won] = regions
        self.label.ravel()[won] = np.take(np.asarray(self.region_class, dtype=np.uint8), regions)
        self.depth.ravel()[won] = won_depth
        self.shade.ravel()[won] = np.take(np.asarray(sprites.shade, dtype=np.float32), winners)
        self.part.ravel()[won] = np.asarray(sprites.parts).ravel()[won]
        rows = (won // self.width).astype(np.float32) + 0.5
        self.coord.ravel()[won] = camera_height - (rows - horizon) * won_depth / f


class Sprites:
    """Objects drawn far to near into a primitive-id image (one id per drawn shape, so each
    keeps its region, depth and shade) and a part image drawn in lockstep.

    A call with a ``region`` paints a shape of that object; a call without one only marks
    a detail (``part``) on what is already there, so later, nearer objects still cover it.
    Callers keep details inside their object's outline."""

    def __init__(self, height: int, width: int) -> None:
        self.height, self.width = height, width
        self.ids = Image.new("I", (width, height))
        self.parts = Image.new("L", (width, height))
        self._ids = ImageDraw.Draw(self.ids)
        self._parts = ImageDraw.Draw(self.parts)
        self.region: list[int] = [0]
        self.depth: list[float] = [float("inf")]
        self.shade: list[float] = [1.0]

    def _paint(self, method: str, geometry, region: int | None, depth: float, shade: float, part: int) -> None:
        if region is not None:
            self.region.append(region)
            self.depth.append(depth)
            self.shade.append(shade)
            getattr(self._ids, method)(geometry, fill=len(self.region) - 1)
        getattr(self._parts, method)(geometry, fill=part)

    def polygon(
        self, points, region: int | None = None, depth: float = 0.0, shade: float = 1.0, part: int = NO_PART
    ) -> None:
        """A simple polygon, its (x, y) vertices in order around it."""
        limit = 1e5
        pts = [(x - 0.5, y - 0.5) for x, y in points]
        if len(pts) < 3 or not all(-limit < x < limit and -limit < y < limit for x, y in pts):
            return  # degenerate, or a vertex at or behind the camera
        self._paint("polygon", pts, region, depth, shade, part)

    def rect(
        self,
        x0: float,
        y0: float,
        x1: float,
        y1: float,
        region: int | None = None,
        depth: float = 0.0,
        shade: float = 1.0,
        part: int = NO_PART,
    ) -> None:
        """Pixels with centres in [x0, x1) x [y0, y1), exactly."""
        c0, c1 = math.ceil(x0 - 0.5), math.ceil(x1 - 0.5) - 1
        r0, r1 = math.ceil(y0 - 0.5), math.ceil(y1 - 0.5) - 1
        c0, r0 = max(c0, -1), max(r0, -1)
        c1, r1 = min(c1, self.width), min(r1, self.height)
        if c1 < c0 or r1 < r0:
            return
        self._paint("rectangle", (c0, r0, c1, r1), region, depth, shade, part)

    def bar(self, xc: float, y0: float, y1: float, width: int, region: int, depth: float) -> float:
        """An upright bar exactly ``width`` whole pixels wide centred near column ``xc``;
        returns its exact centre."""
        x0 = round(xc - width / 2)
        self.rect(x0, y0, x0 + width, y1, region, depth)
        return x0 + width / 2

    def ellipse(
        self,
        cx: float,
        cy: float,
        rx: float,
        ry: float,
        region: int | None = None,
        depth: float = 0.0,
        shade: float = 1.0,
        part: int = NO_PART,
    ) -> None:
        rx, ry = max(rx, 0.5), max(ry, 0.5)
        box = (cx - rx, cy - ry, cx + rx - 1, cy + ry - 1)
        if not all(math.isfinite(v) for v in box) or box[2] < box[0] - 1e-9 or box[3] < box[1] - 1e-9:
            return
        box = (box[0], box[1], max(box[2], box[0]), max(box[3], box[1]))
        self._paint("ellipse", box, region, depth, shade, part)


def _pick(value, mask: np.ndarray):
    """The masked entries of an array argument, or the scalar itself."""
    return value[mask] if isinstance(value, np.ndarray) else value

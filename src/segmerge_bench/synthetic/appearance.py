"""Painting a drawn scene in a domain's style: from label-side maps to an RGB image.

The order follows a camera's: surfaces get their colour (each object one of its class's
palette colours plus its own offset, then details such as windows and tyres), texture
(band-limited noise per class, paving and floor joints) and shading (flanks, the sky's
gradient); distance fades them into haze; then the light (white balance, brightness,
contrast, saturation, gamma) and the optics (gaussian blur, sensor noise) act on the whole
frame. The same drawn scene painted in two domains differs only in appearance, which is
what a pure appearance shift is.

A domain with ``randomize`` > 0 has its palettes, textures, lighting and optics re-drawn
for every image (see :func:`image_look`), the ``pretrain`` domain's defining property.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from segmerge_bench.synthetic.canvas import (
    FRAME,
    HOOD,
    LAMP_AMBER,
    LAMP_GREEN,
    LAMP_RED,
    MARKING,
    N_PARTS,
    SIGN_FACE,
    SKIN,
    SKY_DEPTH,
    TAIL_LIGHT,
    TROUSERS,
    TRUNK,
    TYRE,
    WINDOW,
    Canvas,
)
from segmerge_bench.synthetic.domains import TRAIN_ID, TRAIN_ID_NAMES, Domain
from segmerge_bench.synthetic.street import REFERENCE_WIDTH

_PARTS: dict[int, tuple[tuple[int, int, int], float]] = {
    WINDOW: ((52, 62, 76), 0.85),
    MARKING: ((214, 214, 206), 0.9),
    TYRE: ((24, 24, 26), 1.0),
    SKIN: ((196, 156, 128), 0.9),
    TROUSERS: ((44, 46, 58), 0.75),
    TRUNK: ((78, 62, 48), 0.85),
    LAMP_RED: ((235, 44, 30), 1.0),
    LAMP_AMBER: ((240, 172, 30), 1.0),
    LAMP_GREEN: ((40, 222, 112), 1.0),
    TAIL_LIGHT: ((168, 28, 28), 0.9),
    SIGN_FACE: ((232, 232, 226), 0.9),
    HOOD: ((36, 36, 40), 1.0),
    FRAME: ((28, 28, 30), 0.45),
}
"""Part code -> (RGB, how much of the object's own colour it replaces)."""


@dataclass(frozen=True)
class ImageLook:
    """The concrete appearance of one image: class tables (indexed by trainId, 256 long so
    ignore indexes them too), part colours, light and optics."""

    palette: np.ndarray  # [19, K, 3] float
    n_colors: np.ndarray  # [19] int
    jitter: np.ndarray  # [19]
    texture: np.ndarray  # [256]
    grain: np.ndarray  # [256]
    stripes: np.ndarray  # [256]
    period: np.ndarray  # [256]
    part_rgb: np.ndarray  # [N_PARTS, 3]
    part_mix: np.ndarray  # [N_PARTS]
    brightness: float
    contrast: float
    saturation: float
    cast: np.ndarray  # [3]
    gamma: float
    haze: float
    blur: float
    noise: float


@lru_cache(maxsize=64)
def _domain_tables(domain: Domain) -> dict[str, np.ndarray]:
    """The domain's fixed class and part tables (read-only; blended copies are made per image)."""
    looks = [domain.looks[n] for n in TRAIN_ID_NAMES]
    k = max(len(look.colors) for look in looks)
    tables = {"palette": np.zeros((len(looks), k, 3)), "n_colors": np.array([len(look.colors) for look in looks])}
    for i, look in enumerate(looks):
        tables["palette"][i, : len(look.colors)] = look.colors
    for name in ("jitter", "texture", "grain", "stripes", "period"):
        tables[name] = np.array([getattr(look, name) for look in looks], dtype=np.float64)
    tables["part_rgb"] = np.zeros((N_PARTS, 3))
    tables["part_mix"] = np.zeros(N_PARTS)
    for code, (rgb, mix) in _PARTS.items():
        tables["part_rgb"][code], tables["part_mix"][code] = rgb, mix
    for table in tables.values():
        table.flags.writeable = False
    return tables


def image_look(domain: Domain, rng: np.random.Generator) -> ImageLook:
    """The domain's appearance for one image: its own values, blended towards values drawn at
    random by ``domain.randomize``, with the per-image lighting jitter every domain has."""
    r = domain.randomize
    table = dict(_domain_tables(domain))
    palette, part_rgb = table["palette"], table["part_rgb"]
    light = domain.lighting
    log_b, log_c = np.log(light.brightness), np.log(light.contrast)
    saturation, cast, gamma = light.saturation, np.asarray(light.cast), light.gamma
    haze, blur, noise = light.haze, domain.blur, domain.noise
    if r > 0:
        n = len(TRAIN_ID_NAMES)

        def blend(value, random):
            return (1 - r) * value + r * random

        palette = blend(palette, _random_palette(rng, palette.shape))
        table["jitter"] = blend(table["jitter"], rng.uniform(4, 30, n))
        table["texture"] = blend(table["texture"], rng.uniform(0, 25, n))
        table["grain"] = blend(table["grain"], rng.uniform(0, 1, n))
        table["stripes"] = blend(table["stripes"], rng.uniform(0, 15, n) * (rng.random(n) < 0.4))
        part_rgb = blend(part_rgb, rng.uniform(10, 245, part_rgb.shape))
        log_b += r * rng.uniform(-0.45, 0.35)
        log_c += r * rng.uniform(-0.5, 0.4)
        saturation *= np.exp(r * rng.uniform(-1.2, 0.5))
        cast = cast * np.exp(r * rng.uniform(-0.18, 0.18, 3))
        gamma *= np.exp(r * rng.uniform(-0.35, 0.35))
        haze = blend(haze, rng.uniform(0, 0.45))
        blur = blend(blur, rng.uniform(0, 1.6))
        noise = blend(noise, rng.uniform(0, 9))
    log_b += rng.normal(0, light.jitter)
    log_c += rng.normal(0, light.jitter)
    cast = cast * np.exp(rng.normal(0, light.jitter * 0.25, 3))

    def padded(values):
        out = np.zeros(256, dtype=np.float32)
        out[: len(values)] = values
        return out

    return ImageLook(
        palette=palette,
        n_colors=table["n_colors"],
        jitter=table["jitter"],
        texture=padded(table["texture"]),
        grain=padded(table["grain"]),
        stripes=padded(table["stripes"]),
        period=padded(table["period"]) + (np.arange(256) >= len(TRAIN_ID_NAMES)),
        part_rgb=part_rgb,
        part_mix=table["part_mix"],
        brightness=float(np.exp(log_b)),
        contrast=float(np.exp(log_c)),
        saturation=float(saturation),
        cast=cast,
        gamma=float(gamma),
        haze=float(np.clip(haze, 0, 1)),
        blur=float(blur),
        noise=float(noise),
    )


def _random_palette(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Colours spread over hue, saturation and value, as natural photos' are."""
    hue = rng.uniform(0, 6, shape[:2])
    sat = rng.uniform(0.0, 0.8, shape[:2])
    val = rng.uniform(40, 235, shape[:2])
    sector = np.stack([np.abs(hue - 3) - 1, 2 - np.abs(hue - 2), 2 - np.abs(hue - 4)], axis=-1)
    pure = np.clip(sector, 0, 1)
    return val[..., None] * (1 - sat[..., None] + sat[..., None] * pure)


def paint(cv: Canvas, domain: Domain, rng: np.random.Generator) -> np.ndarray:
    """The RGB image (uint8 [H, W, 3]) of a drawn scene in ``domain``'s style.

    Light is linear up to the sensor: colour, texture, shading, haze, white balance,
    brightness and saturation (the last three are linear maps of colour, so they are applied
    to the colour tables, not to every pixel), then blur and noise; contrast and gamma are
    the camera's tone curve, applied last through a lookup table. ``np.take`` rather than
    fancy indexing and no per-pixel ``pow`` or ``%`` keep a 96x192 image near a millisecond."""
    look = image_look(domain, rng)
    h, w = cv.height, cv.width
    px = w / REFERENCE_WIDTH
    steps = np.float32((_TONE_STEPS - 1) / (_TONE_HIGH - _TONE_LOW))
    s = look.saturation
    light = ((s * np.eye(3) + (1 - s) / 3) * (look.cast * look.brightness / 255.0)[:, None] * steps).T

    region_class = np.asarray(cv.region_class)
    classes = np.where(region_class < len(TRAIN_ID_NAMES), region_class, 0)
    n = len(region_class)
    pick = (rng.random(n) * look.n_colors[classes]).astype(np.int64)
    jitter = look.jitter[classes][:, None]
    colours = (
        look.palette[classes, pick] + rng.normal(0, 1, (n, 3)) * jitter * 0.45 + rng.normal(0, 1, (n, 1)) * jitter * 0.8
    )
    img = np.take((colours @ light).astype(np.float32), cv.region, axis=0)
    flat = img.reshape(-1, 3)
    detail = np.flatnonzero(cv.part)
    if detail.size:
        parts = cv.part.ravel()[detail]
        mix = np.take(look.part_mix.astype(np.float32), parts)[:, None]
        part_rgb = (look.part_rgb @ light).astype(np.float32)
        flat[detail] += (np.take(part_rgb, parts, axis=0) - flat[detail]) * mix

    label = cv.label
    coarse = _value_noise(rng, h, w, 4, 8)
    fine = _value_noise(rng, h, w, max(2, h // 3), max(2, w // 3))
    grain = np.take(look.grain, label)
    texture = np.take(look.texture, label) * (coarse + grain * (1.6 * fine - coarse))
    stripes = np.take(look.stripes, label).ravel()
    jointed = np.flatnonzero(stripes)
    if jointed.size:
        period = np.take(look.period, label.ravel()[jointed])
        phase = cv.coord.ravel()[jointed] / period
        depth = cv.depth.ravel()[jointed]
        visible = np.clip(period * (1.1 * w) / np.maximum(depth, 0.1) / 4 - 0.5, 0, 1)
        texture.ravel()[jointed] -= stripes[jointed] * ((phase - np.floor(phase)) < 0.14) * visible

    sky = TRAIN_ID["sky"]
    fog = (look.palette[sky, : look.n_colors[sky]].mean(axis=0) @ light).astype(np.float32)
    fade = (look.haze * (1 - np.exp(cv.depth * np.float32(-0.01)))).astype(np.float32)
    fade[cv.depth >= SKY_DEPTH] = 0
    grey_gain = np.float32(look.brightness * float(np.mean(look.cast)) / 255.0 * steps)
    img *= (cv.shade * (1 - fade))[..., None]
    img += (texture * grey_gain * (1 - fade))[..., None] + fade[..., None] * fog

    if look.blur * px > 0.15:
        img = _blur(img, look.blur * px)
    if look.noise > 0:
        bank = _noise_bank(h, w)
        dy, dx = int(rng.integers(h + 1)), int(rng.integers(w + 1))
        img += bank[dy : dy + h, dx : dx + w] * np.float32(look.noise / 255.0 * steps)
    return _tone(img, look.contrast, look.gamma)


_TONE_LOW, _TONE_HIGH, _TONE_STEPS = -0.5, 1.5, 4096


def _tone(index: np.ndarray, contrast: float, gamma: float) -> np.ndarray:
    """Linear light, already scaled to lookup steps from ``_TONE_LOW``, -> uint8 through the
    tone curve (contrast about mid-grey, then gamma)."""
    index += np.float32(0.5 - _TONE_LOW * (_TONE_STEPS - 1) / (_TONE_HIGH - _TONE_LOW))
    np.clip(index, 0, _TONE_STEPS - 1, out=index)
    return np.take(_tone_table(round(contrast, 4), round(gamma, 4)), index.astype(np.int32))


@lru_cache(maxsize=256)
def _tone_table(contrast: float, gamma: float) -> np.ndarray:
    v = np.linspace(_TONE_LOW, _TONE_HIGH, _TONE_STEPS)
    out = np.clip((v - 0.5) * contrast + 0.5, 0, 1) ** gamma * 255 + 0.5
    table = out.astype(np.uint8)
    table.flags.writeable = False
    return table


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable gaussian blur with edge padding, as a few shifted multiply-adds."""
    r = int(min(6, max(1, np.ceil(2.0 * sigma))))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k = (k / k.sum()).astype(np.float32)
    h, w = img.shape[:2]
    pad = np.pad(img, ((r, r), (r, r), (0, 0)), mode="edge")
    rows = pad[0:h] * k[0]
    for i in range(1, 2 * r + 1):
        rows += pad[i : i + h] * k[i]
    out = rows[:, 0:w] * k[0]
    for i in range(1, 2 * r + 1):
        out += rows[:, i : i + w] * k[i]
    return out


@lru_cache(maxsize=8)
def _noise_bank(h: int, w: int) -> np.ndarray:
    """Unit gaussian sensor noise, twice the image size; each image reads a random window
    of it (drawing fresh normals would cost more than the rest of the painting)."""
    bank = np.random.default_rng(0x5E45).standard_normal((2 * h, 2 * w, 3), dtype=np.float32)
    bank.flags.writeable = False
    return bank


def _value_noise(rng: np.random.Generator, h: int, w: int, cells_y: int, cells_x: int) -> np.ndarray:
    """Smooth random field of about unit amplitude: a coarse grid of normals, bilinearly
    upsampled (two small matrix products)."""
    grid = rng.standard_normal((cells_y + 1, cells_x + 1)).astype(np.float32)
    return _upsampler(h, cells_y) @ grid @ _upsampler(w, cells_x).T


@lru_cache(maxsize=32)
def _upsampler(size: int, cells: int) -> np.ndarray:
    """[size, cells + 1] linear interpolation weights from grid nodes to pixel centres."""
    pos = (np.arange(size) + 0.5) / size * cells
    left = np.minimum(pos.astype(np.int64), cells - 1)
    t = pos - left
    m = np.zeros((size, cells + 1), dtype=np.float32)
    m[np.arange(size), left] = 1 - t
    m[np.arange(size), left + 1] = t
    m.flags.writeable = False
    return m

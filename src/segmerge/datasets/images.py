"""Reading images and label maps into numpy: the one place that touches image files.

Every failure becomes a :class:`SegmergeError` naming the file, so a corrupt file in a
5,000-image run says which one to replace.

16-bit colour PNGs need care: Pillow opens them as 8-bit "RGB"/"RGBA", keeping only the
high byte of each sample (SYNTHIA's class ids 0..22 would all read as 0). Pillow's own
PNG decoder still does the inflating and unfiltering; :func:`read_png_channels` decodes
the file twice, once keeping the high and once the low byte of every sample, and joins
them. Should a Pillow release change the internals this relies on, a small pure
zlib/numpy decoder takes over (correct, but slow on full-size images).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from segmerge.errors import SegmergeError

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS_BY_COLOR_TYPE = {0: 1, 2: 3, 4: 2, 6: 4}  # grey, RGB, grey+alpha, RGBA (3 = palette)
_SINGLE_CHANNEL_MODES = {"L", "P", "I;16", "I;16B", "I;16L", "I"}
_READ_ERRORS = (OSError, ValueError, SyntaxError, EOFError, zlib.error, struct.error, IndexError)


def read_image(path: Path) -> np.ndarray:
    """An image file -> uint8 RGB [H, W, 3] (grey, palette and alpha images are converted)."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except _READ_ERRORS as exc:
        raise _unreadable(path, "image", exc) from exc


def read_label(path: Path) -> np.ndarray:
    """A single-channel label image -> its ids as stored (uint8, uint16 or int32) [H, W].

    Palette PNGs (GTA5's labels) give their palette indices, which are the ids; a colour
    image is refused because its pixels are colours, not ids.
    """
    try:
        with Image.open(path) as im:
            if im.mode not in _SINGLE_CHANNEL_MODES:
                raise SegmergeError(
                    f"{path}: label image has mode {im.mode!r}; expected a single-channel id map "
                    "(8/16-bit grey or palette PNG). A colour visualisation (e.g. *_color.png) cannot be used"
                )
            ids = np.asarray(im)
    except _READ_ERRORS as exc:
        raise _unreadable(path, "label image", exc) from exc
    if ids.dtype.byteorder == ">":
        ids = ids.astype(ids.dtype.newbyteorder("="))
    return ids


def read_png_channels(path: Path) -> np.ndarray:
    """A PNG of any bit depth and colour type -> its samples [H, W, C] (uint8 or uint16).

    Needed for SYNTHIA's 16-bit multi-channel label PNGs, which Pillow alone truncates.
    """
    try:
        header = _png_header(path)
        if header is None:
            raise ValueError("not a PNG file")
        width, height, depth, color_type, _interlace = header
        if depth == 16 and color_type in (2, 6):
            samples = _read_16bit_colour_with_pillow(path, color_type)
            if samples is None:
                samples = decode_png(path.read_bytes())
        elif depth == 16 and color_type == 4:
            samples = decode_png(path.read_bytes())
        else:
            with Image.open(path) as im:
                samples = np.asarray(im)
            if samples.dtype.byteorder == ">":
                samples = samples.astype(samples.dtype.newbyteorder("="))
    except _READ_ERRORS as exc:
        raise _unreadable(path, "PNG", exc) from exc
    if samples.shape[:2] != (height, width):
        raise _unreadable(path, "PNG", ValueError(f"decoded {samples.shape[:2]}, header says {(height, width)}"))
    return samples if samples.ndim == 3 else samples[:, :, None]


def _unreadable(path: Path, what: str, exc: BaseException) -> SegmergeError:
    if isinstance(exc, FileNotFoundError):
        return SegmergeError(
            f"{path}: {what} file does not exist; was it moved or deleted after the dataset was listed?"
        )
    return SegmergeError(
        f"{path}: cannot read this {what} ({type(exc).__name__}: {exc}); "
        "the file is corrupt, truncated or not an image - re-extract it from the dataset archive"
    )


def _png_header(path: Path) -> tuple[int, int, int, int, int] | None:
    with open(path, "rb") as f:
        head = f.read(33)
    if len(head) < 33 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None
    width, height, depth, color_type, _compression, _filter, interlace = struct.unpack(">IIBBBBB", head[16:29])
    return width, height, depth, color_type, interlace


def _read_16bit_colour_with_pillow(path: Path, color_type: int) -> np.ndarray | None:
    """High and low bytes through Pillow's C decoder; None when Pillow's internals differ."""
    mode = "RGB" if color_type == 2 else "RGBA"
    high = _decode_with_rawmode(path, mode, f"{mode};16B")  # Pillow's own choice: the high bytes
    low = _decode_with_rawmode(path, mode, f"{mode};16L")  # read as little-endian: the low bytes
    if high is None or low is None:
        return None
    return (high.astype(np.uint16) << 8) | low.astype(np.uint16)


def _decode_with_rawmode(path: Path, mode: str, rawmode: str) -> np.ndarray | None:
    with Image.open(path) as im:
        tiles = list(im.tile)
        if im.mode != mode or len(tiles) != 1 or tiles[0][0] != "zip" or tiles[0][3] != f"{mode};16B":
            return None
        tile = tiles[0]
        im.tile = [tile._replace(args=rawmode) if hasattr(tile, "_replace") else (*tile[:3], rawmode)]
        return np.asarray(im)


def decode_png(data: bytes) -> np.ndarray:
    """Pure zlib/numpy PNG decoder (non-interlaced, 8/16-bit grey/RGB/grey+alpha/RGBA).

    Returns [H, W, C] uint8 or uint16. The fallback for :func:`read_png_channels`; the
    Average and Paeth filters are undone in Python, so expect seconds per megapixel.
    """
    if data[:8] != _PNG_SIGNATURE:
        raise ValueError("not a PNG file")
    pos, header, idat = 8, None, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if len(body) != length:
            raise ValueError(f"chunk {kind!r} is truncated")
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + length
    if header is None or not idat:
        raise ValueError("PNG without IHDR or IDAT")
    width, height, depth, color_type, _compression, _filter, interlace = header
    if interlace or depth not in (8, 16) or color_type not in _CHANNELS_BY_COLOR_TYPE:
        raise ValueError(f"unsupported PNG (bit depth {depth}, colour type {color_type}, interlace {interlace})")
    channels = _CHANNELS_BY_COLOR_TYPE[color_type]
    bpp = channels * depth // 8
    stride = width * bpp
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), dtype=np.uint8)
    if raw.size != height * (stride + 1):
        raise ValueError(f"image data holds {raw.size} bytes, expected {height * (stride + 1)}")
    rows = raw.reshape(height, stride + 1)
    out = np.zeros((height, stride), dtype=np.uint8)
    prior = np.zeros(stride, dtype=np.uint8)
    for y in range(height):
        out[y] = prior = _unfilter(int(rows[y, 0]), rows[y, 1:], prior, bpp)
    if depth == 16:
        return out.view(">u2").astype(np.uint16).reshape(height, width, channels)
    return out.reshape(height, width, channels)


def _unfilter(kind: int, line: np.ndarray, prior: np.ndarray, bpp: int) -> np.ndarray:
    if kind == 0:
        return line.copy()
    if kind == 1:  # Sub: running sum along each byte position of the pixel, modulo 256
        return np.cumsum(line.reshape(-1, bpp), axis=0, dtype=np.uint8).reshape(-1)
    if kind == 2:  # Up
        return line + prior
    if kind not in (3, 4):
        raise ValueError(f"unknown PNG filter type {kind}")
    cur, up = bytearray(line.tobytes()), prior.tobytes()
    for i in range(len(cur)):
        left = cur[i - bpp] if i >= bpp else 0
        if kind == 3:  # Average
            cur[i] = (cur[i] + ((left + up[i]) >> 1)) & 0xFF
            continue
        upper_left = up[i - bpp] if i >= bpp else 0  # Paeth
        p = left + up[i] - upper_left
        pa, pb, pc = abs(p - left), abs(p - up[i]), abs(p - upper_left)
        predictor = left if pa <= pb and pa <= pc else (up[i] if pb <= pc else upper_left)
        cur[i] = (cur[i] + predictor) & 0xFF
    return np.frombuffer(bytes(cur), dtype=np.uint8)

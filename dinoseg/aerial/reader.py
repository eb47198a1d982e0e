"""Reading aerial photos larger than :data:`dinoseg.io.MAX_PIXELS`, one window at a time.

:func:`open_large_image` validates a file (exists, readable, size within
:data:`MAX_TILED_PIXELS`, both sides at least :data:`dinoseg.io.MIN_SIDE`) from its header,
without decoding it, and returns an :class:`ImageSource` whose :meth:`~ImageSource.read`
gives RGB windows:

- **uncompressed files** (binary PPM/PGM, uncompressed TIFF, BMP) are read by row bands
  straight from the file: a window costs only the rows it spans, so memory stays flat
  whatever the image size;
- **compressed files** (JPEG, PNG, WebP, compressed TIFF) cannot be decoded piecewise by
  Pillow: they are decoded once, on the first read, and held as RGB (3 bytes per pixel).

Decompression bombs: the pixel count is checked against ``max_pixels`` before any decoding.
Pillow's own guard raises for images over twice ``PIL.Image.MAX_IMAGE_PIXELS`` (179 MP by
default), so :data:`MAX_TILED_PIXELS` stays below that and Pillow's global setting is never
changed.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dinoseg.io import MAX_PIXELS, InputError, check_image_size, load_image

#: Largest photo the tiled path accepts (150 MP, e.g. 12 000 x 12 500 px).
MAX_TILED_PIXELS = 150_000_000
_RAW_MODES = {"RGB": 3, "BGR": 3, "L": 1}


class ImageSource:
    """An RGB image read by windows. ``shape`` is ``(H, W)``."""

    shape: tuple[int, int]
    name: str = "<image>"

    def read(self, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
        """The window rows ``y0:y1``, columns ``x0:x1`` as a ``(y1-y0, x1-x0, 3)`` uint8 array."""
        raise NotImplementedError

    @property
    def megapixels(self) -> float:
        return self.shape[0] * self.shape[1] / 1e6


class ArraySource(ImageSource):
    """An in-memory ``(H, W, 3)`` (or ``(H, W)`` gray) uint8 image."""

    def __init__(self, array: np.ndarray, *, name: str = "<image>", bgr: bool = False):
        if array.ndim == 2:
            array = array[:, :, None]
        if array.ndim != 3 or array.shape[2] not in (1, 3) or array.dtype != np.uint8:
            raise InputError(
                f"{name}: expected an (H, W, 3) uint8 image, got {array.shape} {array.dtype}"
            )
        h, w = array.shape[:2]
        check_image_size(w, h, name)
        self.array = array
        self.shape = (h, w)
        self.name = name
        self.bgr = bgr

    def read(self, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
        win = np.asarray(self.array[y0:y1, x0:x1])
        if win.shape[2] == 1:
            return np.repeat(win, 3, axis=2)
        return np.ascontiguousarray(win[:, :, ::-1] if self.bgr else win)


class DecodedSource(ImageSource):
    """A compressed file, decoded as a whole on the first :meth:`read`.

    Up to :data:`dinoseg.io.MAX_PIXELS` the core reader decodes it to an RGB array (every
    mode); larger photos are kept as the decoded Pillow image and each window is cropped and
    converted on its own (no second full-size copy).
    """

    def __init__(self, path: Path, shape: tuple[int, int], max_pixels: int):
        self.path = path
        self.shape = shape
        self.name = str(path)
        self.max_pixels = max_pixels
        self._array: np.ndarray | None = None
        self._image: Image.Image | None = None

    def read(self, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
        if self._array is None and self._image is None:
            if self.shape[0] * self.shape[1] <= MAX_PIXELS:
                self._array = load_image(self.path)
            else:
                self._image = _decode_large(self.path)
        if self._array is not None:
            return self._array[y0:y1, x0:x1]
        image = self._image
        if image is None:
            raise RuntimeError("image not decoded")
        win = image.crop((x0, y0, x1, y1))
        if win.mode in ("RGBA", "LA", "PA") or (win.mode == "P" and "transparency" in win.info):
            rgba = win.convert("RGBA")
            win = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
        return np.asarray(win.convert("RGB"), dtype=np.uint8)


def _decode_large(path: Path) -> Image.Image:
    """Decode a photo over 40 MP whose size was already checked (Pillow's decompression-bomb
    warning silenced for this one call)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img: Image.Image = Image.open(path)
        if img.mode not in ("RGB", "RGBA", "L", "LA", "P", "PA", "CMYK", "YCbCr", "1"):
            raise InputError(
                f"{path}: mode {img.mode!r} is not supported for a photo over 40 MP; "
                "convert it to 8-bit RGB"
            )
        try:
            img.load()
        except (OSError, SyntaxError, ValueError) as e:
            raise InputError(f"{path}: image data is corrupt or truncated ({e})") from e
    return img


@dataclass(frozen=True)
class _RawLayout:
    offset: int
    rawmode: str
    stride: int
    orientation: int


def _raw_layout(img: Any) -> _RawLayout | None:
    """The layout of an uncompressed, contiguous pixel block, or None when it is not one."""
    w, h = img.size
    tiles = list(img.tile)
    if not tiles or any(t[0] != "raw" for t in tiles):
        return None
    args = [t[3] if isinstance(t[3], tuple) else (t[3], 0, 1) for t in tiles]
    rawmode, stride, orientation = (args[0] + (0, 1))[:3]
    if rawmode not in _RAW_MODES or any(a[0] != rawmode for a in args):
        return None
    stride = int(stride) or w * _RAW_MODES[rawmode]
    if len(tiles) > 1 and orientation != 1:
        return None
    expected_offset, expected_row = tiles[0][2], 0
    for t in tiles:  # strips must follow each other in rows and in the file
        x0, y0, x1, y1 = t[1]
        if (x0, x1) != (0, w) or y0 != expected_row or t[2] != expected_offset:
            return None
        expected_row, expected_offset = y1, t[2] + (y1 - y0) * stride
    if expected_row != h:
        return None
    return _RawLayout(int(tiles[0][2]), str(rawmode), stride, int(orientation or 1))


class RawFileSource(ImageSource):
    """An uncompressed file read by row bands straight from the file (no decoding, no memory
    map): a window costs the full-width rows it spans. The last band read is kept, so the tiles
    of one tile row share one read."""

    def __init__(self, path: Path, layout: _RawLayout, shape: tuple[int, int]):
        self.path = path
        self.layout = layout
        self.shape = shape
        self.name = str(path)
        self.bands = _RAW_MODES[layout.rawmode]
        self._cache: tuple[int, int, np.ndarray] | None = None

    def _rows(self, y0: int, y1: int) -> np.ndarray:
        """Image rows ``y0:y1`` as ``(rows, W, bands)`` uint8."""
        if self._cache is not None and self._cache[0] <= y0 and y1 <= self._cache[1]:
            top, _, band = self._cache
            return band[y0 - top : y1 - top]
        h, w = self.shape
        lay = self.layout
        first = y0 if lay.orientation == 1 else h - y1  # bottom-up files store the last row first
        with open(self.path, "rb") as f:
            f.seek(lay.offset + first * lay.stride)
            data = f.read((y1 - y0) * lay.stride)
        if len(data) < (y1 - y0) * lay.stride:
            raise InputError(f"{self.path}: image data is truncated")
        rows = np.frombuffer(data, np.uint8).reshape(y1 - y0, lay.stride)
        band = rows[:, : w * self.bands].reshape(y1 - y0, w, self.bands)
        if lay.orientation == -1:
            band = band[::-1]
        self._cache = (y0, y1, band)
        return band

    def read(self, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
        win = self._rows(y0, y1)[:, x0:x1]
        if self.bands == 1:
            return np.repeat(win, 3, axis=2)
        return np.ascontiguousarray(win[:, :, ::-1] if self.layout.rawmode == "BGR" else win)


def open_large_image(src: str | Path, *, max_pixels: int = MAX_TILED_PIXELS) -> ImageSource:
    """Open an image for tiled inference, checking it without decoding it.

    Raises:
        InputError: missing, unreadable, too small, or over ``max_pixels``.
    """
    path = Path(src)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if not path.is_file():
        raise InputError(f"{path}: not a file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                layout = _raw_layout(img) if img.mode in ("RGB", "L") else None
    except Image.DecompressionBombError as e:
        raise InputError(f"{path}: image is too large ({e})") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"{path}: not a readable image ({e})") from e
    check_image_size(w, h, str(path), max_pixels=max_pixels, limit="tiled limit",
                     advice="split the photo first")
    if layout is not None:
        needed = layout.offset + h * layout.stride
        if path.stat().st_size < needed:
            raise InputError(f"{path}: image data is truncated ({path.stat().st_size} bytes)")
        return RawFileSource(path, layout, (h, w))
    return DecodedSource(path, (h, w), max_pixels)


def as_source(image: np.ndarray | ImageSource | str | Path) -> ImageSource:
    """Accept an array, a path or an existing source."""
    if isinstance(image, ImageSource):
        return image
    if isinstance(image, np.ndarray):
        return ArraySource(image)
    return open_large_image(image)

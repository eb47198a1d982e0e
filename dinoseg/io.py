"""Reading user images and masks with validation.

Every function here raises :class:`InputError` with a message that says what to fix; callers
(CLI, webapp, workers) turn it into a clear message instead of a traceback.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

#: Largest image accepted by the predictor in one piece (pixels). Larger photos go through
#: tiled inference (`dinoseg aerial`).
MAX_PIXELS = 40_000_000
#: Smallest side accepted (one DINOv2 patch).
MIN_SIDE = 14

Source = str | Path | bytes | BinaryIO


class InputError(ValueError):
    """User input that cannot be used; the message says what is wrong and how to fix it."""


def check_image_size(
    w: int, h: int, what: str, *, max_pixels: int | None = None, limit: str = "limit",
    advice: str = "",
) -> None:
    """Raise :class:`InputError` when a ``w`` x ``h`` image is over ``max_pixels`` (``None``: no
    bound; the message names the ``limit`` and ends with ``advice``) or a side is under
    :data:`MIN_SIDE`."""
    if max_pixels is not None and w * h > max_pixels:
        raise InputError(
            f"{what}: image is {w}x{h} = {w * h / 1e6:.1f} MP, over the {limit} of "
            f"{max_pixels / 1e6:.0f} MP; {advice}"
        )
    if min(w, h) < MIN_SIDE:
        raise InputError(f"{what}: image is {w}x{h}; both sides must be at least {MIN_SIDE} px")


def _name(src: Source) -> str:
    if isinstance(src, (str, Path)):
        return str(src)
    return "<uploaded data>"


def _open(src: Source, max_pixels: int) -> Image.Image:
    """Open an image without decoding it, refusing decompression bombs."""
    name = _name(src)
    if isinstance(src, (str, Path)):
        path = Path(src)
        if not path.exists():
            raise InputError(f"{name}: file not found")
        if not path.is_file():
            raise InputError(f"{name}: not a file")
    fp: BinaryIO | str | Path = io.BytesIO(src) if isinstance(src, bytes) else src
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(fp)
            w, h = img.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise InputError(f"{name}: image is too large ({e}); use tiled inference") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"{name}: not a readable image ({e})") from e
    check_image_size(w, h, name, max_pixels=max_pixels,
                     advice="use tiled inference (`dinoseg aerial`) for large photos")
    return img


def _decode(img: Image.Image, name: str) -> Image.Image:
    try:
        img.load()
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"{name}: image data is corrupt or truncated ({e})") from e
    return img


def load_image(src: Source, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image file as RGB.

    Grayscale, palette, RGBA (alpha dropped onto black), CMYK and 16-bit images are converted.

    Returns:
        (H, W, 3) uint8 array.
    """
    name = _name(src)
    img = _decode(_open(src, max_pixels), name)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = float(arr.max()) or 1.0
        arr8 = np.clip(arr / top * 255.0, 0, 255).astype(np.uint8)
        return np.repeat(arr8[..., None], 3, axis=2)
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr8 = ((arr - lo) / ((hi - lo) or 1.0) * 255.0).astype(np.uint8)
        return np.repeat(arr8[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(bg, rgba)
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def load_label_map(src: Source, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read a mask PNG holding integer labels (class indices or 0/255), without rescaling.

    Palette PNGs give their indices; RGB masks must be gray (R = G = B).

    Returns:
        (H, W) int64 array.
    """
    name = _name(src)
    img = _decode(_open(src, max_pixels), name)
    if img.mode in ("P", "L", "I", "I;16", "I;16B", "I;16L", "1"):
        return np.asarray(img, dtype=np.int64).copy()
    if img.mode in ("LA", "RGBA", "RGB"):
        arr = np.asarray(img.convert("RGB"), dtype=np.int64)
        if not (
            np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 1], arr[..., 2])
        ):
            raise InputError(f"{name}: colour mask; give a binary (black/white) or class-index PNG")
        return arr[..., 0].copy()
    raise InputError(f"{name}: unsupported mask mode {img.mode!r}")


def to_binary_mask(
    labels: np.ndarray, *, class_id: int | None = None, ignore_index: int | None = None
) -> np.ndarray:
    """Turn a label map into a foreground mask.

    Args:
        labels: (H, W) integer label map.
        class_id: foreground class; ``None`` means any nonzero value (except ``ignore_index``).
        ignore_index: label value treated as background for support masks.

    Returns:
        (H, W) bool array.
    """
    if class_id is not None:
        return labels == class_id
    fg = labels != 0
    if ignore_index is not None:
        fg &= labels != ignore_index
    return fg


def load_mask(
    src: Source,
    *,
    image_size: tuple[int, int] | None = None,
    class_id: int | None = None,
    require_foreground: bool = True,
) -> np.ndarray:
    """Read a support mask: a binary PNG (nonzero = foreground) or class-index PNG + ``class_id``.

    Args:
        image_size: ``(H, W)`` of the image the mask belongs to; a mismatch is an error.

    Returns:
        (H, W) bool array.
    """
    name = _name(src)
    labels = load_label_map(src)
    if image_size is not None and labels.shape != tuple(image_size):
        mh, mw = labels.shape
        ih, iw = image_size
        raise InputError(f"{name}: mask is {mw}x{mh} but its image is {iw}x{ih}; they must match")
    mask = to_binary_mask(labels, class_id=class_id)
    if require_foreground and not mask.any():
        what = f"class {class_id}" if class_id is not None else "foreground (nonzero) pixels"
        raise InputError(f"{name}: the mask has no {what}; a support mask must mark the object")
    return mask


def save_mask_png(mask: np.ndarray, path: str | Path) -> None:
    """Write a (H, W) bool/0-1 mask as a 0/255 single-channel PNG (atomically)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray((np.asarray(mask) > 0).astype(np.uint8) * 255, mode="L").save(tmp, format="PNG")
    tmp.replace(path)

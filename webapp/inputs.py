"""Widget values -> validated support and query inputs.

The support editor is a ``gr.ImageEditor(type="numpy", image_mode="RGBA")``: its value is a dict
``{"background": (H, W, 4) uint8 | None, "layers": [(H, W, 4) uint8, ...], "composite": ...}``;
brush strokes live in the layers (alpha > 0 where painted, 0 elsewhere). A mask may instead be
uploaded as a PNG (nonzero = foreground). Every problem raises :class:`InputError` with a message
that names the input and says what to do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dinoseg.io import MAX_PIXELS, InputError, check_image_size, load_image, load_mask

#: support slots on the page and queries accepted per run
MAX_SUPPORTS = 4
MAX_QUERIES = 16


@dataclass(frozen=True)
class Support:
    """One annotated example: ``image`` (H, W, 3) uint8 and ``mask`` (H, W) bool (non-empty)."""

    image: np.ndarray
    mask: np.ndarray


@dataclass(frozen=True)
class Query:
    """An uploaded query: the file the browser sent and the name the user knows it by."""

    path: Path
    name: str


def _renamed(err: InputError, path: str | Path, name: str) -> InputError:
    """The same error with a temporary upload path replaced by the user's file name."""
    return InputError(str(err).replace(str(path), name))


def editor_background(value: dict[str, Any] | None, what: str) -> np.ndarray | None:
    """The editor's background image as (H, W, 3) uint8 (alpha composited onto black), or None."""
    bg = None if value is None else value.get("background")
    if bg is None:
        return None
    arr = np.asarray(bg)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise InputError(f"{what}: unsupported image layout {arr.shape}")
    check_image_size(arr.shape[1], arr.shape[0], what, max_pixels=MAX_PIXELS,
                     advice="downscale it first")
    rgb = arr[..., :3].astype(np.float32)
    if arr.shape[2] == 4:  # same convention as dinoseg.io.load_image: alpha onto black
        rgb *= arr[..., 3:4].astype(np.float32) / 255.0
    return np.rint(rgb).clip(0, 255).astype(np.uint8)


def brushed_mask(value: dict[str, Any] | None, shape: tuple[int, int]) -> np.ndarray:
    """Union of the painted pixels of every editor layer -> (H, W) bool at ``shape``.

    A layer whose size differs from the image (a canvas that was resized) is scaled to it.
    """
    mask = np.zeros(shape, bool)
    for layer in (value or {}).get("layers") or []:
        arr = np.asarray(layer)
        if arr.ndim != 3:
            continue
        painted = arr[..., 3] > 0 if arr.shape[2] == 4 else arr.max(axis=2) > 0
        if painted.shape != shape:
            img = Image.fromarray(painted.astype(np.uint8) * 255)
            painted = np.asarray(img.resize((shape[1], shape[0]), Image.Resampling.NEAREST)) > 0
        mask |= painted
    return mask


def read_support(
    value: dict[str, Any] | None, mask_file: str | Path | None, index: int
) -> Support | None:
    """One support slot -> :class:`Support`, or None when the slot is unused.

    An uploaded mask file wins over brush strokes; without either the slot is an error.
    """
    what = f"Support {index}"
    image = editor_background(value, what)
    if image is None:
        if mask_file:
            raise InputError(f"{what}: a mask file was given but no image; upload the image too")
        return None
    h, w = image.shape[:2]
    if mask_file:
        name = f"{what} mask ({Path(mask_file).name})"
        try:
            mask = load_mask(mask_file, image_size=(h, w))
        except InputError as e:
            raise _renamed(e, mask_file, name) from None
        return Support(image, mask)
    mask = brushed_mask(value, (h, w))
    if not mask.any():
        raise InputError(
            f"{what}: no mask drawn; paint over the object with the brush or upload a mask PNG"
        )
    return Support(image, mask)


def read_supports(
    values: Sequence[dict[str, Any] | None], mask_files: Sequence[str | Path | None]
) -> list[Support]:
    """All used support slots (at least one), validated."""
    supports = []
    for i, (value, mask_file) in enumerate(zip(values, mask_files, strict=True), start=1):
        support = read_support(value, mask_file, i)
        if support is not None:
            supports.append(support)
    if not supports:
        raise InputError(
            "no support image: upload an example image in 'Support 1' and mark the object on it"
        )
    return supports


def read_support_files(
    images: Sequence[str | Path] | None, masks: Sequence[str | Path] | None
) -> list[Support]:
    """Support image files and their mask files (same order; nonzero = the object) ->
    :class:`Support` list (the API's way of giving supports)."""
    images, masks = list(images or []), list(masks or [])
    if not images:
        raise InputError("no support image: give at least one support image with its mask")
    if len(images) != len(masks):
        raise InputError(f"{len(images)} support images but {len(masks)} masks; give one mask "
                         "per image, in the same order")  # fmt: skip
    if len(images) > MAX_SUPPORTS:
        raise InputError(f"at most {MAX_SUPPORTS} support images, got {len(images)}")
    supports = []
    for i, (image_file, mask_file) in enumerate(zip(images, masks, strict=True), start=1):
        what = f"Support {i}"
        try:
            image = load_image(image_file)
            mask = load_mask(mask_file, image_size=image.shape[:2])
        except InputError as e:  # the user's file names, not the server's upload paths
            e = _renamed(_renamed(e, image_file, Path(image_file).name), mask_file,
                         Path(mask_file).name)  # fmt: skip
            raise InputError(f"{what}: {e}") from None
        if not mask.any():
            raise InputError(f"{what}: the mask is empty; mark the object (nonzero pixels)")
        supports.append(Support(image, mask))
    return supports


def read_queries(files: str | Path | Sequence[str | Path] | None) -> list[Query]:
    """Uploaded query files -> :class:`Query` list; each is decoded once to validate it."""
    if not files:
        raise InputError("no query image: upload one or more images to segment")
    paths = [files] if isinstance(files, (str, Path)) else list(files)
    if len(paths) > MAX_QUERIES:
        raise InputError(f"at most {MAX_QUERIES} query images per run, got {len(paths)}")
    queries = []
    for p in paths:
        name = Path(p).name
        try:
            load_image(p)
        except InputError as e:
            raise _renamed(e, p, f"Query {name}") from None
        queries.append(Query(Path(p), name))
    return queries

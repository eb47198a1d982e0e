"""Offline examples, built from images that ship inside installed packages.

Nothing is downloaded: the pictures come from Gradio's bundled media (``gradio.media``) and,
when scikit-learn is installed, its sample images. The support masks are derived
deterministically (a drawn polygon, a colour threshold) and written with the pictures into a
cache folder on first use (:func:`build_examples`), never at import.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from dinoseg.cache import cache_dir

VERSION = "v2"
#: the running cheetah in gradio's cheetah.jpg (502x343), traced by hand, (x, y) pixels
CHEETAH_POLYGON = [
    (83, 136), (100, 139), (120, 149), (140, 157), (160, 160), (180, 156), (193, 146),
    (205, 135), (225, 127), (250, 125), (280, 128), (310, 130), (335, 128), (345, 122),
    (355, 120), (365, 123), (372, 130), (377, 137), (378, 146), (370, 152), (355, 153),
    (345, 157), (335, 166), (322, 176), (305, 182), (296, 192), (300, 205), (305, 215),
    (312, 224), (306, 232), (290, 233), (272, 228), (255, 222), (240, 218), (230, 222),
    (218, 226), (214, 219), (226, 210), (240, 202), (234, 192), (220, 186), (205, 182),
    (190, 178), (175, 178), (160, 180), (140, 177), (120, 168), (100, 156), (84, 146),
]  # fmt: skip


@dataclass(frozen=True)
class Example:
    """One example: a support image with its mask and the queries to segment."""

    title: str
    support: Path
    mask: Path  # 0/255 PNG
    queries: list[Path]
    class_name: str = ""


def _gradio_image(name: str) -> Path | None:
    try:
        from gradio.media import get_image

        return Path(get_image(name))
    except (ImportError, FileNotFoundError, ValueError):
        return None


def _sklearn_image(name: str) -> Path | None:
    try:
        import sklearn.datasets
    except ImportError:
        return None
    path = Path(sklearn.datasets.__file__).parent / "images" / name
    return path if path.is_file() else None


def polygon_mask(size: tuple[int, int], polygon: list[tuple[int, int]]) -> np.ndarray:
    """(W, H) image size + polygon -> (H, W) bool mask of its inside."""
    img = Image.new("L", size, 0)
    ImageDraw.Draw(img).polygon(polygon, fill=255)
    return np.asarray(img) > 0


def sky_mask(rgb: np.ndarray) -> np.ndarray:
    """Clear blue sky by colour: (H, W, 3) uint8 -> (H, W) bool."""
    r, g, b = (rgb[..., i].astype(np.int16) for i in range(3))
    return (b > r + 20) & (b > 110) & (g > r)


def _write(
    folder: Path,
    name: str,
    source: Path,
    mask_fn: Callable[[Image.Image], np.ndarray],
    queries: list[Path],
    title: str,
    class_name: str,
) -> Example:
    """Copy the support as PNG and write its mask (once)."""
    support, mask_path = folder / f"{name}.png", folder / f"{name}_mask.png"
    if not (support.is_file() and mask_path.is_file()):
        img = Image.open(source).convert("RGB")
        mask = mask_fn(img)
        mask_img = Image.fromarray(mask.astype(np.uint8) * 255)
        for path, pic in ((mask_path, mask_img), (support, img)):
            tmp = path.with_name(f".{path.name}.tmp")
            pic.save(tmp, format="PNG")
            tmp.replace(path)
    return Example(title, support, mask_path, queries, class_name)


def build_examples(folder: Path | None = None) -> list[Example]:
    """Write the example files (first call only) and return the examples that are available."""
    folder = folder or cache_dir("demo-examples", VERSION)
    folder.mkdir(parents=True, exist_ok=True)
    examples = []
    cheetah = _gradio_image("cheetah.jpg")
    cat_queries = [p for p in (_gradio_image("lion.jpg"), _gradio_image("cheetah1.jpg")) if p]
    if cheetah and cat_queries:
        examples.append(_write(
            folder, "cheetah", cheetah, lambda im: polygon_mask(im.size, CHEETAH_POLYGON),
            cat_queries, "Big cats: a running cheetah (drawn outline) -> a lion, a cheetah",
            "big_cat",
        ))  # fmt: skip
    tower, china = _gradio_image("tower.jpg"), _sklearn_image("china.jpg")
    if tower and china:
        examples.append(_write(
            folder, "sky", tower, lambda im: sky_mask(np.asarray(im)), [china],
            "Sky: the sky behind the Eiffel tower (colour threshold) -> a Chinese temple", "sky",
        ))  # fmt: skip
    return examples

"""Training views of a labelled aerial image: its tiles as the pipeline cuts them, plus
augmented views (crop with a scale change, rotation, colour jitter, blur).

Every view is an ``(image, labels)`` pair at most about one tile large, encoded once and
cached by the trainer. The plain views are exactly the tiles :func:`~dinoseg.aerial.tiling
.plan_tiles` gives at inference (same size, same overlap), so the head learns the features it
will see. An augmented view is a random window of ``tile * f`` px (``f`` in ``[1 - s, 1 + s]``,
clamped to the image) resized by ``1 / f`` back to about a tile (``crop``: a ground-resolution
change of up to ``s``), turned by a multiple of 90 degrees and maybe mirrored (``rotate``: the
eight orientations of a top-down photo, exact, no resampling), colour-jittered (``jitter``:
brightness, contrast, saturation in ``[1 - s, 1 + s]``) and blurred (``blur``: Gaussian, radius
0.3-1.5 px, half the views). Random choices come from ``(seed, image hash, view)`` alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from dinoseg.aerial.tiling import plan_tiles
from dinoseg.io import InputError
from dinoseg.train.augment import jitter_colour

#: The augmentations a view can combine.
AUGMENTATIONS = ("crop", "rotate", "jitter", "blur")


@dataclass(frozen=True)
class ViewPlan:
    """How an image becomes views.

    Attributes:
        tile, overlap: the pipeline's tiling (px).
        augment: names from :data:`AUGMENTATIONS` (empty: the plain tiles only).
        views: augmented views per image (with ``augment``).
        strength: ``s`` above, in (0, 1).
        seed: the augmentation seed.
    """

    tile: int = 518
    overlap: int = 96
    augment: tuple[str, ...] = ()
    views: int = 4
    strength: float = 0.25
    seed: int = 0

    def check(self) -> None:
        unknown = sorted(set(self.augment) - set(AUGMENTATIONS))
        if unknown:
            raise InputError(f"augmentations {unknown}: use any of {', '.join(AUGMENTATIONS)}")
        if not 0.0 < self.strength < 1.0:
            raise InputError(f"augmentation strength must be in (0, 1), got {self.strength}")
        if self.views < 0:
            raise InputError(f"views must be 0 or more, got {self.views}")
        plan_tiles((self.tile, self.tile), self.tile, self.overlap)  # tile and overlap sizes


def plain_tiles(image: np.ndarray, labels: np.ndarray, tile: int, overlap: int
                ) -> list[tuple[np.ndarray, np.ndarray]]:  # fmt: skip
    """The tiles the pipeline cuts: ``(H, W, 3)`` + ``(H, W)`` -> ``(th, tw, 3)`` + ``(th, tw)``
    pairs."""
    grid = plan_tiles(labels.shape[:2], tile, overlap)
    return [(image[y0:y1, x0:x1], labels[y0:y1, x0:x1]) for y0, x0, y1, x1 in grid.boxes()]


def _resize(image: np.ndarray, labels: np.ndarray, factor: float
            ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    h, w = labels.shape
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    if size == (w, h):
        return image, labels
    img = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
    lab = np.asarray(Image.fromarray(labels).resize(size, Image.Resampling.NEAREST))
    return img, lab


def augmented_view(image: np.ndarray, labels: np.ndarray, plan: ViewPlan,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """One augmented view (see the module docstring); ``labels`` (H, W) uint8."""
    h, w = labels.shape
    s, aug = plan.strength, set(plan.augment)
    f = float(rng.uniform(1.0 - s, 1.0 + s)) if "crop" in aug else 1.0
    ch, cw = min(h, round(plan.tile * f)), min(w, round(plan.tile * f))
    y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    img, lab = image[y0 : y0 + ch, x0 : x0 + cw], labels[y0 : y0 + ch, x0 : x0 + cw]
    if "crop" in aug:
        img, lab = _resize(img, lab, 1.0 / f)
    if "rotate" in aug:
        k, flip = int(rng.integers(0, 4)), bool(rng.integers(0, 2))
        img, lab = np.rot90(img, k), np.rot90(lab, k)
        if flip:
            img, lab = img[:, ::-1], lab[:, ::-1]
    if "jitter" in aug:
        img = jitter_colour(np.ascontiguousarray(img), rng, s)
    if "blur" in aug and rng.random() < 0.5:
        radius = float(rng.uniform(0.3, 1.5))
        img = np.asarray(Image.fromarray(np.ascontiguousarray(img)).filter(
            ImageFilter.GaussianBlur(radius)))  # fmt: skip
    return np.ascontiguousarray(img), np.ascontiguousarray(lab)


def training_views(image: np.ndarray, labels: np.ndarray, image_hash: str, plan: ViewPlan
                   ) -> list[tuple[str, np.ndarray, np.ndarray]]:  # fmt: skip
    """``(name, view image, view labels)``: the plain tiles (``tile<i>``), then
    ``plan.views`` augmented views (``aug<i>``) when ``plan.augment`` names any."""
    out = [(f"tile{i}", img, lab)
           for i, (img, lab) in enumerate(plain_tiles(image, labels, plan.tile, plan.overlap))]
    if plan.augment:
        key = int(image_hash[:12], 16)
        for i in range(plan.views):
            rng = np.random.default_rng([plan.seed, key, i])
            img, lab = augmented_view(image, labels, plan, rng)
            out.append((f"aug{i}", img, lab))
    return out


def parse_augment(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"crop,rotate"`` / ``["crop", "rotate"]`` / ``"all"`` / ``"none"`` -> names."""
    items = text.replace(",", " ").split() if isinstance(text, str) else list(text)
    if items in (["all"], ["yes"], ["true"]):
        return AUGMENTATIONS
    if items in ([], ["none"], ["no"], ["false"]):
        return ()
    return tuple(dict.fromkeys(items))

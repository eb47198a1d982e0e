"""The few-shot predictor's inputs: image and support checks, the support's tensors on one
geometry, and queries grouped into batches of one padded shape
(:class:`dinoseg.predictor.FewShotPredictor`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from dinoseg.io import InputError
from dinoseg.preprocess import Geometry, image_to_tensor, mask_to_tensor

#: Most support images one request may give.
MAX_SHOTS = 20


def check_image(image: np.ndarray, what: str) -> None:
    """Raise :class:`InputError` unless ``image`` is an (H, W, 3) uint8 RGB array (``what``
    names it in the message)."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", type(image).__name__)
        raise InputError(f"{what}: expected an (H, W, 3) RGB array, got {shape}")
    if image.dtype != np.uint8:
        raise InputError(f"{what}: expected uint8 pixels, got {image.dtype}")


def check_support(images: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> None:
    """Raise :class:`InputError` unless there are 1 to :data:`MAX_SHOTS` (H_k, W_k, 3) uint8
    images, each with a non-empty (H_k, W_k) mask."""
    if not images:
        raise InputError("at least one support image with a mask is needed")
    if len(images) != len(masks):
        raise InputError(f"{len(images)} support images but {len(masks)} masks")
    if len(images) > MAX_SHOTS:
        raise InputError(f"at most {MAX_SHOTS} support images, got {len(images)}")
    for i, (img, m) in enumerate(zip(images, masks, strict=True)):
        check_image(img, f"support {i + 1}")
        if m.shape != img.shape[:2]:
            raise InputError(
                f"support {i + 1}: mask is {m.shape[1]}x{m.shape[0]} but the image is "
                f"{img.shape[1]}x{img.shape[0]}"
            )
        if not np.any(m):
            raise InputError(f"support {i + 1}: the mask is empty; mark the object")


def support_tensors(
    images: Sequence[np.ndarray], masks: Sequence[np.ndarray], ref: Geometry
) -> tuple[Tensor, Tensor]:
    """The support resized onto ``ref``'s geometry (``ref.resized``, padded to ``ref.padded``).

    Args:
        images: K (H_k, W_k, 3) uint8 images.
        masks: K (H_k, W_k) foreground masks.

    Returns:
        pixels (K, 3, Hp, Wp) normalised and masks (K, Hp, Wp) float32 in [0, 1].
    """
    geoms = [Geometry(img.shape[:2], ref.resized, ref.padded) for img in images]
    pix = torch.stack([image_to_tensor(i, g) for i, g in zip(images, geoms, strict=True)])
    msk = torch.stack(
        [mask_to_tensor(np.asarray(m, bool), g) for m, g in zip(masks, geoms, strict=True)]
    )
    return pix, msk


def shape_batches(geoms: Sequence[Geometry], batch_size: int) -> list[list[int]]:
    """Indices into ``geoms`` in batches of at most ``batch_size`` sharing one padded shape
    (shapes in order of first appearance, indices ascending within a shape)."""
    by_shape: dict[tuple[int, int], list[int]] = {}
    for i, g in enumerate(geoms):
        by_shape.setdefault(g.padded, []).append(i)
    return [
        idx[start : start + batch_size]
        for idx in by_shape.values()
        for start in range(0, len(idx), batch_size)
    ]

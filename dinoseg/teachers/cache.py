"""Teacher embeddings computed once per image and kept on disk.

Key: SHA-256 over :data:`KEY_VERSION`, the teacher's identity (``name``, ``weights_id``,
``image_size``, and its pixel normalisation when it has one) and the image itself (shape,
dtype and pixel bytes). Files live at ``DIR/<key[:2]>/<key>.safetensors`` with one tensor,
``embedding (C, h, w)``, stored as float16 by default: half the space of float32, and the
embeddings (outputs of a LayerNorm, values of order 1) lose about 1e-3 relative precision.
On a miss the returned tensor is the stored (rounded) one, so a result is the same whether it
was computed now or read back later. Images are encoded one at a time, so an embedding never
depends on what else was in the call. Writes are atomic (temporary file, then rename).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

if TYPE_CHECKING:
    from dinoseg.teachers import Teacher

KEY_VERSION = "dinoseg-teacher-embeddings-v1"
_TENSOR = "embedding"


def teacher_identity(teacher: Teacher) -> str:
    """What makes two teachers' embeddings interchangeable: name, weights, input side, norm."""
    parts = [teacher.name, teacher.weights_id, str(teacher.image_size)]
    for attr in ("pixel_mean", "pixel_std"):
        value = getattr(teacher, attr, None)
        if isinstance(value, Tensor):
            parts.append(",".join(f"{v:g}" for v in value.flatten().tolist()))
    return "|".join(parts)


def embedding_key(teacher: Teacher, image: np.ndarray) -> str:
    """Hex SHA-256 key of ``image (H, W, 3)`` uint8 under ``teacher``."""
    digest = hashlib.sha256(f"{KEY_VERSION}|{teacher_identity(teacher)}|".encode())
    digest.update(f"{image.shape}|{image.dtype}|".encode())
    digest.update(np.ascontiguousarray(image).tobytes())
    return digest.hexdigest()


def _check_image(image: np.ndarray, index: int) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ValueError(f"image {index}: expected a uint8 numpy array (H, W, 3)")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image {index}: expected shape (H, W, 3), got {image.shape}")


def _write_atomic(path: Path, tensor: Tensor, metadata: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        save_file({_TENSOR: tensor.contiguous()}, tmp, metadata=metadata)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@torch.inference_mode()
def encode_image(teacher: Teacher, image: np.ndarray) -> Tensor:
    """One image ``(H, W, 3)`` uint8 -> its embedding ``(C, h, w)`` float32."""
    pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
    return teacher.embed(teacher.preprocess(pixels))[0].float().cpu()  # kept on the CPU


def cached_embeddings(
    teacher: Teacher,
    images: Sequence[np.ndarray],
    cache_dir: str | Path,
    *,
    dtype: torch.dtype = torch.float16,
) -> Tensor:
    """Embeddings of ``images`` (each ``(H, W, 3)`` uint8 RGB), from disk where cached.

    Returns ``(N, C, h, w)`` float32 (``(N, 256, 64, 64)`` for the real teachers); missing
    entries are computed with ``teacher`` and stored as ``dtype``.
    """
    root = Path(cache_dir)
    out = []
    for index, image in enumerate(images):
        _check_image(image, index)
        key = embedding_key(teacher, image)
        path = root / key[:2] / f"{key}.safetensors"
        if path.is_file():
            out.append(load_file(path)[_TENSOR].float())
            continue
        stored = encode_image(teacher, image).to(dtype)
        meta = {"teacher": teacher_identity(teacher), "image_shape": str(image.shape)}
        _write_atomic(path, stored, meta)
        out.append(stored.float())
    if not out:
        return torch.empty((0, *teacher.embed_shape))
    return torch.stack(out)

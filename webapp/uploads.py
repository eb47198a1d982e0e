"""Content-addressed storage of the inputs and the ``dinoseg.segment`` request built from them.

Files go to ``runtime.uploads_dir()`` (shared with the workers) named by the SHA-256 of their
bytes, so the same upload is stored once and a request names its inputs by content.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dinoseg import runtime
from dinoseg.cache import sha256_bytes
from webapp.inputs import Query, Support

#: the registry's champion, the default model of every request (the contract's default)
CHAMPION = "models:/dinoseg-segmenter@champion"
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def store_bytes(data: bytes, suffix: str, folder: Path | None = None) -> Path:
    """Write ``data`` as ``<folder>/<sha256><suffix>`` (atomically, once) and return the path."""
    folder = runtime.ensure(folder or runtime.uploads_dir())
    path = folder / f"{sha256_bytes(data)}{suffix}"
    if not path.is_file():
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return path


def png_bytes(array: np.ndarray) -> bytes:
    """(H, W, 3) uint8 or (H, W) bool/uint8 -> PNG bytes (a bool mask is written as 0/255)."""
    arr = np.asarray(array)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def store_file(path: str | Path, folder: Path | None = None) -> Path:
    """Store an uploaded file with its bytes unchanged (suffix kept when it is an image's)."""
    suffix = Path(path).suffix.lower()
    return store_bytes(
        Path(path).read_bytes(), suffix if suffix in _IMAGE_SUFFIXES else ".img", folder
    )


def make_request(
    supports: Sequence[Support],
    queries: Sequence[Query],
    *,
    model: str | None = CHAMPION,
    threshold: float | None = None,
    folder: Path | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """Store the inputs and build the ``dinoseg.segment`` request.

    Returns:
        ``(request, names)``: the JSON request of the workers' contract
        (``{"support": [{"image", "mask"}], "queries": [path], "model", "threshold"}``) and the
        user's file name of each stored query path.
    """
    support = [
        {
            "image": str(store_bytes(png_bytes(s.image), ".png", folder)),
            "mask": str(store_bytes(png_bytes(s.mask), ".png", folder)),
        }
        for s in supports
    ]
    names: dict[str, str] = {}
    paths = []
    for q in queries:
        stored = str(store_file(q.path, folder))
        names.setdefault(stored, q.name)
        paths.append(stored)
    request = {
        "support": support,
        "queries": paths,
        "model": model or CHAMPION,
        "threshold": None if threshold is None else float(threshold),
    }
    return request, names

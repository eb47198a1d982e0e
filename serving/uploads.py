"""Content-addressed uploads: files in ``runtime.uploads_dir()`` named by their SHA-256.

The web app stores every input here (the same upload is stored once) and a request names its
inputs by path; the job trusts the hash in such a name instead of reading the file again.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from pathlib import Path

import numpy as np
from PIL import Image

from dinoseg import runtime

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}
_HASHED = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def png_bytes(array: np.ndarray) -> bytes:
    """(H, W, 3) uint8 or (H, W) bool/uint8 -> PNG bytes (a bool mask is written as 0/255)."""
    arr = np.asarray(array)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def store_bytes(data: bytes, suffix: str, folder: Path | None = None) -> Path:
    """Write ``data`` as ``<folder>/<sha256><suffix>`` (atomically, once) and return the path."""
    folder = runtime.ensure(folder or runtime.uploads_dir())
    path = folder / f"{hashlib.sha256(data).hexdigest()}{suffix}"
    if not path.is_file():
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return path


def store_file(path: str | Path, folder: Path | None = None) -> Path:
    """Store a file with its bytes unchanged (its suffix kept when it is an image's)."""
    suffix = Path(path).suffix.lower()
    return store_bytes(
        Path(path).read_bytes(), suffix if suffix in IMAGE_SUFFIXES else ".img", folder
    )


def content_sha256(path: Path, uploads: Path | None = None) -> str:
    """The SHA-256 of an input: read from its name when it was stored by :func:`store_bytes`
    (a 64-hex stem inside the uploads folder), else computed from its bytes."""
    folder = (uploads or runtime.uploads_dir()).resolve()
    stem = path.name.split(".", 1)[0]
    if _HASHED.match(stem) and path.resolve().parent == folder:
        return stem
    return file_sha256(path)

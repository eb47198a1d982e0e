"""The page's inputs -> content-addressed uploads (:mod:`serving.uploads`) and the requests
built from them.

Files go to ``runtime.uploads_dir()`` (shared with the workers) named by the SHA-256 of their
bytes, so the same upload is stored once and a request names its inputs by content. A support
drawn on the page arrives as pixels; :class:`StoredArrays` remembers which file holds which
pixels, so a support used again is not encoded to PNG again.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dinoseg import runtime
from serving.uploads import png_bytes, store_bytes, store_file
from webapp.inputs import Query, Support

#: the registry's champion, the default model of every request (the contract's default)
CHAMPION = "models:/dinoseg-segmenter@champion"


class StoredArrays:
    """The upload file of each array stored lately (LRU of ``size``), keyed by the array's
    bytes, shape and dtype: the same support image or mask is PNG-encoded once."""

    def __init__(self, size: int = 64):
        self.size = size
        self._paths: OrderedDict[str, Path] = OrderedDict()

    def store(self, array: np.ndarray, folder: Path | None = None) -> Path:
        """``array`` as a PNG upload (:func:`serving.uploads.png_bytes`); its path."""
        arr = np.ascontiguousarray(array)
        folder = folder or runtime.uploads_dir()
        h = hashlib.sha256(f"{arr.shape}|{arr.dtype}|{folder}|".encode())
        h.update(arr.tobytes())
        key = h.hexdigest()
        known = self._paths.get(key)
        if known is not None and known.is_file():
            self._paths.move_to_end(key)
            return known
        path = store_bytes(png_bytes(arr), ".png", folder)
        self._paths[key] = path
        while len(self._paths) > self.size:
            self._paths.popitem(last=False)
        return path


def make_request(
    supports: Sequence[Support],
    queries: Sequence[Query],
    *,
    model: str | None = CHAMPION,
    threshold: float | None = None,
    class_name: str | None = None,
    folder: Path | None = None,
    arrays: StoredArrays | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """Store the inputs and build the ``dinoseg.segment`` request.

    ``arrays`` remembers the supports already stored (default: none remembered).

    Returns:
        ``(request, names)``: the JSON request of the serving contract
        (``{"support": [{"image", "mask"}], "queries": [path], "class_name", "model",
        "threshold"}``) and the user's file name of each stored query path.
    """
    arrays = arrays or StoredArrays(size=0)
    support = [
        {"image": str(arrays.store(s.image, folder)), "mask": str(arrays.store(s.mask, folder))}
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
        "class_name": class_name or None,
        "model": model or CHAMPION,
        "threshold": None if threshold is None else float(threshold),
    }
    return request, names

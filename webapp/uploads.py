"""The page's inputs -> content-addressed uploads (:mod:`serving.uploads`) and the requests
built from them.

Files go to ``runtime.uploads_dir()`` (shared with the workers) named by the SHA-256 of their
bytes, so the same upload is stored once and a request names its inputs by content.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from serving.uploads import png_bytes, store_bytes, store_file
from webapp.inputs import Query, Support

#: the registry's champion, the default model of every request (the contract's default)
CHAMPION = "models:/dinoseg-segmenter@champion"


def make_request(
    supports: Sequence[Support],
    queries: Sequence[Query],
    *,
    model: str | None = CHAMPION,
    threshold: float | None = None,
    class_name: str | None = None,
    folder: Path | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """Store the inputs and build the ``dinoseg.segment`` request.

    Returns:
        ``(request, names)``: the JSON request of the serving contract
        (``{"support": [{"image", "mask"}], "queries": [path], "class_name", "model",
        "threshold"}``) and the user's file name of each stored query path.
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
        "class_name": class_name or None,
        "model": model or CHAMPION,
        "threshold": None if threshold is None else float(threshold),
    }
    return request, names

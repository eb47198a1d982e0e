"""The results store: one folder per prediction, so arrays never travel through the broker.

::

    runtime.results_dir()/<id>/mask.png    (H, W) 0/255
    runtime.results_dir()/<id>/prob.png    (H, W) uint8 = round(prob * 255)
    runtime.results_dir()/<id>/meta.json   confidence, needs_review, model_version, input hashes

``meta.json`` (one schema for every backend)::

    {"id", "query", "query_sha256",
     "support": [{"image", "mask", "image_sha256", "mask_sha256"}], "class_name",
     "model_version", "model_spec", "notice", "threshold", "confidence", "needs_review",
     "height", "width", "memory": {"version", "retrieved": [image sha256, ...]} | null,
     "created"}

A record is written into a temporary folder and renamed into place, so readers never see a
half-written record. Ids are content-derived (:func:`result_id`: inputs + class name + model
version + memory version + threshold, 24 hex): a redelivered task rewrites nothing and a
repeated request finds its record.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dinoseg import runtime
from dinoseg.io import InputError, save_mask_png

_ID = re.compile(r"^[0-9a-f]{8,64}$")


def result_id(parts: Mapping[str, Any]) -> str:
    """A 24-hex id derived from JSON-able ``parts`` (sorted keys)."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def record_dir(rid: str, root: Path | None = None) -> Path:
    """The folder of record ``rid``; refuses ids that are not plain hex (no path tricks)."""
    if not isinstance(rid, str) or not _ID.match(rid):
        raise InputError(f"{rid!r} is not a result id (8-64 lowercase hex characters)")
    return (root or runtime.results_dir()) / rid


def write_record(
    rid: str, mask: np.ndarray, prob: np.ndarray, meta: Mapping[str, Any], root: Path | None = None
) -> Path:
    """Store one prediction atomically; an existing record with this id is kept as it is.

    Args:
        mask: (H, W) bool.
        prob: (H, W) float foreground probability in [0, 1].
        meta: JSON-able fields (``id`` is added).
    """
    final = record_dir(rid, root)
    if (final / "meta.json").is_file():
        return final
    runtime.ensure(final.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{rid}.", dir=final.parent))
    try:
        save_mask_png(mask, tmp / "mask.png")
        prob8 = np.clip(np.round(np.asarray(prob, np.float64) * 255), 0, 255).astype(np.uint8)
        Image.fromarray(prob8, mode="L").save(tmp / "prob.png")
        (tmp / "meta.json").write_text(json.dumps({"id": rid, **meta}, indent=1))
        try:
            os.rename(tmp, final)
        except OSError:  # a concurrent writer won: same inputs, same content
            if not (final / "meta.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def read_meta(rid: str, root: Path | None = None) -> dict[str, Any]:
    """The ``meta.json`` of record ``rid`` (:class:`InputError` when there is none)."""
    path = record_dir(rid, root) / "meta.json"
    if not path.is_file():
        raise InputError(f"no result {rid!r} in the results store")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def read_mask(rid: str, root: Path | None = None) -> np.ndarray:
    """The stored mask of record ``rid`` as (H, W) bool."""
    with Image.open(record_dir(rid, root) / "mask.png") as img:
        return np.asarray(img.convert("L")) > 127

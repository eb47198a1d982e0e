"""The ``segment`` request: validated, with every path inside the uploads folder.

Request (JSON)::

    {"support": [{"image": path, "mask": path}, ...], "queries": [path, ...],
     "class_name": str | null, "model": spec | null, "threshold": float | null}

Mask PNGs: nonzero = foreground. ``class_name`` names the thing segmented (normalised by
:func:`dinoseg.data.classnames.normalize_class_name`; missing or blank = ``object``, the
annotator chooses). Paths must lie under ``runtime.uploads_dir()`` (the shared
storage the web app writes to), so a request can never name a file elsewhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dinoseg import runtime
from dinoseg.data.classnames import normalize_class_name
from dinoseg.inputs import MAX_SHOTS
from dinoseg.io import InputError
from dinoseg.modelspec import parse_model_spec

MAX_QUERIES = 64


@dataclass
class SegmentRequest:
    """A validated request: resolved paths inside the uploads folder."""

    support: list[tuple[Path, Path]]
    queries: list[Path]
    model: str | None
    threshold: float | None
    class_name: str = "object"


def upload_path(value: Any, what: str, uploads: Path) -> Path:
    """A request's file reference -> an existing file inside ``uploads`` (else InputError)."""
    if not isinstance(value, str) or not value:
        raise InputError(f"{what}: expected a file path (string), got {type(value).__name__}")
    path = Path(value).resolve()
    if not path.is_relative_to(uploads):
        raise InputError(f"{what}: {value} is outside the uploads folder {uploads}")
    if not path.is_file():
        raise InputError(f"{what}: {value}: file not found")
    return path


def _threshold(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError("segment: 'threshold' must be a number or null")
    if not 0.0 < float(value) < 1.0:
        raise InputError(f"segment: 'threshold' must be between 0 and 1, got {value}")
    return float(value)


def _model(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InputError("segment: 'model' must be a model spec string or null")
    return parse_model_spec(value).text


def parse_request(request: Any, uploads: Path | None = None) -> SegmentRequest:
    """Validate a ``segment`` payload (:class:`InputError` says what is wrong)."""
    uploads = (uploads or runtime.uploads_dir()).resolve()
    if not isinstance(request, Mapping):
        raise InputError(f"segment: the request must be an object, got {type(request).__name__}")
    support, queries = request.get("support"), request.get("queries")
    if not isinstance(support, list) or not 0 < len(support) <= MAX_SHOTS:
        raise InputError(f"segment: 'support' must list 1 to {MAX_SHOTS} image/mask pairs")
    if not isinstance(queries, list) or not 0 < len(queries) <= MAX_QUERIES:
        raise InputError(f"segment: 'queries' must list 1 to {MAX_QUERIES} image paths")
    pairs = []
    for i, s in enumerate(support, 1):
        if not isinstance(s, Mapping):
            raise InputError(f"support {i}: expected {{'image': path, 'mask': path}}")
        pairs.append((upload_path(s.get("image"), f"support {i} image", uploads),
                      upload_path(s.get("mask"), f"support {i} mask", uploads)))  # fmt: skip
    paths = [upload_path(q, f"query {i}", uploads) for i, q in enumerate(queries, 1)]
    return SegmentRequest(
        pairs, paths, _model(request.get("model")), _threshold(request.get("threshold")),
        normalize_class_name(request.get("class_name")),
    )

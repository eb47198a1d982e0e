"""The ``segment`` job: support refs + query refs -> records in the results store.

Request (JSON)::

    {"support": [{"image": path, "mask": path}, ...], "queries": [path, ...],
     "model": spec | null, "threshold": float | null}

Paths must lie under ``runtime.uploads_dir()`` (the shared storage the webapp writes to); mask
PNGs: nonzero = foreground. Reply::

    {"model_version": str, "notice": str | null,
     "results": [{"id", "query", "mask", "prob", "confidence", "needs_review"}, ...]}
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dinoseg import runtime
from dinoseg.confidence import mask_confidence
from dinoseg.io import InputError, load_image, load_mask
from dinoseg.predictor import MAX_SHOTS
from workers import store
from workers.models import ModelHolder

MAX_QUERIES = 64


@dataclass
class SegmentRequest:
    """A validated request: resolved paths inside the uploads folder."""

    support: list[tuple[Path, Path]]
    queries: list[Path]
    model: str | None
    threshold: float | None


def _upload_path(value: Any, what: str, uploads: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise InputError(f"{what}: expected a file path (string), got {type(value).__name__}")
    path = Path(value).resolve()
    if not path.is_relative_to(uploads):
        raise InputError(f"{what}: {value} is outside the uploads folder {uploads}")
    if not path.is_file():
        raise InputError(f"{what}: {value}: file not found")
    return path


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
        pairs.append((_upload_path(s.get("image"), f"support {i} image", uploads),
                      _upload_path(s.get("mask"), f"support {i} mask", uploads)))  # fmt: skip
    paths = [_upload_path(q, f"query {i}", uploads) for i, q in enumerate(queries, 1)]
    model, threshold = request.get("model"), request.get("threshold")
    if model is not None and (not isinstance(model, str) or not model):
        raise InputError("segment: 'model' must be a model spec string or null")
    if threshold is not None:
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
            raise InputError("segment: 'threshold' must be a number or null")
        if not 0.0 < float(threshold) < 1.0:
            raise InputError(f"segment: 'threshold' must be between 0 and 1, got {threshold}")
        threshold = float(threshold)
    return SegmentRequest(pairs, paths, model, threshold)


def _load_support(req: SegmentRequest) -> tuple[list[np.ndarray], list[np.ndarray]]:
    images, masks = [], []
    for image_path, mask_path in req.support:
        image = load_image(image_path)
        images.append(image)
        masks.append(load_mask(mask_path, image_size=image.shape[:2]))
    return images, masks


def run_segment(
    request: Any, holder: ModelHolder, review_threshold: float, root: Path | None = None
) -> dict[str, Any]:
    """Run one request and store its results (``root``: results store, default runtime's)."""
    req = parse_request(request)
    served = holder.get(req.model)
    predictor = served.predictor
    threshold = req.threshold or predictor.threshold
    support_hashes = [[store.file_sha256(i), store.file_sha256(m)] for i, m in req.support]
    support_key = hashlib.sha256(repr(support_hashes).encode()).hexdigest()
    holder.set_support(predictor, support_key, lambda: _load_support(req))
    queries = [load_image(q) for q in req.queries]
    results = []
    for path, pred in zip(req.queries, predictor.predict(queries), strict=True):
        q_hash = store.file_sha256(path)
        mask, conf = pred.mask, pred.confidence
        if threshold != predictor.threshold:
            mask, conf = pred.prob > threshold, mask_confidence(pred.prob, threshold=threshold)
        rid = store.result_id({"support": support_hashes, "query": q_hash,
                               "model": served.model_version, "threshold": threshold})  # fmt: skip
        needs_review = bool(conf < review_threshold)
        meta = {
            "query": str(path), "query_sha256": q_hash,
            "support": [{"image": str(i), "mask": str(m), "image_sha256": h[0], "mask_sha256": h[1]}
                        for (i, m), h in zip(req.support, support_hashes, strict=True)],
            "model_version": served.model_version, "model_spec": req.model, "notice": served.notice,
            "threshold": threshold, "confidence": round(float(conf), 6),
            "needs_review": needs_review, "height": int(mask.shape[0]), "width": int(mask.shape[1]),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }  # fmt: skip
        folder = store.write_record(rid, mask, pred.prob, meta, root)
        results.append({"id": rid, "query": str(path), "mask": str(folder / "mask.png"),
                        "prob": str(folder / "prob.png"), "confidence": meta["confidence"],
                        "needs_review": needs_review})  # fmt: skip
    return {"model_version": served.model_version, "notice": served.notice, "results": results}

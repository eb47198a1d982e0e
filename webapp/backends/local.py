"""In-process execution: the ``dinoseg.segment`` contract served by a predictor in this process.

Used by ``dinoseg demo --no-worker`` and by the tests. Predictors are cached per checkpoint (a
model cache shared by visitors, not user state); one lock serialises support + predict because
a predictor holds the support of the request it is serving.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from dinoseg import runtime
from dinoseg.cache import sha256_bytes
from dinoseg.confidence import mask_confidence
from dinoseg.config import load_params
from dinoseg.io import InputError, load_image, load_mask, save_mask_png
from dinoseg.predictor import FewShotPredictor, load_predictor, resolve_model_spec
from webapp.backends import BackendError, Report, no_report
from webapp.uploads import CHAMPION, png_bytes

log = logging.getLogger(__name__)
#: results below this confidence are flagged for review (code default; params.yaml
#: ``review.confidence_threshold`` overrides it, the setting the workers use)
REVIEW_BELOW = 0.6
PARAMS_FILE = Path("params.yaml")
PROTOTYPE = "prototype"
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:/")  # a registry spec, as in dinoseg.predictor

Loader = Callable[[str], FewShotPredictor]


def _default_loader(spec: str) -> FewShotPredictor:
    return load_predictor(spec)


def review_threshold(params: Path = PARAMS_FILE) -> float:
    """``review.confidence_threshold`` from the params file, else :data:`REVIEW_BELOW`."""
    section = load_params(params, "review") if params.is_file() else {}
    return float(section.get("confidence_threshold", REVIEW_BELOW))


def _file_hash(path: str | Path) -> str:
    return sha256_bytes(Path(path).read_bytes())


def write_record(
    folder: Path, mask: np.ndarray, prob: np.ndarray, meta: dict[str, Any]
) -> dict[str, str]:
    """Write one prediction record: ``mask.png`` (0/255), ``prob.png`` (prob * 255), meta.json.

    Args:
        mask: (H, W) bool.  prob: (H, W) float in [0, 1].
    Returns:
        ``{"mask": path, "prob": path}``.
    """
    runtime.ensure(folder)
    mask_path, prob_path = folder / "mask.png", folder / "prob.png"
    save_mask_png(mask, mask_path)
    tmp = folder / "prob.png.tmp"
    tmp.write_bytes(png_bytes(np.rint(np.clip(prob, 0, 1) * 255).astype(np.uint8)))
    tmp.replace(prob_path)
    tmp = folder / "meta.json.tmp"
    tmp.write_text(json.dumps(meta, indent=1))
    tmp.replace(folder / "meta.json")
    return {"mask": str(mask_path), "prob": str(prob_path)}


class LocalBackend:
    """Serves ``segment`` in-process; review and status need the workers (clear errors)."""

    kind = "local"

    def __init__(
        self,
        *,
        loader: Loader | None = None,
        results_dir: Path | None = None,
        review_below: float | None = None,
    ):
        self._loader = loader or _default_loader
        self._results_dir = results_dir
        self.review_below = review_threshold() if review_below is None else review_below
        self._predictors: dict[str, FewShotPredictor] = {}
        self._lock = threading.Lock()
        self._last_model: str | None = None

    def _resolve(self, spec: str) -> tuple[str, str | None, str | None]:
        """spec -> (loadable spec, model id override, notice); the champion falls back."""
        if spec == PROTOTYPE or Path(spec).is_dir():
            return spec, None, None
        if not _SCHEME.match(spec):
            raise InputError(f"{spec}: no such checkpoint directory (or use 'prototype')")
        try:
            path, model_id = resolve_model_spec(spec)
        except (InputError, ImportError) as e:
            if spec != CHAMPION:
                raise InputError(str(e)) from None
            return PROTOTYPE, None, f"No champion model yet ({e}); used the prototype baseline."
        return path, model_id, None

    def _predictor(self, spec: str, model_id: str | None) -> FewShotPredictor:
        if spec not in self._predictors:
            predictor = self._loader(spec)
            if model_id:
                predictor.model_id = model_id
            self._predictors[spec] = predictor
        return self._predictors[spec]

    def warm(self, spec: str = CHAMPION) -> None:
        """Load the model of ``spec`` now, so the first visitor does not wait for it."""
        try:
            path, model_id, _ = self._resolve(spec)
            with self._lock:
                self._last_model = self._predictor(path, model_id).model_id
        except Exception:  # the first request will report the problem to the visitor
            log.warning("could not preload %s", spec, exc_info=True)

    def segment(self, request: dict[str, Any], report: Report = no_report) -> dict[str, Any]:
        """Run a ``dinoseg.segment`` request (see the package docstring for the reply)."""
        report(0.0, "loading the model")
        spec, model_id, notice = self._resolve(str(request.get("model") or CHAMPION))
        supports = request.get("support") or []
        images = [load_image(s["image"]) for s in supports]
        masks = [
            load_mask(s["mask"], image_size=img.shape[:2])
            for s, img in zip(supports, images, strict=True)
        ]
        queries = [str(q) for q in request.get("queries") or []]
        if not queries:
            raise InputError("no query image to segment")
        with self._lock:
            predictor = self._predictor(spec, model_id)
            threshold = float(request.get("threshold") or predictor.threshold)
            if not 0.0 < threshold < 1.0:
                raise InputError(f"threshold must be between 0 and 1, got {threshold}")
            report(0.05, "encoding the support")
            predictor.set_support(images, masks)
            key = {
                "model_version": predictor.model_id,
                "threshold": threshold,
                "support": [[_file_hash(s["image"]), _file_hash(s["mask"])] for s in supports],
            }
            results = []
            for i, query in enumerate(queries):
                report(0.1 + 0.9 * i / len(queries), f"segmenting query {i + 1}/{len(queries)}")
                pred = predictor.predict([load_image(query)])[0]
                results.append(self._record(query, pred.prob, threshold, key))
            self._last_model = predictor.model_id
        report(1.0, "done")
        return {"model_version": key["model_version"], "notice": notice, "results": results}

    def _record(
        self, query: str, prob: np.ndarray, threshold: float, key: dict[str, Any]
    ) -> dict[str, Any]:
        q_hash = _file_hash(query)
        result_id = sha256_bytes(json.dumps({**key, "query": q_hash}).encode())[:16]
        mask = prob > threshold
        confidence = mask_confidence(prob, threshold=threshold)
        meta = {
            "id": result_id,
            "query": query,
            "query_sha256": q_hash,
            "support_sha256": key["support"],
            "model_version": key["model_version"],
            "threshold": threshold,
            "confidence": confidence,
            "created": time.time(),
        }
        folder = (self._results_dir or runtime.results_dir()) / result_id
        paths = write_record(folder, mask, prob, meta)
        return {
            "id": result_id,
            "query": query,
            **paths,
            "confidence": confidence,
            "needs_review": confidence < self.review_below,
        }

    def queue_for_review(self, result_id: str) -> dict[str, Any]:
        raise BackendError(
            "Sending to annotators needs the workers and Label Studio; start the demo with "
            "`dinoseg demo` (without --no-worker)."
        )

    def status(self) -> dict[str, Any]:
        return {
            "model_version": self._last_model,
            "review_queue_depth": None,
            "outbox_depth": None,
            "label_studio_url": runtime.label_studio_url(),
            "backend": "in-process (no workers)",
        }

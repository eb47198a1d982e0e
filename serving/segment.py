"""The ``segment`` job: support + queries -> records in the results store (+ review items).

One implementation for both ways of running it: the web app calls :meth:`SegmentJob.run`
in-process (``dinoseg demo --no-worker``) and the Celery task ``dinoseg.segment`` wraps the
same call. Reply (JSON)::

    {"model_version": str, "notice": str | null, "class_name": str,
     "results": [{"id", "query", "mask", "prob", "confidence", "needs_review"}, ...]}

Queries are predicted in batches of the predictor's ``batch_size``; progress is reported after
the support is encoded and after each batch.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dinoseg.confidence import mask_confidence
from dinoseg.data.classnames import PLACEHOLDER
from dinoseg.io import load_image, load_mask
from dinoseg.predictor import Prediction
from serving import store
from serving.config import PARAMS_FILE, review_config, serving_config
from serving.memory import ServedMemory
from serving.models import ModelHolder, Served
from serving.progress import Report, no_report
from serving.request import SegmentRequest, parse_request
from serving.review import ReviewItem, item_from_meta
from serving.uploads import content_sha256


@dataclass
class SegmentOutcome:
    """What a run produced: the JSON reply and, in memory, the results that need review."""

    reply: dict[str, Any]
    review: list[ReviewItem] = field(default_factory=list)


def _load_support(req: SegmentRequest) -> tuple[list[np.ndarray], list[np.ndarray], str | None]:
    images, masks = [], []
    for image_path, mask_path in req.support:
        image = load_image(image_path)
        images.append(image)
        masks.append(load_mask(mask_path, image_size=image.shape[:2]))
    return images, masks, None if req.class_name == PLACEHOLDER else req.class_name


@dataclass
class _Run:
    """The fixed parts of one request's records."""

    req: SegmentRequest
    served: Served
    threshold: float
    support_hashes: list[list[str]]

    def meta(self, path: Path, q_hash: str, conf: float, needs: bool, shape: tuple,
             retrieved: tuple[str, ...] = ()) -> dict:  # fmt: skip
        memory = self.served.predictor.memory if self.served.predictor.uses_memory else None
        return {
            "query": str(path), "query_sha256": q_hash,
            "support": [{"image": str(i), "mask": str(m), "image_sha256": h[0], "mask_sha256": h[1]}
                        for (i, m), h in zip(self.req.support, self.support_hashes, strict=True)],
            "class_name": self.req.class_name,
            "model_version": self.served.model_version, "model_spec": self.req.model,
            "notice": self.served.notice, "threshold": self.threshold,
            "confidence": round(float(conf), 6), "needs_review": needs,
            "height": int(shape[0]), "width": int(shape[1]),
            "memory": None if memory is None else {"version": memory.version,
                                                   "retrieved": list(retrieved)},
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }  # fmt: skip


class SegmentJob:
    """Runs ``segment`` requests with one model holder (one per process).

    Args:
        holder: the served model (follows the registry's champion).
        params: the params file whose ``review`` section is read per request.
        results: the results store (default ``runtime.results_dir()``).
        uploads: the uploads folder requests must stay in (default ``runtime.uploads_dir()``).
        memory: the support memory of requests that name a class (default: none).
    """

    def __init__(self, holder: ModelHolder, *, params: Path = PARAMS_FILE,
                 results: Path | None = None, uploads: Path | None = None,
                 memory: ServedMemory | None = None):  # fmt: skip
        self.holder = holder
        self.params = params
        self.results = results
        self.uploads = uploads
        self.memory = memory
        self._lock = threading.Lock()  # a predictor holds the support of the request it serves

    @classmethod
    def from_params(cls, params: Path = PARAMS_FILE, **kwargs: Any) -> SegmentJob:
        """A job serving what ``params`` names (sections ``serving`` and ``review``)."""
        serving = serving_config(params)
        memory = ServedMemory(serving, review_config(params))
        return cls(ModelHolder(serving, **kwargs), params=params, memory=memory)

    def run(self, request: Any, report: Report = no_report) -> SegmentOutcome:
        """Run one request and store its results (see the module docstring)."""
        req = parse_request(request, self.uploads)
        review_below = review_config(self.params).confidence_threshold
        with self._lock:
            report(0.0, "loading the model")
            served = self.holder.get(req.model)
            if self.memory is not None and req.class_name != PLACEHOLDER:
                served = _with_notice(served, self.memory.attach(served.predictor))
            threshold = req.threshold or served.predictor.threshold
            hashes = [[content_sha256(i, self.uploads), content_sha256(m, self.uploads)]
                      for i, m in req.support]  # fmt: skip
            key = hashlib.sha256(repr([hashes, req.class_name]).encode()).hexdigest()
            report(0.05, "encoding the support")
            self.holder.set_support(served.predictor, key, lambda: _load_support(req))
            run = _Run(req, served, threshold, hashes)
            outcome = SegmentOutcome({"model_version": served.model_version,
                                      "notice": served.notice, "class_name": req.class_name,
                                      "results": []})  # fmt: skip
            for path, pred in self._predict(served, req.queries, report):
                self._record(run, path, pred, review_below, outcome)
        report(1.0, "done")
        return outcome

    def status(self) -> dict[str, Any]:
        """The served model version and the memory's state."""
        memory = self.memory.status() if self.memory is not None else {"memory": None}
        return {"model_version": self.holder.last_version, **memory}

    def _predict(self, served: Served, queries: list[Path], report: Report):
        """Yield (path, prediction) per query, a batch at a time, reporting progress."""
        predictor, total = served.predictor, len(queries)
        for start in range(0, total, predictor.batch_size):
            chunk = queries[start : start + predictor.batch_size]
            report(0.1 + 0.9 * start / total, f"segmenting {start + 1}-{start + len(chunk)}"
                   f" of {total}")  # fmt: skip
            yield from zip(chunk, predictor.predict([load_image(q) for q in chunk]), strict=True)

    def _record(self, run: _Run, path: Path, pred: Prediction, review_below: float,
                outcome: SegmentOutcome) -> None:  # fmt: skip
        mask, conf = pred.mask, pred.confidence
        if run.threshold != run.served.predictor.threshold:
            mask = pred.prob > run.threshold
            conf = mask_confidence(pred.prob, threshold=run.threshold)
        q_hash = content_sha256(path, self.uploads)
        predictor = run.served.predictor
        memory = predictor.memory.version if predictor.uses_memory else None  # type: ignore[union-attr]
        rid = store.result_id({"support": run.support_hashes, "query": q_hash,
                               "model": run.served.model_version, "threshold": run.threshold,
                               "class_name": run.req.class_name, "memory": memory})  # fmt: skip
        needs = bool(conf < review_below)
        meta = run.meta(path, q_hash, conf, needs, mask.shape, pred.retrieved)
        folder = store.write_record(rid, mask, pred.prob, meta, self.results)
        outcome.reply["results"].append({
            "id": rid, "query": str(path), "mask": str(folder / "mask.png"),
            "prob": str(folder / "prob.png"), "confidence": meta["confidence"],
            "needs_review": needs,
        })  # fmt: skip
        if needs:
            outcome.review.append(item_from_meta({"id": rid, **meta}, mask))


def _with_notice(served: Served, notice: str | None) -> Served:
    """``served`` with one more notice line (None keeps it as it is)."""
    if not notice:
        return served
    text = f"{served.notice}; {notice}" if served.notice else notice
    return Served(served.predictor, served.model_version, text)

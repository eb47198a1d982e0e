"""dinoseg as a Label Studio ML backend: click-to-mask and pre-annotation on demand.

The protocol of label-studio-ml-backend's ``LabelStudioMLBase`` as Label Studio 1.23 calls it
(no dependency on that package; a small Flask app):

=================  =========================================================================
``GET /health``    ``{"status": "UP", "model_class": "DinosegMLBackend"}`` (1 s timeout)
``POST /setup``    ``{"project": "<id>.<ts>", "schema": label config, "hostname",
                   "access_token", "extra_params"}`` -> ``{"model_version"}`` (3 s timeout;
                   a config without BrushLabels -> 400)
``POST /predict``  ``{"tasks": [...], "label_config", "project", "params": {"context"}}`` ->
                   ``{"results": [{"result": [brush region], "model_version", "score"}]}``,
                   one per task. With ``context.result`` (smart keypoints / rectangle placed):
                   click-to-mask on ``tasks[0]``, the region labelled with the smart tool's
                   label. Without: the task's class (``data.class_name``) pre-annotated from
                   its labelled examples ("Retrieve predictions", or a task opened without one)
``POST /webhook``  ``{"action", "project", ...}``: annotation events go to ``on_annotation``
                   (201 ``{"result", "status": "ok"}``); other actions 200 ``Unknown event``
``POST /warm``     not Label Studio's: ``{"image": task-data URL}`` -> 202; encodes the image
                   in the background so that its first click is warm (call it when a task
                   is delivered: Label Studio itself calls nothing before the first click)
=================  =========================================================================

Errors answer with the HTTP status of :class:`BackendError` and the one-line message both in
the JSON body (``{"error", "status": "ERROR"}``) and as the status line's reason phrase:
Label Studio shows ``str(requests.HTTPError)``, which quotes the reason phrase.
``python -m workers.labelstudio.ml_serve serve`` runs it (:mod:`workers.labelstudio.ml_serve`).
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from dinoseg.interactive import InteractiveConfig, InteractiveEngine
from dinoseg.io import InputError
from workers.labelstudio.convert import PLACEHOLDER, mask_to_result
from workers.labelstudio.interactive import (
    BackendError,
    Schema,
    fetch_image,
    load_or_fail,
    parse_context,
    parse_schema,
    task_class,
)
from workers.labelstudio.preannotate import Preannotate, UnknownClass

log = logging.getLogger(__name__)
TRAIN_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATION_DELETED",
                "START_TRAINING")  # fmt: skip


@dataclass(frozen=True)
class MLBackendConfig:
    """``params.yaml: ml_backend`` (optional) <- ``serve`` flags.

    Attributes:
        host, port: where it listens (loopback by default).
        backbone: DINOv2 spec for click-to-mask ("" = ``serving.backbone``, else packaged).
        image_size: click-to-mask working size (0 = :class:`InteractiveConfig`'s).
        box_model: a rectangle's mask is DINOv2's united with the packaged LiteMedSAM's box
            mask (``litemedsam``, ~3 s more per new image) or DINOv2's alone (``dinov2``).
        shots: labelled examples per class for pre-annotation.
        sessions: images whose features stay in memory.
        title: the ML backend's title in Label Studio.
        model_version: what ``/setup`` and the predictions report.
    """

    host: str = "127.0.0.1"
    port: int = 9090
    backbone: str = ""
    image_size: int = 0
    box_model: str = "litemedsam"
    shots: int = 5
    sessions: int = 8
    title: str = "dinoseg"
    model_version: str = "dinoseg-interactive"


class Backend:
    """The ML backend's answers, without the web framework.

    Args:
        engine: builds the click-to-mask engine (called once, at the first use).
        preannotate: ``(image, class) -> mask | None`` (:mod:`workers.labelstudio.preannotate`).
        model_version: the version reported (called per request, so it may follow a registry).
        label_studio: ``(url, token)`` to read images Label Studio serves.
        on_annotation: called with ``(action, payload)`` for annotation webhooks.
    """

    def __init__(
        self,
        engine: Callable[[], InteractiveEngine],
        preannotate: Preannotate,
        *,
        model_version: Callable[[], str],
        label_studio: tuple[str, str | None],
        on_annotation: Callable[[str, Mapping[str, Any]], object] | None = None,
    ):
        self._make_engine = engine
        self._engine: InteractiveEngine | None = None
        self._lock = threading.Lock()
        self.preannotate = preannotate
        self.model_version = model_version
        self.ls_url, self.ls_token = label_studio
        self.on_annotation = on_annotation

    @property
    def engine(self) -> InteractiveEngine:
        with self._lock:
            if self._engine is None:
                self._engine = self._make_engine()
            return self._engine

    def health(self) -> dict[str, Any]:
        return {"status": "UP", "model_class": "DinosegMLBackend"}

    def setup(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Label Studio connecting (or re-checking) a project: its config must have a
        BrushLabels tag on an image."""
        if payload.get("schema") is not None:
            parse_schema(payload["schema"])
        return {"model_version": self.model_version()}

    def predict(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        tasks = payload.get("tasks")
        if not isinstance(tasks, list) or not tasks or not all(isinstance(t, dict) for t in tasks):
            raise BackendError(400, "the request carries no tasks")
        schema = parse_schema(payload.get("label_config"))
        params = payload.get("params")
        context = params.get("context") if isinstance(params, dict) else None
        if isinstance(context, dict) and context.get("result"):
            return {"results": [self._interactive(tasks[0], schema, context)]}
        results, errors = [], []
        for task in tasks:
            try:
                results.append(self._preannotated(task, schema))
            except BackendError as e:
                log.warning("task %s not pre-annotated: %s", task.get("id"), e)
                errors.append(e)
                results.append({"result": [], "model_version": self.model_version()})
        if len(errors) == len(tasks):
            raise errors[0]
        return {"results": results}

    def warm(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Encode an image ahead of its first click (``{"image": task-data URL}``): reads it
        now (errors answer at once), computes its features in the background."""
        image = fetch_image(payload.get("image"), self.ls_url, self.ls_token)

        def encode() -> None:
            try:
                session = self.engine.session(image.key, lambda: load_or_fail(image))
                self.engine.warm(session)
            except Exception:
                log.exception("warming %s failed", str(payload.get("image"))[:120])

        threading.Thread(target=encode, daemon=True).start()
        return {"status": "warming", "key": image.key}

    def webhook(self, payload: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
        action = payload.get("action")
        if action not in TRAIN_EVENTS:
            return {"status": "Unknown event"}, 200
        result = self.on_annotation(str(action), payload) if self.on_annotation else None
        return {"result": result, "status": "ok"}, 201

    def _session(self, task: Mapping[str, Any], schema: Schema) -> Any:
        data = task.get("data") if isinstance(task.get("data"), dict) else {}
        image = fetch_image((data or {}).get(schema.image_key), self.ls_url, self.ls_token)
        return self.engine.session(image.key, lambda: load_or_fail(image))

    def _interactive(self, task: Mapping[str, Any], schema: Schema,
                     context: Mapping[str, Any]) -> dict[str, Any]:  # fmt: skip
        session = self._session(task, schema)
        h, w = session.image.shape[:2]
        prompts = parse_context(context, (int(h), int(w)))
        if prompts.label not in schema.labels:
            raise BackendError(400, f"label {prompts.label!r} is not one of the project's brush "
                                    f"labels ({', '.join(schema.labels)})")  # fmt: skip
        try:
            mask = self.engine.segment(session, prompts.clicks, prompts.box)
        except InputError as e:
            raise BackendError(400, str(e)) from e
        return self._prediction(mask, prompts.label, schema, score=1.0)

    def _preannotated(self, task: Mapping[str, Any], schema: Schema) -> dict[str, Any]:
        name = task_class(task)
        if name == PLACEHOLDER:
            raise BackendError(400, f"task {task.get('id')} names no class (data.class_name): "
                                    "use the smart tools instead")  # fmt: skip
        session = self._session(task, schema)  # also makes the task's next clicks warm
        try:
            mask = self.preannotate(session.image, name)
        except UnknownClass as e:
            raise BackendError(400, str(e)) from e
        if mask is None:
            raise BackendError(404, f"class {name!r} has no labelled example yet")
        labels = {_norm(v): v for v in schema.labels}
        return self._prediction(mask, labels.get(name, PLACEHOLDER), schema, score=None)

    def _prediction(self, mask: np.ndarray, label: str, schema: Schema,
                    score: float | None) -> dict[str, Any]:  # fmt: skip
        region = {**mask_to_result(mask, label), "from_name": schema.brush, "readonly": False,
                  "to_name": schema.image, "id": uuid.uuid4().hex[:10]}  # fmt: skip
        out: dict[str, Any] = {"result": [region], "model_version": self.model_version()}
        if score is not None:
            out["score"] = score
        return out


def _norm(name: str) -> str:
    from dinoseg.data.classnames import normalize_class_name

    try:
        return normalize_class_name(name)
    except InputError:
        return name


def interactive_config(config: MLBackendConfig) -> InteractiveConfig:
    """The click-to-mask settings with the backend's overrides."""
    base = InteractiveConfig()
    return replace(base, image_size=config.image_size or base.image_size)


def _reason(message: str) -> str:
    """A status-line reason phrase: printable ASCII, one line, at most 200 characters."""
    text = "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in message.replace("\n", " "))
    return text[:200] or "error"


def create_app(backend: Backend) -> Any:
    """The Flask app serving ``backend`` (routes in the module docstring)."""
    from flask import Flask, Response, jsonify, request

    app = Flask("dinoseg-ml-backend")

    def fail(status: int, message: str) -> Response:
        reply = jsonify({"error": message, "status": "ERROR"})
        reply.status = f"{status} {_reason(message)}"
        return reply

    def body() -> dict[str, Any]:
        payload = request.get_json(silent=True)
        if not isinstance(payload, dict):
            raise BackendError(400, "the request body is not a JSON object")
        return payload

    @app.errorhandler(BackendError)
    def _backend_error(e: BackendError) -> Response:
        return fail(e.status, str(e))

    @app.errorhandler(InputError)
    def _input_error(e: InputError) -> Response:
        return fail(400, str(e))

    @app.errorhandler(Exception)
    def _crash(e: Exception) -> Response:
        from werkzeug.exceptions import HTTPException

        if isinstance(e, HTTPException):
            return fail(e.code or 500, e.description or e.name)
        log.exception("ML backend request failed")
        return fail(500, f"{type(e).__name__}: {e}")

    app.add_url_rule("/", "root", lambda: jsonify(backend.health()))
    app.add_url_rule("/health", "health", lambda: jsonify(backend.health()))
    app.add_url_rule("/setup", "setup", lambda: jsonify(backend.setup(body())), methods=["POST"])
    app.add_url_rule("/predict", "predict", lambda: jsonify(backend.predict(body())),
                     methods=["POST"])  # fmt: skip

    @app.post("/warm")
    def _warm() -> Response:
        return Response(json.dumps(backend.warm(body())), 202, mimetype="application/json")

    @app.post("/webhook")
    def _webhook() -> Response:
        reply, status = backend.webhook(body())
        return Response(json.dumps(reply), status, mimetype="application/json")

    return app

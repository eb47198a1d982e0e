"""Running the ML backend: ``python -m workers.labelstudio.ml_serve serve|status``.

For the local stack: :func:`launch` starts it as a child process (``serve`` in the project
root), :func:`healthy` checks it, :func:`backend_url` is where it listens
(``DINOSEG_ML_BACKEND_URL``, default ``http://127.0.0.1:9090``). ``serve`` prints
:data:`READY_LINE` once it listens, connects itself to the review project in the background
(retrying until Label Studio answers; :func:`connect_project`), loads the models ahead of the
first click, and stops on SIGTERM / SIGINT.

Label Studio 1.23 refuses ML backends on private and loopback addresses unless its server runs
with ``ML_BLOCK_LOCAL_IP=false`` (only ML backend URLs; webhooks and imports stay guarded).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dinoseg import runtime
from dinoseg.config import load_params, resolve
from dinoseg.io import InputError
from workers.labelstudio.ml_backend import Backend, MLBackendConfig, create_app, interactive_config

log = logging.getLogger(__name__)
READY_LINE = "dinoseg: ML backend is up"
CONNECT_RETRY_SECONDS = 5.0


def backend_url(env: Mapping[str, str] | None = None) -> str:
    """Where the ML backend listens (and what Label Studio is given)."""
    return runtime.ml_backend_url(env)


def healthy(url: str, timeout: float = 2.0) -> bool:
    """True when ``GET {url}/health`` answers ``{"status": "UP"}``."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as r:
            return bool(r.status == 200 and json.loads(r.read()).get("status") == "UP")
    except (urllib.error.URLError, OSError, ValueError):
        return False


def launch(env: Mapping[str, str], host: str | None = None, port: int | None = None,
           **popen: Any) -> subprocess.Popen[bytes]:  # fmt: skip
    """Start ``serve`` as a child process in the current directory (the project root);
    ``host`` / ``port`` default to those of :func:`backend_url`. ``popen``: where its output
    goes, its session."""
    parts = urlsplit(backend_url(env))
    cmd = [sys.executable, "-m", "workers.labelstudio.ml_serve", "serve",
           "--host", host or parts.hostname or "127.0.0.1",
           "--port", str(port or parts.port or 9090)]  # fmt: skip
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, env=dict(env), **popen)


def connect_project(url: str, config: MLBackendConfig, env: Mapping[str, str] | None = None) -> int:
    """Connect the ML backend at ``url`` to the review project (created when missing) as an
    interactive backend; returns the ML backend's id in Label Studio. Idempotent."""
    from dinoseg.data.classnames import known_classes
    from serving.config import review_config
    from workers.labelstudio import client as ls

    env = os.environ if env is None else env
    review = review_config()
    client = ls.connect(runtime.label_studio_url(env), env.get("LABEL_STUDIO_API_KEY"))
    known = known_classes([review.classes_from, review.labels_dir])
    project = ls.ensure_project(client, review.project_title, known)
    return ensure_ml_backend(client, project, url, config.title)


def _find(client: Any, project: int, url: str, title: str | None = None) -> int | None:
    """Id of ``project``'s ML backend at ``url`` — or, with ``title``, of the first one called
    ``title`` (moved to ``url``: the backend's port changed) — made interactive; None if none."""
    from workers.labelstudio.client import call

    backends = list(call(lambda: client.ml.list(project=project)))
    found = [b for b in backends if (b.url or "").rstrip("/") == url]
    moved = [b for b in backends if title is not None and b.title == title]
    for b in (*found, *moved):
        backend_id = int(b.id)
        if not b.is_interactive or (b.url or "").rstrip("/") != url:
            # Label Studio 1.23 validates a changed backend with its url and project
            call(lambda: client.ml.update(backend_id, project=project, url=url,  # noqa: B023
                                          is_interactive=True))  # fmt: skip
        return backend_id
    return None


def ensure_ml_backend(client: Any, project: int, url: str, title: str) -> int:
    """The id of ``project``'s ML backend at ``url`` (interactive), added when missing (an
    earlier one called ``title`` is moved to ``url``: Label Studio asks the project's first ML
    backend for predictions, so a stale one must not stay first).

    Label Studio 1.23 quirks handled here: adding a backend also adds a webhook
    ``<url>/webhook``, which the webhook SSRF guard refuses for a loopback URL — the request
    then answers 403 although the backend itself was saved (the request is not atomic), so the
    list is read again; and adding one sets an empty project model version to the backend's
    title (which would hide the review predictions), so the previous value is put back.
    """
    from label_studio_sdk.core.api_error import ApiError

    from workers.labelstudio.client import call

    known = _find(client, project, url, title)
    if known is not None:
        return known
    before = call(lambda: client.projects.get(id=project)).model_version or ""
    try:
        made = int(call(lambda: client.ml.create(project=project, url=url, title=title,
                                                 is_interactive=True)).id)  # fmt: skip
    except ApiError as e:
        saved = _find(client, project, url) if e.status_code == 403 else None
        if saved is None:
            detail = json.dumps(e.body)[:300] if e.body is not None else str(e)
            hint = (" (Label Studio must run with ML_BLOCK_LOCAL_IP=false to call an ML backend "
                    "on loopback)" if "reserved" in detail else "")  # fmt: skip
            raise InputError(f"Label Studio refused the ML backend {url}: {detail}{hint}") from e
        made = saved
    if call(lambda: client.projects.get(id=project)).model_version != before:
        call(lambda: client.projects.update(id=project, model_version=before))
    return made


def build_backend(config: MLBackendConfig, env: Mapping[str, str] | None = None) -> Backend:
    """The backend of the project in the working directory (``params.yaml``'s ``serving`` and
    ``review`` sections give the backbone and the labelled examples)."""
    from dinoseg.backbone import DEFAULT_BACKBONE, DinoBackbone, default_layers, load_backbone
    from dinoseg.interactive import InteractiveEngine
    from dinoseg.predictor import load_predictor
    from serving.config import review_config, serving_config
    from workers.labelstudio.preannotate import ExamplePreannotator

    env = os.environ if env is None else env
    serving, review = serving_config(), review_config()
    spec = config.backbone or serving.backbone or DEFAULT_BACKBONE
    settings = interactive_config(config)

    def engine() -> InteractiveEngine:
        bb = load_backbone(spec)
        layers = tuple(x for x in settings.layers if x <= bb.depth) or default_layers(bb.depth)[-1:]
        sam = None
        if config.box_model == "litemedsam":
            from dinoseg.teachers import build_teacher

            sam = build_teacher("litemedsam")
        return InteractiveEngine(DinoBackbone(bb.model, layers, spec=spec), settings, sam=sam,
                                 cache_dir=runtime.home(env) / "cache" / "interactive",
                                 sessions=config.sessions)  # fmt: skip

    def predictor() -> Any:
        return load_predictor("prototype", backbone=serving.backbone or None,
                              image_size=serving.image_size or None)  # fmt: skip

    pre = ExamplePreannotator([Path(review.labels_dir), Path(review.classes_from)], predictor,
                              shots=config.shots)  # fmt: skip
    return Backend(engine, pre, model_version=lambda: config.model_version,
                   label_studio=(runtime.label_studio_url(env),
                                 env.get("LABEL_STUDIO_API_KEY")))  # fmt: skip


def _background(url: str, config: MLBackendConfig, backend: Backend, stop: threading.Event) -> None:
    """Connect to the review project (until Label Studio answers), then load the models."""
    while not stop.is_set():
        try:
            log.info("connected to the review project as ML backend %d",
                     connect_project(url, config))  # fmt: skip
            break
        except Exception as e:  # Label Studio down or still starting: retry
            log.warning("ML backend not connected yet (%s); retrying", str(e)[:200])
            stop.wait(CONNECT_RETRY_SECONDS)
    if not stop.is_set():
        _ = backend.engine


def serve(config: MLBackendConfig, connect: bool = True) -> int:
    """Serve until SIGTERM / SIGINT (returns 0)."""
    from werkzeug.serving import make_server

    backend = build_backend(config)
    server = make_server(config.host, config.port, create_app(backend), threaded=True)
    url = f"http://{config.host}:{server.server_port}"
    given = backend_url()  # what Label Studio is told, when it names this server
    if os.environ.get("DINOSEG_ML_BACKEND_URL") and urlsplit(given).port == server.server_port:
        url = given
    stop = threading.Event()

    def _stop(signum: int, frame: Any) -> None:
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop)
    if connect:
        worker = threading.Thread(target=_background, args=(url, config, backend, stop))
        worker.daemon = True
        worker.start()
    print(f"{READY_LINE} at {url} (pid {os.getpid()})", flush=True)
    server.serve_forever()
    return 0


def _url_layer(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Host and port of ``DINOSEG_ML_BACKEND_URL`` when it is set (between params and flags)."""
    env = os.environ if env is None else env
    if not env.get("DINOSEG_ML_BACKEND_URL"):
        return {}
    parts = urlsplit(backend_url(env))
    return {"host": parts.hostname or "127.0.0.1", "port": parts.port or 9090}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m workers.labelstudio.ml_serve",
                                 description=__doc__.splitlines()[0])  # fmt: skip
    ap.add_argument("command", choices=["serve", "status"])
    ap.add_argument("--host", default=None)
    ap.add_argument("--port", type=int, default=None)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--no-connect", action="store_true", help="do not add it to the project")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.command == "status":
        url = backend_url()
        ok = healthy(url)
        print(json.dumps({"url": url, "healthy": ok}))
        return 0 if ok else 1
    try:
        section = load_params(args.params, "ml_backend") if Path(args.params).is_file() else {}
        flags = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
        config = resolve(MLBackendConfig, section, _url_layer(), flags)
        return serve(config, connect=not args.no_connect)
    except (InputError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""Serving the demo: loopback by default, an upload size limit, optional basic auth.

``python -m webapp [--host H] [--port P] [--backend local|celery]`` serves the app alone (the
local stack, ``dinoseg demo``, runs it this way next to a worker).
"""

from __future__ import annotations

import argparse
import os
import threading
from collections.abc import Mapping, Sequence

from dinoseg import runtime
from dinoseg.io import InputError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
#: the largest file a visitor may upload (Gradio rejects bigger ones before they are stored)
MAX_FILE_SIZE = "25mb"
#: ``user:password`` turns on HTTP basic auth for the whole page
AUTH_ENV = "DINOSEG_DEMO_AUTH"
#: requests waiting in Gradio's queue (all events); one more is refused at once: the page says
#: "This application is currently busy. Please try again.", ``gradio_client`` raises
#: ``QueueError("Queue is full! Please try again.")``, the HTTP answer is 503
MAX_QUEUE = 16


def auth_from_env(env: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """``$DINOSEG_DEMO_AUTH = "user:password"`` -> ``(user, password)``; unset -> None."""
    env = os.environ if env is None else env
    value = env.get(AUTH_ENV, "")
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise InputError(f"{AUTH_ENV} must look like 'user:password'")
    return user, password


def launch(
    demo: object,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    block: bool = True,
    quiet: bool = False,
    max_queue: int = MAX_QUEUE,
) -> None:
    """Serve a ``build_app()`` Blocks (a bounded queue, upload limit, auth from the
    environment)."""
    from webapp.app import CSS

    demo.queue(default_concurrency_limit=1, max_size=max_queue)  # type: ignore[attr-defined]
    demo.launch(  # type: ignore[attr-defined]
        server_name=host,
        server_port=port,
        auth=auth_from_env(),
        max_file_size=MAX_FILE_SIZE,
        allowed_paths=[str(runtime.home())],
        prevent_thread_lock=not block,
        quiet=quiet,
        show_error=False,
        footer_links=[],
        css=CSS,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m webapp``: build the app on a backend and serve it until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m webapp", description=__doc__)
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--backend", choices=["local", "celery"], default=None)
    args = parser.parse_args(argv)
    from webapp.app import build_app
    from webapp.backends import make_backend
    from webapp.backends.local import LocalBackend

    backend = make_backend(args.backend)
    if isinstance(backend, LocalBackend):  # load the model while the page starts
        threading.Thread(target=backend.warm, name="warm-model", daemon=True).start()
    launch(build_app(backend), host=args.host, port=args.port)
    return 0

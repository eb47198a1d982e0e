"""The services of the local demo stack (:mod:`infra.stack`) besides Label Studio and the app:
what ``dinoseg demo`` asked for (:class:`StackConfig`), the MLflow server, dinoseg as Label
Studio's ML backend, and the Celery workers."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dinoseg import runtime
from infra.supervisor import Service, StackError, redact

MLFLOW_PORT = 5000


@dataclass
class StackConfig:
    """What ``dinoseg demo`` asked for."""

    host: str = "127.0.0.1"
    port: int = 7860
    workers: int = 1
    in_process: bool = False  # --no-worker: the app runs the model itself
    labelstudio: bool | None = None  # None: when .venv-labelstudio exists
    mlflow: bool = False  # start an MLflow server on loopback over the tracking store
    mlflow_port: int = MLFLOW_PORT
    nodes: int = 1  # separate worker processes (each with ``workers`` pool processes)
    project: Path | None = None  # working folder of the services (default: this checkout)
    ml_backend: bool = True  # with Label Studio: dinoseg as its ML backend
    device: str | None = None  # --device: the services' $DINOSEG_DEVICE (else serving.device)


def mlflow_url(cfg: StackConfig) -> str:
    return f"http://127.0.0.1:{cfg.mlflow_port}"


def mlflow_service(cfg: StackConfig, env: Mapping[str, str]) -> Service:
    """``mlflow server`` on loopback over the tracking store of ``env``.

    The store URI (it may hold a database password) goes through the environment
    (``MLFLOW_BACKEND_STORE_URI``), never on the command line; the server's job runner is off.
    """
    store = runtime.tracking_uri(env)
    if store.startswith(("http://", "https://")):
        raise StackError(f"MLFLOW_TRACKING_URI={redact(store)} is a server already; unset it "
                         "(or point it at a database) to have the stack start MLflow")  # fmt: skip
    if store.startswith("sqlite:///"):
        runtime.ensure(Path(store.removeprefix("sqlite:///")).parent)
    url = mlflow_url(cfg)
    argv = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1",
            "--port", str(cfg.mlflow_port), "--workers", "1"]  # fmt: skip
    server_env = {
        "MLFLOW_BACKEND_STORE_URI": store,
        "MLFLOW_TRACKING_URI": store,
        "MLFLOW_ARTIFACTS_DESTINATION": str(runtime.ensure(runtime.artifact_root(env))),
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # no job-runner processes
    }
    return Service("mlflow", argv, health_url=url + "/health", url=url, required=False,
                   env=server_env)  # fmt: skip


def ml_backend_service(env: Mapping[str, str]) -> Service:
    """dinoseg as Label Studio's ML backend (click-to-mask, pre-annotation), on loopback; it
    connects itself to the review project once Label Studio answers."""
    from urllib.parse import urlsplit

    url = runtime.ml_backend_url(env)
    parts = urlsplit(url)
    argv = [sys.executable, "-m", "workers.labelstudio.ml_serve", "serve", "--host",
            parts.hostname or "127.0.0.1", "--port", str(parts.port or 9090)]  # fmt: skip
    return Service("mlbackend", argv, health_url=url + "/health", url=url, required=False,
                   env={"DINOSEG_ML_BACKEND_URL": url})  # fmt: skip


def worker_services(cfg: StackConfig, env: Mapping[str, str], beat: bool) -> list[Service]:
    """``cfg.nodes`` Celery worker processes; the first also runs the periodic jobs."""
    py = sys.executable
    nodes = max(1, cfg.nodes)
    threads = str(max(1, (os.cpu_count() or 1) // (max(1, cfg.workers) * nodes)))
    services = []
    for i in range(1, nodes + 1):
        name, host = ("worker", "dinoseg@%h") if nodes == 1 else (f"worker-{i}", f"dinoseg-{i}@%h")
        argv = [py, "-m", "celery", "-A", "workers.app", "worker", "--loglevel", "INFO",
                "--concurrency", str(max(1, cfg.workers)), "--hostname", host]  # fmt: skip
        if beat and i == 1:  # periodic annotation sync and outbox delivery, once per stack
            argv += ["-B", "--schedule", str(runtime.home(env) / "celery" / "beat-schedule")]
        services.append(Service(
            name, argv, ready_line=" ready.",  # celery: "celery@host ready."
            env={"OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", threads)},
        ))  # fmt: skip
    return services

"""The local demo stack behind ``dinoseg demo`` (processes run by :mod:`infra.supervisor`).

Services, each with its output in ``runtime.logs_dir()/<name>.log``:

- ``worker``: ``celery -A workers.app worker`` (N processes; with Label Studio, also the
  periodic annotation sync: ``-B``), unless the app runs the model in-process;
- ``app``: ``python -m webapp`` on loopback, sending work to the worker (or in-process);
- ``labelstudio``: when ``.venv-labelstudio`` exists, ``python -m infra.labelstudio serve``
  (the server runs as its child; ready once ``/health`` answers and our API token is
  accepted). Missing credentials are generated once for the local stack. Before anything
  starts, its port must be free or hold this home's own server (which ``serve`` replaces);
  anything else there stops the stack with one line naming the port and the process.
- ``mlflow`` (when asked): ``mlflow server`` on loopback over the stack's tracking store
  (``runtime.tracking_uri()``: the sqlite file in the home, or e.g. a PostgreSQL URI in
  ``MLFLOW_TRACKING_URI``), artifacts in ``runtime.artifact_root()``; every other service then
  talks to it over HTTP. Not required: workers keep serving their last good model without it.

``nodes`` > 1 starts several worker processes (``worker-1`` ...), as separate hosts would run
them (one of them runs the periodic jobs). Every service runs in ``project`` (default: this
checkout), where the workers read ``params.yaml``.

Embedded defaults: SQLite broker and result backend, sqlite MLflow store, all under
``runtime.home()``. Ctrl-C or SIGTERM stops everything (app first, Label Studio last); a
required service that dies stops the stack with the end of its log. Nothing the stack started
outlives it, even when it is killed with SIGKILL (:mod:`infra.supervisor`), and a new stack
first stops what a dead one in the same home left. What is up is written to
``runtime.home()/stack.json`` (``python -m infra.stack status`` reads it and checks health).
Passwords inside service URLs are never printed.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from dinoseg import runtime
from infra.banner import banner, label_studio_line
from infra.labelstudio import LabelStudioError, check_port
from infra.labelstudio.serve import READY_LINE
from infra.services import (
    StackConfig,
    ml_backend_service,
    mlflow_service,
    mlflow_url,
    worker_services,
)
from infra.supervisor import (
    ROOT,
    Service,
    StackError,
    Supervisor,
    clear_leftovers,
    health_report,
    port_busy,
)

LABEL_STUDIO_VENV = ROOT / ".venv-labelstudio"
__all__ = ["StackConfig", "StackError", "banner", "labelstudio_env", "mlflow_service", "plan",
           "run_stack"]


class _Stop(Exception):
    """Raised in the main thread by SIGINT (Ctrl-C) or SIGTERM."""


def labelstudio_env(env: Mapping[str, str]) -> dict[str, str]:
    """Label Studio credentials: from the environment, else generated once for this home."""
    if env.get("LABEL_STUDIO_API_KEY") and env.get("LABEL_STUDIO_PASSWORD"):
        return {}
    path = runtime.home(env) / "labelstudio-credentials.json"
    if path.is_file():
        creds: dict[str, str] = json.loads(path.read_text())
        return creds
    creds = {
        "LABEL_STUDIO_USERNAME": env.get("LABEL_STUDIO_USERNAME") or "admin@dinoseg.local",
        "LABEL_STUDIO_PASSWORD": secrets.token_urlsafe(12),
        "LABEL_STUDIO_API_KEY": secrets.token_hex(20),
    }
    runtime.ensure(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(creds, f)
    return creds


def plan(cfg: StackConfig, env: Mapping[str, str]) -> list[Service]:
    """The services for ``cfg`` in start order."""
    py = sys.executable
    with_ls = LABEL_STUDIO_VENV.is_dir() if cfg.labelstudio is None else cfg.labelstudio
    services = []
    if with_ls:  # the server writes to the same labelstudio.log
        url = runtime.label_studio_url(env)
        services.append(Service(
            "labelstudio", [py, "-m", "infra.labelstudio", "serve"], health_url=url + "/health",
            ready_line=READY_LINE, url=url, required=False,
        ))  # fmt: skip
        if cfg.ml_backend:
            services.append(ml_backend_service(env))
    if cfg.mlflow:
        services.append(mlflow_service(cfg, env))
    if not cfg.in_process:
        services += worker_services(cfg, env, beat=with_ls)
    probe = "127.0.0.1" if cfg.host in ("0.0.0.0", "::") else cfg.host
    url = f"http://{probe}:{cfg.port}"
    backend = "local" if cfg.in_process else "celery"
    app = [py, "-m", "webapp", "--host", cfg.host, "--port", str(cfg.port), "--backend", backend]
    services.append(Service("app", app, health_url=url + "/", url=url))
    return services


def _raise_stop(signum: int, frame: Any) -> None:
    raise _Stop()


def stack_env(cfg: StackConfig, env: Mapping[str, str]) -> dict[str, str]:
    """The children's environment: one absolute home, Label Studio credentials, the
    checkout importable when the services run in another project folder, and OpenMP threads
    that sleep instead of spinning while they wait (``OMP_WAIT_POLICY=PASSIVE`` unless set:
    the services share the cores, and a spinning worker lost to the app and a browser on the
    same machine, README "End to end")."""
    out = dict(env)
    out["DINOSEG_HOME"] = str(runtime.home(out))  # every child agrees on one absolute home
    out.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if cfg.device:
        out["DINOSEG_DEVICE"] = cfg.device  # serving.config.DEVICE_ENV
    out.update(labelstudio_env(out))  # the worker talks to Label Studio with the same token
    if cfg.project is not None and Path(cfg.project).resolve() != ROOT:
        out["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), out.get("PYTHONPATH")) if p)
    return out


def run_stack(
    cfg: StackConfig,
    env: Mapping[str, str] | None = None,
    say: Callable[[str], None] = print,
    startup_timeout_s: float = 300.0,
) -> int:
    """Start the stack and supervise it until Ctrl-C / SIGTERM; returns the exit status."""
    env = stack_env(cfg, os.environ if env is None else env)
    services = plan(cfg, env)
    preflight(cfg, env, services, say)
    if cfg.mlflow:  # everyone else goes through the server
        env["MLFLOW_TRACKING_URI"] = mlflow_url(cfg)
    sup = Supervisor(services, env, say, cwd=cfg.project or ROOT)
    # explicit handlers: a process started in the background inherits an ignored SIGINT
    old = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        sup.start()
        say(f"starting {', '.join(s.name for s in sup.services)} (logs: {sup.logs}) ...")
        _supervise(sup, cfg, env, startup_timeout_s)
    except (KeyboardInterrupt, _Stop):
        say("stopping ...")
        return 0
    finally:
        for sig in old:  # a second Ctrl-C must not cut the cleanup short
            signal.signal(sig, signal.SIG_IGN)
        try:
            sup.stop()
        finally:
            sup.write_status(status_path(env), running=False)
            for sig, handler in old.items():
                signal.signal(sig, handler)
    return 1  # not reached: _supervise returns only by raising


def preflight(cfg: StackConfig, env: Mapping[str, str], services: list[Service],
              say: Callable[[str], None]) -> None:  # fmt: skip
    """Stop what a dead stack in this home left, then check that every port is free (Label
    Studio's may hold this home's own server).

    Raises:
        StackError: a port is taken (by what, for Label Studio), or a stack runs in this home.
    """
    clear_leftovers(status_path(env), say)
    if port_busy("127.0.0.1" if cfg.host in ("0.0.0.0", "::") else cfg.host, cfg.port):
        raise StackError(f"port {cfg.port} is already in use; pass --port")
    if cfg.mlflow and port_busy("127.0.0.1", cfg.mlflow_port):
        raise StackError(f"port {cfg.mlflow_port} (MLflow) is already in use")
    if any(s.name == "labelstudio" for s in services):
        try:
            check_port(env)
        except LabelStudioError as e:
            raise StackError(str(e)) from None


def status_path(env: Mapping[str, str] | None = None) -> Path:
    """Where the running stack describes itself (``python -m infra.stack status``)."""
    return runtime.home(env) / "stack.json"


def _supervise(sup: Supervisor, cfg: StackConfig, env: Mapping[str, str], timeout_s: float) -> None:
    """Poll until interrupted: print the banner once up, Label Studio when it answers; keep
    ``stack.json`` current."""
    deadline, up = time.monotonic() + timeout_s, False
    sup.write_status(status_path(env))
    while True:
        known = (set(sup.ready), set(sup.procs))
        newly = sup.poll()
        # Label Studio and the ML backend have their own timeouts; the banner does not wait
        waiting = [n for n in sup.starting() if n not in ("labelstudio", "mlbackend")]
        if not waiting and not up:
            sup.say(banner(sup, cfg, env))
            up = True
        elif up:
            for s in newly:
                if s.name == "labelstudio":
                    sup.say(label_studio_line(s, env).strip())
                elif s.name == "mlflow":
                    sup.say(f"MLflow is up: {s.url}")
                elif s.name == "mlbackend":
                    sup.say(f"ML backend is up: {s.url}")
        if (set(sup.ready), set(sup.procs)) != known:
            sup.write_status(status_path(env))
        if waiting and time.monotonic() > deadline:
            names = ", ".join(waiting)
            raise StackError(f"{names} not ready after {timeout_s:.0f} s; see {sup.logs}")
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    """``python -m infra.stack status``: the services of the running stack and their health
    (exit 0 when every one is running and healthy)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m infra.stack", description=main.__doc__)
    parser.add_argument("command", choices=["status"])
    parser.parse_args(argv)
    path = status_path()
    report = health_report(path)
    print(report.text)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())

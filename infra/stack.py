"""The local demo stack behind ``dinoseg demo`` (processes run by :mod:`infra.supervisor`).

Services, each with its output in ``runtime.logs_dir()/<name>.log``:

- ``worker``: ``celery -A workers.app worker`` (N processes; with Label Studio, also the
  periodic annotation sync: ``-B``), unless the app runs the model in-process;
- ``app``: ``python -m webapp`` on loopback, sending work to the worker (or in-process);
- ``labelstudio``: when ``.venv-labelstudio`` exists, ``python -m infra.labelstudio start``
  (it starts the server in the background and exits once ``/health`` answers); stopped again
  with ``... stop`` on the way out. Missing credentials are generated once for the local stack.

Embedded defaults: SQLite broker and result backend, sqlite MLflow store, all under
``runtime.home()``. Ctrl-C or SIGTERM stops everything (app first, Label Studio last); a
required service that dies stops the stack with the end of its log.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dinoseg import runtime
from infra.supervisor import ROOT, Service, StackError, Supervisor, port_busy

LABEL_STUDIO_VENV = ROOT / ".venv-labelstudio"
__all__ = ["StackConfig", "StackError", "labelstudio_env", "plan", "run_stack"]


class _Stop(Exception):
    """Raised in the main thread by SIGINT (Ctrl-C) or SIGTERM."""


@dataclass
class StackConfig:
    """What ``dinoseg demo`` asked for."""

    host: str = "127.0.0.1"
    port: int = 7860
    workers: int = 1
    in_process: bool = False  # --no-worker: the app runs the model itself
    labelstudio: bool | None = None  # None: when .venv-labelstudio exists


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
    if with_ls:
        ls = [py, "-m", "infra.labelstudio"]
        url = runtime.label_studio_url(env)
        services.append(Service(
            "labelstudio", [*ls, "start"], oneshot=True, required=False,
            stop_argv=[*ls, "stop"], url=url,
            log="labelstudio-start.log",  # the server itself logs to labelstudio.log
        ))  # fmt: skip
    if not cfg.in_process:
        worker = [py, "-m", "celery", "-A", "workers.app", "worker", "--loglevel", "INFO",
                  "--concurrency", str(max(1, cfg.workers)), "--hostname", "dinoseg@%h"]
        if with_ls:  # periodic annotation sync and outbox delivery
            beat = runtime.home(env) / "celery" / "beat-schedule"
            worker += ["-B", "--schedule", str(beat)]
        threads = str(max(1, (os.cpu_count() or 1) // max(1, cfg.workers)))
        services.append(Service(
            "worker", worker, ready_line=" ready.",  # celery: "celery@host ready."
            env={"OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", threads)},
        ))  # fmt: skip
    probe = "127.0.0.1" if cfg.host in ("0.0.0.0", "::") else cfg.host
    url = f"http://{probe}:{cfg.port}"
    backend = "local" if cfg.in_process else "celery"
    app = [py, "-m", "webapp", "--host", cfg.host, "--port", str(cfg.port), "--backend", backend]
    services.append(Service("app", app, health_url=url + "/", url=url))
    return services


def _raise_stop(signum: int, frame: Any) -> None:
    raise _Stop()


def banner(sup: Supervisor, cfg: StackConfig, env: Mapping[str, str]) -> str:
    """What is up and where, printed once the app (and the worker) answer."""
    by_name = {s.name: s for s in sup.services}
    lines = ["dinoseg demo is up:", f"  app           {by_name['app'].url}"]
    if "worker" in by_name:
        lines.append(f"  workers       {cfg.workers} Celery process(es), broker "
                     f"{runtime.broker_url(env)}")  # fmt: skip
    else:
        lines.append("  workers       none: the app runs the model in-process (--no-worker)")
    ls = by_name.get("labelstudio")
    if ls is None and cfg.labelstudio is False:
        lines.append("  Label Studio  not started (--no-labelstudio)")
    elif ls is None:
        lines.append(f"  Label Studio  not installed ({ROOT}/infra/labelstudio/install.sh)")
    elif ls.name not in sup.ready:
        lines.append(f"  Label Studio  {ls.url} starting (about a minute the first time)")
    else:
        lines.append(label_studio_line(ls, env))
    lines += [f"  MLflow store  {runtime.tracking_uri(env)}", f"  logs          {sup.logs}",
              "Press Ctrl-C to stop."]  # fmt: skip
    return "\n".join(lines)


def label_studio_line(s: Service, env: Mapping[str, str]) -> str:
    creds = runtime.home(env) / "labelstudio-credentials.json"
    login = f" (login in {creds})" if creds.is_file() else ""
    return f"  Label Studio  {s.url}{login}"


def run_stack(
    cfg: StackConfig,
    env: Mapping[str, str] | None = None,
    say: Callable[[str], None] = print,
    startup_timeout_s: float = 300.0,
) -> int:
    """Start the stack and supervise it until Ctrl-C / SIGTERM; returns the exit status."""
    env = dict(os.environ if env is None else env)
    env["DINOSEG_HOME"] = str(runtime.home(env))  # every child agrees on one absolute home
    env.update(labelstudio_env(env))  # the worker talks to Label Studio with the same token
    if port_busy("127.0.0.1" if cfg.host in ("0.0.0.0", "::") else cfg.host, cfg.port):
        raise StackError(f"port {cfg.port} is already in use; pass --port")
    sup = Supervisor(plan(cfg, env), env, say)
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
            for sig, handler in old.items():
                signal.signal(sig, handler)
    return 1  # not reached: _supervise returns only by raising


def _supervise(sup: Supervisor, cfg: StackConfig, env: Mapping[str, str], timeout_s: float) -> None:
    """Poll until interrupted: print the banner once up, Label Studio when it answers."""
    deadline, up = time.monotonic() + timeout_s, False
    while True:
        newly = sup.poll()
        waiting = sup.starting()
        if not waiting and not up:
            sup.say(banner(sup, cfg, env))
            up = True
        elif up:
            for s in newly:
                if s.name == "labelstudio":
                    sup.say(label_studio_line(s, env).strip())
        if waiting and time.monotonic() > deadline:
            names = ", ".join(waiting)
            raise StackError(f"{names} not ready after {timeout_s:.0f} s; see {sup.logs}")
        time.sleep(0.5)

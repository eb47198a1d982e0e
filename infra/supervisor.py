"""A small process supervisor: start services, wait for their health, stop them in order.

Each service is a child process in its own session (a signal reaches its whole process group,
e.g. the Celery pool), with stdout and stderr appended to ``<logs>/<name>.log``. On Linux a
child also gets SIGTERM if the supervisor dies without cleaning up. The supervisor can describe
its services in a JSON status file (no secrets: names, pids, URLs, logs) that
:func:`health_report` checks from another process.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dinoseg import runtime

ROOT = Path(__file__).resolve().parents[1]
STOP_GRACE_S = 15.0


class StackError(RuntimeError):
    """The stack could not start or a required service died; the message says why."""


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """True when ``GET url`` answers 2xx."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return bool(200 <= r.status < 300)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def redact(url: str) -> str:
    """``scheme://user:password@host/...`` -> ``scheme://user:***@host/...`` (for messages)."""
    return re.sub(r"(?<=://)([^:/@]*):[^@/]*@", r"\1:***@", url)


def port_busy(host: str, port: int) -> bool:
    """True when something accepts connections on ``host:port``."""
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex((host, port)) == 0


@dataclass
class Service:
    """One child process.

    Attributes:
        health_url: ready when ``GET`` answers 2xx.
        ready_line: ready when this text appears in its log (written since it started).
        oneshot: the process exits 0 once its job is done (then it is ready).
        required: its death stops the stack.
        stop_argv: command run on shutdown (for a oneshot that left a server running).
    """

    name: str
    argv: list[str]
    health_url: str | None = None
    ready_line: str | None = None
    oneshot: bool = False
    required: bool = True
    stop_argv: list[str] | None = None
    url: str | None = None
    log: str | None = None  # log file name (default ``<name>.log``)
    env: dict[str, str] = field(default_factory=dict)


def _die_with_parent() -> None:
    """Child pre-exec (Linux): get SIGTERM if the supervisor dies without cleaning up."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Supervisor:
    """Starts services, waits for their health, watches them, stops them in reverse order."""

    def __init__(self, services: list[Service], env: Mapping[str, str],
                 say: Callable[[str], None] = print, cwd: Path = ROOT):  # fmt: skip
        self.services = services
        self.env = dict(env)
        self.cwd = cwd
        self.logs = runtime.ensure(runtime.logs_dir(env))
        self.say = say
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ready: set[str] = set()
        self._log_start: dict[str, int] = {}

    def log_path(self, name: str) -> Path:
        s = next((s for s in self.services if s.name == name), None)
        return self.logs / (s.log if s is not None and s.log else f"{name}.log")

    def tail(self, name: str, lines: int = 15) -> str:
        try:
            text = self.log_path(name).read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def is_ready(self, s: Service) -> bool:
        """The service's health check (a running process with no check is ready)."""
        if s.health_url is not None:
            return http_ok(s.health_url)
        if s.ready_line is not None:
            try:
                with open(self.log_path(s.name), "rb") as f:
                    f.seek(self._log_start.get(s.name, 0))
                    return s.ready_line.encode() in f.read()
            except OSError:
                return False
        return True

    def start(self) -> None:
        """Start every service (logs appended to ``<logs>/<name>.log``)."""
        for s in self.services:
            path = self.log_path(s.name)
            self._log_start[s.name] = path.stat().st_size if path.is_file() else 0
            log = open(path, "ab")  # noqa: SIM115 (the child keeps it)
            self.procs[s.name] = subprocess.Popen(
                s.argv, cwd=self.cwd, env={**self.env, **s.env}, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=_die_with_parent,
            )  # fmt: skip
            log.close()

    def poll(self) -> list[Service]:
        """Check every service once; returns the ones that became ready now.

        Raises:
            StackError: a required service exited (or failed its one-shot job).
        """
        newly = []
        for s in self.services:
            proc = self.procs.get(s.name)
            if proc is None:
                continue
            code = proc.poll()
            if s.oneshot:
                if code is None or s.name in self.ready:
                    continue
                if code == 0:
                    self.ready.add(s.name)
                    newly.append(s)
                else:
                    self.procs.pop(s.name)
                    self.say(f"warning: {s.name} did not start (exit {code}); "
                             f"log: {self.log_path(s.name)}\n{self.tail(s.name, 5)}")  # fmt: skip
            elif code is not None:
                self.procs.pop(s.name)
                if s.required:
                    raise StackError(self._died(s, code))
                self.say(f"warning: {self._died(s, code)}")
            elif s.name not in self.ready and self.is_ready(s):
                self.ready.add(s.name)
                newly.append(s)
        return newly

    def starting(self) -> list[str]:
        """Long-running services started but not ready yet."""
        return [s.name for s in self.services
                if s.name in self.procs and s.name not in self.ready and not s.oneshot]  # fmt: skip

    def status(self) -> list[dict[str, Any]]:
        """One entry per service: name, state (ready / starting / exited), pid, URLs, log."""
        out = []
        for s in self.services:
            proc = self.procs.get(s.name)
            if s.oneshot:
                state = "ready" if s.name in self.ready else "starting" if proc else "exited"
            elif proc is None or proc.poll() is not None:
                state = "exited"
            else:
                state = "ready" if s.name in self.ready else "starting"
            out.append({"name": s.name, "state": state, "oneshot": s.oneshot,
                        "pid": None if proc is None or s.oneshot else proc.pid,
                        "url": s.url, "health_url": s.health_url,
                        "log": str(self.log_path(s.name))})  # fmt: skip
        return out

    def write_status(self, path: Path, running: bool = True) -> None:
        """Write :meth:`status` (and the supervisor's pid) to ``path`` atomically."""
        data = {"supervisor_pid": os.getpid(), "running": running, "services": self.status()}
        tmp = path.with_name(f".{path.name}.tmp")
        with contextlib.suppress(OSError):
            runtime.ensure(path.parent)
            tmp.write_text(json.dumps(data, indent=1))
            os.replace(tmp, path)

    def _died(self, s: Service, code: int | None) -> str:
        return f"{s.name} exited with status {code}; end of {self.log_path(s.name)}:\n" + (
            self.tail(s.name)
        )

    def stop(self) -> None:
        """Stop the app, then the worker, then Label Studio (SIGTERM, then SIGKILL)."""
        for s in reversed(self.services):
            proc = self.procs.pop(s.name, None)
            if proc is None:
                continue
            if s.stop_argv and s.name in self.ready:
                subprocess.run(s.stop_argv, cwd=self.cwd, env={**self.env, **s.env},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               timeout=60, check=False)  # fmt: skip
            if proc.poll() is None:
                _signal_group(proc, signal.SIGTERM)
                try:
                    proc.wait(STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    _signal_group(proc, signal.SIGKILL)
                    proc.wait(5)
            self.say(f"stopped {s.name}")


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)  # the child's own session: its children too (celery pool)


@dataclass
class HealthReport:
    """What :func:`health_report` found: ``ok`` when every service runs and answers."""

    ok: bool
    text: str


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def health_report(path: Path) -> HealthReport:
    """Check the stack described by ``path`` (written by :meth:`Supervisor.write_status`):
    each long-running service's process must be alive and its health URL answer 2xx."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return HealthReport(False, f"no stack status at {path}: is `dinoseg demo` running?")
    if not data.get("running") or not _alive(data.get("supervisor_pid")):
        return HealthReport(False, f"the stack described in {path} is not running")
    ok, lines = True, []
    for s in data.get("services", []):
        if s.get("oneshot"):  # e.g. Label Studio's starter: its server answers on s["url"]
            healthy = s["state"] == "ready" and (not s.get("url") or http_ok(s["url"] + "/health"))
        else:
            healthy = _alive(s.get("pid")) and (not s.get("health_url") or http_ok(s["health_url"]))
        ok &= healthy
        where = s.get("url") or f"pid {s.get('pid')}"
        lines.append(f"{s['name']:<12} {'up' if healthy else 'DOWN':<5} {where}  log: {s['log']}")
    return HealthReport(ok, "\n".join(lines))

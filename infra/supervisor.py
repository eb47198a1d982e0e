"""A small process supervisor: start services, wait for their health, stop them in order.

Each service is a child process in its own session (a signal reaches its whole process group,
e.g. the Celery pool), with stdout and stderr appended to ``<logs>/<name>.log``.

Nothing outlives the supervisor, however it ends: every child's environment carries the
stack's id (``DINOSEG_STACK_ID``, inherited by grandchildren too); on Linux each service gets
SIGTERM when the supervisor dies (parent-death signal); :mod:`infra.reaper`, started first in
a session of its own, stops every process with that id once the supervisor's pipe to it closes
(even after SIGKILL); and the next supervisor in the same home stops what a dead one left
(:func:`clear_leftovers`). The supervisor describes its services in a JSON status file (no
secrets: names, pids, URLs, logs, the stack id) that :func:`health_report` checks from another
process.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dinoseg import runtime
from infra.procs import STACK_ID, die_with_parent, started
from infra.reaper import reap

ROOT = Path(__file__).resolve().parents[1]
STOP_GRACE_S = 15.0
REAPER_WAIT_S = 30.0


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
        ready_line: ready when this text appears in its log (written since it started); with
            ``health_url``, both must hold.
        required: its death stops the stack.
    """

    name: str
    argv: list[str]
    health_url: str | None = None
    ready_line: str | None = None
    required: bool = True
    url: str | None = None
    log: str | None = None  # log file name (default ``<name>.log``)
    env: dict[str, str] = field(default_factory=dict)


class Supervisor:
    """Starts services, waits for their health, watches them, stops them in reverse order."""

    def __init__(self, services: list[Service], env: Mapping[str, str],
                 say: Callable[[str], None] = print, cwd: Path = ROOT):  # fmt: skip
        self.services = services
        self.stack_id = secrets.token_hex(8)
        self.env = {**env, STACK_ID: self.stack_id}
        self.cwd = cwd
        self.logs = runtime.ensure(runtime.logs_dir(env))
        self.say = say
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ready: set[str] = set()
        self.reaper: subprocess.Popen[bytes] | None = None
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
        """The service's health checks (a running process with none is ready)."""
        if s.ready_line is not None:
            try:
                with open(self.log_path(s.name), "rb") as f:
                    f.seek(self._log_start.get(s.name, 0))
                    if s.ready_line.encode() not in f.read():
                        return False
            except OSError:
                return False
        return s.health_url is None or http_ok(s.health_url)

    def start(self) -> None:
        """Start the reaper, then every service (logs appended to ``<logs>/<name>.log``)."""
        with open(self.logs / "reaper.log", "ab") as log:
            self.reaper = subprocess.Popen(
                [sys.executable, "-m", "infra.reaper", self.stack_id], cwd=ROOT,
                stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # a signal to our process group does not reach it
            )  # fmt: skip
        for s in self.services:
            path = self.log_path(s.name)
            self._log_start[s.name] = path.stat().st_size if path.is_file() else 0
            with open(path, "ab") as log:
                self.procs[s.name] = subprocess.Popen(
                    s.argv, cwd=self.cwd, env={**self.env, **s.env}, stdin=subprocess.DEVNULL,
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                    preexec_fn=die_with_parent,
                )  # fmt: skip

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
            if code is not None:
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
        return [s.name for s in self.services if s.name in self.procs and s.name not in self.ready]

    def status(self) -> list[dict[str, Any]]:
        """One entry per service: name, state (ready / starting / exited), pid, URLs, log."""
        out = []
        for s in self.services:
            proc = self.procs.get(s.name)
            if proc is None or proc.poll() is not None:
                state = "exited"
            else:
                state = "ready" if s.name in self.ready else "starting"
            out.append({"name": s.name, "state": state, "pid": None if proc is None else proc.pid,
                        "url": s.url, "health_url": s.health_url,
                        "log": str(self.log_path(s.name))})  # fmt: skip
        return out

    def write_status(self, path: Path, running: bool = True) -> None:
        """Write :meth:`status`, the supervisor's pid and the stack id to ``path`` atomically."""
        pid = os.getpid()
        data = {"supervisor_pid": pid, "supervisor_started": started(pid), "running": running,
                "stack_id": self.stack_id, "services": self.status()}  # fmt: skip
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
        """Stop the services in reverse order (SIGTERM, then SIGKILL), then let the reaper
        stop anything of the stack still running."""
        for s in reversed(self.services):
            proc = self.procs.pop(s.name, None)
            if proc is None:
                continue
            if proc.poll() is None:
                _signal_group(proc, signal.SIGTERM)
                try:
                    proc.wait(STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    _signal_group(proc, signal.SIGKILL)
                    proc.wait(5)
            self.say(f"stopped {s.name}")
        if self.reaper is not None and self.reaper.stdin is not None:
            self.reaper.stdin.close()  # end of file: the reaper sweeps and exits
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.reaper.wait(REAPER_WAIT_S)


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)  # the child's own session: its children too (celery pool)


def _running_stack(status: dict[str, Any]) -> bool:
    """The supervisor that wrote ``status`` still runs (the same process, not a reused pid)."""
    pid, when = status.get("supervisor_pid"), status.get("supervisor_started")
    if not status.get("running") or not isinstance(pid, int) or not _alive(pid):
        return False
    return when is None or started(pid) in (None, when)


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
    if not _running_stack(data):
        return HealthReport(False, f"the stack described in {path} is not running")
    ok, lines = True, []
    for s in data.get("services", []):
        healthy = _alive(s.get("pid")) and (not s.get("health_url") or http_ok(s["health_url"]))
        ok &= healthy
        where = s.get("url") or f"pid {s.get('pid')}"
        lines.append(f"{s['name']:<12} {'up' if healthy else 'DOWN':<5} {where}  log: {s['log']}")
    return HealthReport(ok, "\n".join(lines))


def clear_leftovers(path: Path, say: Callable[[str], None]) -> None:
    """Before a stack starts in a home: stop what the stack last described in ``path`` left
    running if its supervisor is gone (its reaper normally has already).

    Raises:
        StackError: that stack is still running.
    """
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    pid, stack_id = data.get("supervisor_pid"), data.get("stack_id")
    if _running_stack(data):
        raise StackError(f"a stack is already running in {path.parent} (supervisor pid {pid}): "
                         "stop it first, or set DINOSEG_HOME to another folder")  # fmt: skip
    left = reap(stack_id) if isinstance(stack_id, str) and stack_id else []
    for name in left:
        say(f"stopped {name}, left running by an earlier stack (supervisor pid {pid})")

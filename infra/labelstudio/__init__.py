"""Label Studio in its own virtualenv, on loopback, with an admin user and a fixed API token.

``python -m infra.labelstudio start|serve|stop|status`` (see :mod:`infra.labelstudio.__main__`):
``start`` leaves the server running in the background; ``serve`` (the local stack's way, in
:mod:`infra.labelstudio.serve`) keeps it as its child, in the foreground, until SIGTERM.

- installed by ``infra/labelstudio/install.sh`` into ``.venv-labelstudio`` (Label Studio pins a
  redis client that conflicts with celery's);
- bound to the host and port of ``runtime.label_studio_url()`` (``--internal-host``), data in
  ``runtime.home()/labelstudio``, log in ``runtime.logs_dir()/labelstudio.log``;
- the admin user from ``LABEL_STUDIO_USERNAME`` / ``LABEL_STUDIO_PASSWORD`` and the API token
  from ``LABEL_STUDIO_API_KEY`` (a legacy token, ``--enable-legacy-api-token``), never logged;
- local-file serving rooted at ``runtime.home()``, so review tasks can show uploaded images
  from ``runtime.uploads_dir()`` without copying them;
- only its own server is used (:func:`check_port`): one whose pid file is in this home's data
  folder, that listens on the port, and that accepts our token
  (``GET /api/current-user/whoami``); any other listener stops ``start`` with one line naming
  the port and the process holding it. A server counts as up once it also accepts the token.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dinoseg import runtime
from infra.procs import describe, listener_pid, running, terminate

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-labelstudio"
DEFAULT_USERNAME = "admin@dinoseg.local"
START_TIMEOUT = 240.0
STOP_TIMEOUT = 30.0
DB_NAME = "label_studio.sqlite3"


class LabelStudioError(RuntimeError):
    """Label Studio could not be installed, started or stopped; the message says why."""


@dataclass(frozen=True)
class Paths:
    """Where one Label Studio instance keeps its files."""

    data: Path
    pid: Path
    log: Path

    @classmethod
    def of(cls, env: Mapping[str, str] | None = None) -> Paths:
        data = runtime.home(env) / "labelstudio"
        return cls(data, data / "server.pid", runtime.logs_dir(env) / "labelstudio.log")


def host_port(url: str) -> tuple[str, int]:
    """``http://127.0.0.1:8080`` -> ``("127.0.0.1", 8080)``."""
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or (443 if parts.scheme == "https" else 80)


def healthy(url: str, timeout: float = 2.0) -> bool:
    """True when ``GET {url}/health`` answers 200."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def token_ok(url: str, token: str, timeout: float = 5.0) -> bool:
    """True when ``GET {url}/api/current-user/whoami`` with ``Authorization: Token <token>``
    answers 200: the server's database is the one our token was made for."""
    request = urllib.request.Request(f"{url}/api/current-user/whoami",
                                     headers={"Authorization": f"Token {token}"})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _port_busy(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex((host, port)) == 0


def _credentials(env: Mapping[str, str]) -> tuple[str, str, str]:
    token = env.get("LABEL_STUDIO_API_KEY", "")
    password = env.get("LABEL_STUDIO_PASSWORD", "")
    if len(token) < 6 or not password:
        raise LabelStudioError(
            "set LABEL_STUDIO_API_KEY (at least 6 characters) and LABEL_STUDIO_PASSWORD "
            "(and optionally LABEL_STUDIO_USERNAME, an e-mail) before starting Label Studio"
        )
    return env.get("LABEL_STUDIO_USERNAME") or DEFAULT_USERNAME, password, token


def read_pid(paths: Paths) -> int | None:
    """The server's pid when its pid file names a running process."""
    try:
        pid = int(paths.pid.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if running(pid) else None


def check_port(env: Mapping[str, str]) -> int | None:
    """Who holds Label Studio's port: None when nobody, the pid of this home's server when it
    listens there (its pid file in this home's data folder) and accepts our token.

    Raises:
        LabelStudioError: anything else holds the port (one line naming port and process).
    """
    url, paths = runtime.label_studio_url(env), Paths.of(env)
    host, port = host_port(url)
    if not _port_busy(host, port):
        return None
    pid, holder = read_pid(paths), listener_pid(port)
    if pid is not None and holder in (pid, None):  # None: /proc does not show the listener
        if token_ok(url, env.get("LABEL_STUDIO_API_KEY", "")):
            return pid
        raise LabelStudioError(f"this home's Label Studio on port {port}, {describe(pid)}, "
                               f"rejects the API token: {_token_hint(env, paths)}")  # fmt: skip
    raise LabelStudioError(f"Label Studio's port {port} ({url}) is held by {describe(holder)}, "
                           f"not by this home's Label Studio ({paths.data}): stop that process "
                           "or set LABEL_STUDIO_URL to a free port")  # fmt: skip


def _token_hint(env: Mapping[str, str], paths: Paths) -> str:
    user = env.get("LABEL_STUDIO_USERNAME") or DEFAULT_USERNAME
    return (f"its user {user} in {paths.data} was made with another LABEL_STUDIO_API_KEY; "
            f"set that key, or move {paths.data} away to start afresh")  # fmt: skip


def _server_env(env: Mapping[str, str], paths: Paths) -> dict[str, str]:
    """The server's environment; credentials go here, never on its (visible) command line."""
    user, password, token = _credentials(env)
    out = {k: v for k, v in env.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    out.update({
        "LABEL_STUDIO_USERNAME": user,
        "LABEL_STUDIO_PASSWORD": password,
        "LABEL_STUDIO_USER_TOKEN": token,
        "LABEL_STUDIO_BASE_DATA_DIR": str(paths.data),
        "LATEST_VERSION_CHECK": "false",
        "LOCAL_FILES_SERVING_ENABLED": "true",
        "LOCAL_FILES_DOCUMENT_ROOT": str(runtime.home(env)),
        # dinoseg's ML backend listens on loopback; this lifts the block for ML backend URLs
        # only (webhooks and imports stay guarded)
        "ML_BLOCK_LOCAL_IP": "false",
        "PATH": f"{VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}",
    })  # fmt: skip
    return out


def _seed_database(data: Path) -> None:
    """A fresh data folder gets the migrated empty database built by install.sh."""
    db, template = data / DB_NAME, VENV / "template" / DB_NAME
    if not db.exists() and template.is_file():
        tmp = data / f".{DB_NAME}.tmp"
        shutil.copyfile(template, tmp)
        os.replace(tmp, db)


def launch(env: Mapping[str, str], **popen: Any) -> subprocess.Popen[bytes]:
    """Prepare the data folder and start the server (``popen``: where its output goes, its
    session); its pid goes to the pid file. The caller checked the port first."""
    url, paths = runtime.label_studio_url(env), Paths.of(env)
    exe = VENV / "bin" / "label-studio"
    if not exe.is_file():
        raise LabelStudioError(f"{exe} not found; run infra/labelstudio/install.sh first")
    _credentials(env)
    host, port = host_port(url)
    runtime.ensure(paths.data)
    runtime.ensure(paths.log.parent)
    _seed_database(paths.data)
    cmd = [str(exe), "start", "--no-browser", "--internal-host", host, "--port", str(port),
           "--data-dir", str(paths.data), "--enable-legacy-api-token",
           "--log-level", "WARNING"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, env=_server_env(env, paths),
                            cwd=paths.data, **popen)  # fmt: skip
    paths.pid.write_text(str(proc.pid))
    return proc


def wait_ready(proc: subprocess.Popen[bytes], env: Mapping[str, str], timeout: float) -> float:
    """Seconds until the server answers ``/health`` and accepts our token.

    Raises:
        LabelStudioError: it exited, rejects the token, or is not up within ``timeout``.
    """
    url, paths, t0 = runtime.label_studio_url(env), Paths.of(env), time.monotonic()
    while time.monotonic() - t0 < timeout:
        if healthy(url):
            if token_ok(url, env.get("LABEL_STUDIO_API_KEY", "")):
                return time.monotonic() - t0
            raise LabelStudioError(f"Label Studio on {url} rejects the API token: "
                                   f"{_token_hint(env, paths)}")  # fmt: skip
        if proc.poll() is not None:
            raise LabelStudioError(f"Label Studio exited with {proc.returncode}; see {paths.log}")
        time.sleep(1.0)
    raise LabelStudioError(f"Label Studio did not answer {url}/health in {timeout:.0f} s")


def start(env: Mapping[str, str] | None = None, timeout: float = START_TIMEOUT) -> float:
    """Start Label Studio in the background (no-op when this home's server already runs);
    returns the seconds it took."""
    env = dict(os.environ if env is None else env)
    if check_port(env) is not None:
        return 0.0
    paths = Paths.of(env)
    with open(runtime.ensure(paths.log.parent) / paths.log.name, "ab") as log:
        proc = launch(env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        return wait_ready(proc, env, timeout)
    except LabelStudioError:
        stop(env)
        raise


def stop(env: Mapping[str, str] | None = None, timeout: float = STOP_TIMEOUT) -> bool:
    """Stop the server named by this home's pid file (SIGTERM, SIGKILL after ``timeout``);
    False if none ran."""
    paths, (host, port) = Paths.of(env), host_port(runtime.label_studio_url(env))
    pid = read_pid(paths)
    if pid is not None:
        terminate([pid], timeout)
        deadline = time.monotonic() + timeout
        while _port_busy(host, port) and time.monotonic() < deadline:
            time.sleep(0.2)  # its socket closes when its last thread is gone
    paths.pid.unlink(missing_ok=True)
    return pid is not None


def status(env: Mapping[str, str] | None = None) -> dict[str, object]:
    """``{"url", "healthy", "token_accepted", "pid", "listener", "data_dir", "log"}``: healthy
    when ``/health`` answers, our token is accepted and the pid file's server is the one
    listening (``listener``: the pid on the port, None when unseen)."""
    env = dict(os.environ if env is None else env)
    url, paths = runtime.label_studio_url(env), Paths.of(env)
    pid, holder = read_pid(paths), listener_pid(host_port(url)[1])
    accepted = token_ok(url, env.get("LABEL_STUDIO_API_KEY", ""))
    ours = pid is not None and holder in (pid, None)
    return {"url": url, "healthy": healthy(url) and accepted and ours, "token_accepted": accepted,
            "pid": pid, "listener": holder, "data_dir": str(paths.data),
            "log": str(paths.log)}  # fmt: skip

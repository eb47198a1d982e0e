"""Label Studio in its own virtualenv, on loopback, with an admin user and a fixed API token.

``python -m infra.labelstudio start|stop|status`` (see :mod:`infra.labelstudio.__main__`).

- installed by ``infra/labelstudio/install.sh`` into ``.venv-labelstudio`` (Label Studio pins a
  redis client that conflicts with celery's);
- bound to the host and port of ``runtime.label_studio_url()`` (``--internal-host``), data in
  ``runtime.home()/labelstudio``, log in ``runtime.logs_dir()/labelstudio.log``;
- the admin user from ``LABEL_STUDIO_USERNAME`` / ``LABEL_STUDIO_PASSWORD`` and the API token
  from ``LABEL_STUDIO_API_KEY`` (a legacy token, ``--enable-legacy-api-token``), never logged;
- local-file serving rooted at ``runtime.home()``, so review tasks can show uploaded images
  from ``runtime.uploads_dir()`` without copying them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from dinoseg import runtime

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
    """The server's pid when its pid file names a live process."""
    try:
        pid = int(paths.pid.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


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


def start(env: Mapping[str, str] | None = None, timeout: float = START_TIMEOUT) -> float:
    """Start Label Studio (no-op when it already answers); returns the seconds it took."""
    env = dict(os.environ if env is None else env)
    url, paths = runtime.label_studio_url(env), Paths.of(env)
    if healthy(url):
        return 0.0
    exe = VENV / "bin" / "label-studio"
    if not exe.is_file():
        raise LabelStudioError(f"{exe} not found; run infra/labelstudio/install.sh first")
    _credentials(env)
    host, port = host_port(url)
    if _port_busy(host, port):  # Label Studio would silently move to another port
        raise LabelStudioError(f"{host}:{port} is taken by something that is not Label Studio")
    runtime.ensure(paths.data)
    runtime.ensure(paths.log.parent)
    _seed_database(paths.data)
    cmd = [str(exe), "start", "--no-browser", "--internal-host", host, "--port", str(port),
           "--data-dir", str(paths.data), "--enable-legacy-api-token",
           "--log-level", "WARNING"]  # fmt: skip
    t0 = time.monotonic()
    with open(paths.log, "ab") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=_server_env(env, paths), cwd=paths.data, start_new_session=True,
        )  # fmt: skip
    paths.pid.write_text(str(proc.pid))
    while time.monotonic() - t0 < timeout:
        if healthy(url):
            return time.monotonic() - t0
        if proc.poll() is not None:
            raise LabelStudioError(f"Label Studio exited with {proc.returncode}; see {paths.log}")
        time.sleep(1.0)
    stop(env)
    raise LabelStudioError(f"Label Studio did not answer {url}/health in {timeout:.0f} s")


def stop(env: Mapping[str, str] | None = None, timeout: float = STOP_TIMEOUT) -> bool:
    """Stop the server started by :func:`start` (its process group); False if none ran."""
    paths = Paths.of(env)
    pid = read_pid(paths)
    if pid is None:
        paths.pid.unlink(missing_ok=True)
        return False
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and read_pid(paths) is not None:
            _reap(pid)
            time.sleep(0.2)
        if read_pid(paths) is None:
            break
    paths.pid.unlink(missing_ok=True)
    return True


def _reap(pid: int) -> None:
    """Collect the exit status when the server is our child (else it stays a zombie)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def status(env: Mapping[str, str] | None = None) -> dict[str, object]:
    """``{"url", "healthy", "pid", "data_dir", "log"}``."""
    env = dict(os.environ if env is None else env)
    url, paths = runtime.label_studio_url(env), Paths.of(env)
    return {"url": url, "healthy": healthy(url), "pid": read_pid(paths),
            "data_dir": str(paths.data), "log": str(paths.log)}  # fmt: skip

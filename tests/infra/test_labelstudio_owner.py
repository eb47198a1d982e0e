"""The stack uses only its own Label Studio: a port held by anything else stops ``dinoseg demo``
with one line naming the port and the process; this home's server is used only when it accepts
our token, and a server that rejects the token is never reported up.

Real processes: a plain listening socket, and a real Label Studio (own virtualenv) in another
home on the same port, as a leftover from an earlier stack would be.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.workers.conftest import REPO, free_port

DEMO_TIMEOUT_S = 120


def _env(home: Path, url: str, token: str | None = None) -> dict[str, str]:
    env = {**os.environ, "DINOSEG_HOME": str(home), "LABEL_STUDIO_URL": url,
           "LABEL_STUDIO_API_KEY": token or "tok" + secrets.token_hex(10),
           "LABEL_STUDIO_PASSWORD": secrets.token_hex(8), "PYTHONPATH": str(REPO)}  # fmt: skip
    for key in ("LABEL_STUDIO_USERNAME", "MLFLOW_TRACKING_URI", "CELERY_BROKER_URL"):
        env.pop(key, None)
    return env


def _demo(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``dinoseg demo`` that must stop before starting anything (bounded wait)."""
    cmd = [sys.executable, "-m", "dinoseg", "demo", "--port", str(free_port()), "--no-worker"]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=DEMO_TIMEOUT_S)  # fmt: skip


def _one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stdout + done.stderr
    return lines[0]


def test_a_foreign_listener_on_the_port_stops_the_demo(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        env = _env(tmp_path / "home", f"http://127.0.0.1:{port}")
        line = _one_error_line(_demo(env))
    assert f"port {port}" in line and f"held by pid {os.getpid()} (" in line
    assert "LABEL_STUDIO_URL" in line
    assert not (tmp_path / "home" / "stack.json").exists()  # nothing was started


@pytest.fixture
def other_home_server(tmp_path: Path) -> Iterator[tuple[dict[str, str], int]]:
    """A real Label Studio of another home (``other``) on a free port, and its pid."""
    from infra.labelstudio import VENV, Paths, read_pid, start, stop

    if not (VENV / "bin" / "label-studio").is_file():
        pytest.fail(f"{VENV} is missing: run infra/labelstudio/install.sh (make test does)")
    env = _env(tmp_path / "other", f"http://127.0.0.1:{free_port()}")
    start(env)
    try:
        pid = read_pid(Paths.of(env))
        assert pid is not None
        yield env, pid
    finally:
        stop(env)


def test_label_studio_of_another_home_is_refused_ours_needs_our_token(
    tmp_path: Path, other_home_server: tuple[dict[str, str], int]
) -> None:
    from infra.labelstudio import LabelStudioError, check_port, start

    other, pid = other_home_server
    port = int(other["LABEL_STUDIO_URL"].rsplit(":", 1)[1])
    mine = _env(tmp_path / "home", other["LABEL_STUDIO_URL"])
    line = _one_error_line(_demo(mine))
    assert f"port {port}" in line and f"held by pid {pid} (" in line and "label-studio" in line
    cli = subprocess.run([sys.executable, "-m", "infra.labelstudio", "start"], cwd=REPO, env=mine,
                         capture_output=True, text=True, timeout=DEMO_TIMEOUT_S)  # fmt: skip
    assert cli.returncode == 1 and f"held by pid {pid} (" in cli.stderr
    # its own home adopts it only with proof: pid file, listener and token agree
    assert check_port(other) == pid and start(other) == 0.0
    wrong = {**other, "LABEL_STUDIO_API_KEY": "tok" + secrets.token_hex(10)}
    with pytest.raises(LabelStudioError, match=f"port {port}, pid {pid} .* rejects the API token"):
        check_port(wrong)


def test_a_server_that_rejects_our_token_is_not_up(
    other_home_server: tuple[dict[str, str], int],
) -> None:
    """Same data folder, another token (e.g. a regenerated credentials file): Label Studio keeps
    the user it made first, so the new token is refused; ``start`` says so and stops it."""
    from infra.labelstudio import LabelStudioError, healthy, start, status, stop

    env, _ = other_home_server
    assert status(env)["healthy"] is True
    stop(env)
    changed = {**env, "LABEL_STUDIO_API_KEY": "tok" + secrets.token_hex(10)}
    with pytest.raises(LabelStudioError, match=r"rejects the API token: its user .* another"):
        start(changed)
    assert not healthy(env["LABEL_STUDIO_URL"])  # stopped again, the port is free
    assert status(changed)["healthy"] is False

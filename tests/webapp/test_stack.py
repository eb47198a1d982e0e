"""The local stack (infra/stack.py, infra/supervisor.py) with stand-in services, and the CLI."""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from pathlib import Path

import pytest

from dinoseg.cli import main
from infra import stack, supervisor
from infra.stack import StackConfig, labelstudio_env, plan
from infra.supervisor import Service, StackError, Supervisor
from tests.workers.conftest import free_port

PY = sys.executable


def test_plan_follows_the_options(monkeypatch, tmp_path):
    env = {"DINOSEG_HOME": str(tmp_path)}
    names = lambda cfg: [s.name for s in plan(cfg, env)]  # noqa: E731
    assert names(StackConfig(in_process=True, labelstudio=False)) == ["app"]
    services = plan(StackConfig(workers=3, port=7999, labelstudio=False), env)
    assert [s.name for s in services] == ["worker", "app"]
    worker, app = services
    assert worker.argv[worker.argv.index("--concurrency") + 1] == "3" and "-B" not in worker.argv
    assert app.argv[-6:] == ["--host", "127.0.0.1", "--port", "7999", "--backend", "celery"]
    assert app.health_url == "http://127.0.0.1:7999/"
    with_ls = plan(StackConfig(labelstudio=True), env)
    ls = with_ls[0]
    assert ls.name == "labelstudio" and ls.argv[-1] == "serve" and not ls.required
    assert ls.ready_line and ls.health_url == "http://127.0.0.1:8080/health"
    by_name = {s.name: s for s in with_ls}
    assert [s.name for s in with_ls] == ["labelstudio", "mlbackend", "worker", "app"]
    assert "-B" in by_name["worker"].argv  # periodic annotation sync runs with Label Studio
    assert by_name["mlbackend"].url == "http://127.0.0.1:9090" and not by_name["mlbackend"].required
    monkeypatch.setattr(stack, "LABEL_STUDIO_VENV", tmp_path / "missing")
    assert names(StackConfig()) == ["worker", "app"]


def test_labelstudio_credentials_are_generated_once(tmp_path):
    env = {"DINOSEG_HOME": str(tmp_path)}
    first = labelstudio_env(env)
    assert len(first["LABEL_STUDIO_API_KEY"]) >= 20 and first["LABEL_STUDIO_PASSWORD"]
    path = tmp_path / "labelstudio-credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert labelstudio_env(env) == first == json.loads(path.read_text())
    given = {**env, "LABEL_STUDIO_API_KEY": "k" * 20, "LABEL_STUDIO_PASSWORD": "p"}
    assert labelstudio_env(given) == {}


def _wait_ready(sup: Supervisor, names: set[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not names <= sup.ready:
        assert time.monotonic() < deadline, f"not ready: {names - sup.ready}"
        sup.poll()
        time.sleep(0.2)


def test_services_start_report_ready_and_stop_in_reverse(tmp_path):
    port, said = free_port(), []
    services = [
        Service("job", [PY, "-c", "import time; time.sleep(120)"]),  # no check: ready
        Service("worker", [PY, "-c", "print('celery@x ready.', flush=True); "
                           "import time; time.sleep(120)"], ready_line=" ready."),
        Service("app", [PY, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                health_url=f"http://127.0.0.1:{port}/"),
    ]  # fmt: skip
    sup = Supervisor(services, {**os.environ, "DINOSEG_HOME": str(tmp_path)}, said.append)
    sup.start()
    try:
        _wait_ready(sup, {"job", "worker", "app"})
        pids = [p.pid for p in sup.procs.values()]
    finally:
        sup.stop()
    assert said == ["stopped app", "stopped worker", "stopped job"]
    assert sup.reaper is not None and sup.reaper.returncode == 0  # it ended with the stack
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert (tmp_path / "logs" / "worker.log").read_text().startswith("celery@x ready.")


def test_a_dying_service_stops_the_stack_with_its_log(tmp_path):
    bad = Service("worker", [PY, "-c", "print('no module named workers'); raise SystemExit(3)"],
                  ready_line=" ready.")  # fmt: skip
    sup = Supervisor([bad], {**os.environ, "DINOSEG_HOME": str(tmp_path)}, lambda s: None)
    sup.start()
    sup.procs["worker"].wait(30)
    with pytest.raises(StackError, match=r"(?s)worker exited with status 3.*no module named"):
        sup.poll()


def test_a_stubborn_child_is_killed(tmp_path, monkeypatch):
    monkeypatch.setattr(supervisor, "STOP_GRACE_S", 0.5)
    code = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print(' ready.', flush=True); time.sleep(120)")  # fmt: skip
    sup = Supervisor([Service("worker", [PY, "-c", code], ready_line=" ready.")],
                     {**os.environ, "DINOSEG_HOME": str(tmp_path)}, lambda s: None)  # fmt: skip
    sup.start()
    _wait_ready(sup, {"worker"})
    proc = sup.procs["worker"]
    start = time.monotonic()
    sup.stop()
    assert proc.returncode == -9 and time.monotonic() - start < 10


def test_demo_command_checks_its_options(capsys, monkeypatch):
    assert main(["demo", "--workers", "0"]) == 2
    assert "--workers must be at least 1" in capsys.readouterr().err
    busy = free_port()
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", busy))
        s.listen()
        assert main(["demo", "--port", str(busy), "--no-labelstudio"]) == 2
    assert f"port {busy} is already in use" in capsys.readouterr().err


def test_demo_help_lists_the_options(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    out = capsys.readouterr().out
    for flag in ("--port", "--host", "--workers", "--no-worker", "--no-labelstudio"):
        assert flag in out
    assert Path(stack.__file__).name == "stack.py"

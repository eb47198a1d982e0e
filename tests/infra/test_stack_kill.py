"""Nothing the stack started outlives it, even when its supervisor is killed with SIGKILL.

A real ``dinoseg demo --no-worker --mlflow`` (Label Studio server under ``serve``, MLflow
with its uvicorn child, the app) has its whole process group SIGKILLed: every process carrying
the stack's id must be gone within seconds and every port free. A service's child that made a
session of its own (as Label Studio's server did under ``start``) goes too. A dead stack's
leftovers are stopped by the next stack in the same home; a stack still running there is not
touched.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.infra.conftest import make_project
from tests.workers.conftest import REPO, free_port

STACK_START_S = 240.0
GONE_WITHIN_S = 15.0
#: a service whose child listens on a port in a session of its own (no parent-death signal)
SPAWNER = """
import subprocess, sys, time
code = "import socket, time; s = socket.socket(); s.bind(('127.0.0.1', PORT)); s.listen(); " \\
       "time.sleep(600)"
child = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
print("spawned", child.pid, flush=True)
time.sleep(600)
"""
#: the smallest supervisor running it: prints its stack id once the service is ready
SUPERVISOR = """
import os, sys, time
from infra.supervisor import Service, Supervisor
sup = Supervisor([Service("svc", [sys.executable, "-c", sys.argv[1]], ready_line="spawned")],
                 os.environ, print)
sup.start()
while "svc" not in sup.ready:
    sup.poll()
    time.sleep(0.1)
print(sup.stack_id, flush=True)
time.sleep(600)
"""


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) != 0


def _wait_up(proc: subprocess.Popen[str], lines: list[str], ls_url: str) -> None:
    from infra.labelstudio import healthy

    deadline = time.monotonic() + STACK_START_S
    while not (any("Press Ctrl-C to stop." in x for x in lines) and healthy(ls_url)):
        if proc.poll() is not None or time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("the stack did not come up:\n" + "\n".join(lines[-30:]))
        time.sleep(0.5)


def test_a_sigkilled_stack_leaves_no_process_and_no_port(tmp_path: Path) -> None:
    from infra.labelstudio import VENV
    from infra.procs import describe, marked
    from infra.supervisor import clear_leftovers

    if not (VENV / "bin" / "label-studio").is_file():
        pytest.fail(f"{VENV} is missing: run infra/labelstudio/install.sh (make test does)")
    project = make_project(tmp_path / "project", {}, {}, {"LABEL_STUDIO_PASSWORD": "pw-kill-test"})
    ports = {"app": free_port(), "mlflow": free_port(),
             "labelstudio": int(project.env["LABEL_STUDIO_URL"].rsplit(":", 1)[1])}  # fmt: skip
    cmd = [sys.executable, "-m", "dinoseg", "demo", "--no-worker", "--port", str(ports["app"]),
           "--mlflow", "--mlflow-port", str(ports["mlflow"]), "--project", str(project.root)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=project.env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # its own group, as a shell job has
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(x.rstrip() for x in proc.stdout or []),
                     daemon=True).start()  # fmt: skip
    _wait_up(proc, lines, project.env["LABEL_STUDIO_URL"])
    stack_id = json.loads((project.home / "stack.json").read_text())["stack_id"]
    before = marked(stack_id)
    names = " ".join(describe(pid) for pid in before)
    assert "infra.labelstudio serve" in names and "label-studio start" in names, names
    assert "uvicorn" in names, names  # MLflow's own child: a grandchild of the supervisor

    os.killpg(proc.pid, signal.SIGKILL)  # the supervisor cannot clean up
    killed = time.monotonic()
    assert proc.wait(10) == -signal.SIGKILL
    while (marked(stack_id) or not all(map(_port_free, ports.values()))) and \
            time.monotonic() < killed + GONE_WITHIN_S:  # fmt: skip
        time.sleep(0.2)
    print(f"{len(before)} processes, gone {time.monotonic() - killed:.1f} s after SIGKILL")
    left = [describe(pid) for pid in marked(stack_id)]
    assert not left, f"still running {GONE_WITHIN_S} s after SIGKILL: {left}"
    assert {name: _port_free(port) for name, port in ports.items()} == dict.fromkeys(ports, True)
    said: list[str] = []
    clear_leftovers(project.home / "stack.json", said.append)  # a new stack may start here
    assert said == []


def test_a_grandchild_in_its_own_session_goes_with_a_killed_supervisor(tmp_path: Path) -> None:
    from infra.procs import marked

    port = free_port()
    env = {**os.environ, "DINOSEG_HOME": str(tmp_path), "PYTHONPATH": str(REPO)}
    sup = subprocess.Popen([sys.executable, "-c", SUPERVISOR, SPAWNER.replace("PORT", str(port))],
                           cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert sup.stdout is not None
        stack_id = sup.stdout.readline().strip()
        grandchild = int((tmp_path / "logs" / "svc.log").read_text().split()[1])
        assert len(stack_id) == 16 and grandchild in marked(stack_id)
        deadline = time.monotonic() + 30
        while _port_free(port) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _port_free(port)
    finally:
        sup.kill()  # SIGKILL: no cleanup in the supervisor
    sup.wait(10)
    reaper_log, said = tmp_path / "logs" / "reaper.log", f"stopped pid {grandchild} ("
    deadline = time.monotonic() + GONE_WITHIN_S
    while (marked(stack_id) or not _port_free(port) or said not in reaper_log.read_text()) and \
            time.monotonic() < deadline:  # fmt: skip
        time.sleep(0.2)
    assert not marked(stack_id) and _port_free(port)
    assert said in reaper_log.read_text()


def test_the_next_stack_stops_what_a_dead_one_left(tmp_path: Path) -> None:
    from infra.procs import started
    from infra.supervisor import StackError, clear_leftovers

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(30)
    port = free_port()
    code = (f"import socket, time; s = socket.socket(); s.bind(('127.0.0.1', {port})); "
            "s.listen(); print('listening', flush=True); time.sleep(600)")  # fmt: skip
    leftover = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                                env={**os.environ, "DINOSEG_STACK_ID": "feedface"},
                                start_new_session=True)  # fmt: skip
    try:
        assert leftover.stdout is not None and leftover.stdout.readline() == "listening\n"
        path = tmp_path / "stack.json"
        path.write_text(json.dumps({"supervisor_pid": dead.pid, "running": True,
                                    "stack_id": "feedface", "services": []}))  # fmt: skip
        said: list[str] = []
        clear_leftovers(path, said.append)
        leftover.wait(15)  # gone (its status was collected by the sweep)
        assert _port_free(port)
        assert len(said) == 1 and f"pid {leftover.pid} (" in said[0]
        assert f"supervisor pid {dead.pid}" in said[0]
    finally:
        if leftover.poll() is None:
            leftover.kill()
    me = os.getpid()
    path.write_text(json.dumps({"supervisor_pid": me, "supervisor_started": started(me),
                                "running": True, "stack_id": "x", "services": []}))  # fmt: skip
    with pytest.raises(StackError, match=f"already running in {tmp_path} .*pid {me}"):
        clear_leftovers(path, said.append)
    path.write_text(json.dumps({"supervisor_pid": me, "supervisor_started": "1",
                                "running": True, "stack_id": "x", "services": []}))  # fmt: skip
    clear_leftovers(path, said.append)  # same pid, another process: not running

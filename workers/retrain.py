"""``retrain``: ``dvc repro`` in the project, one at a time (an exclusive file lock): the
segmenter's pipeline (``dvc.yaml``) or the aerial head's (``aerial/dvc.yaml``).

A second retrain waits for the lock (up to ``wait`` seconds) and then runs: it sees the labels
that arrived during the first one, and ``dvc repro`` is a no-op when nothing changed. The full
output goes to ``runtime.logs_dir()/retrain-<time>.log``; the reply keeps its tail.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from dinoseg import runtime
from dinoseg.io import InputError

TAIL = 2000


def _stage_env() -> dict[str, str]:
    """The environment for ``dvc repro``: this interpreter's bin first on PATH, because the
    stages run ``python -m mlops.<stage>`` and must get the worker's virtualenv."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def _dvc() -> str:
    """The ``dvc`` next to this interpreter, else the one on PATH."""
    local = Path(sys.executable).with_name("dvc")
    return str(local) if local.is_file() else (shutil.which("dvc") or "dvc")


#: the pipelines a retrain may run: name -> ``dvc repro`` arguments
PIPELINES = {"segmenter": (), "aerial": ("aerial/dvc.yaml",)}


def repro_command(pipeline: str) -> list[str]:
    """``dvc repro`` of one of :data:`PIPELINES` (anything else: :class:`InputError`)."""
    if pipeline not in PIPELINES:
        raise InputError(f"retrain: unknown pipeline {pipeline!r}; use one of {list(PIPELINES)}")
    return [_dvc(), "repro", *PIPELINES[pipeline]]


def _acquire(f: Any, wait: float) -> bool:
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(1.0)


def run_retrain(
    project: Path | None = None,
    *,
    command: list[str] | None = None,
    wait: float = 3600.0,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Run ``command`` (default ``dvc repro``) in ``project`` (default: the working directory).

    Returns:
        ``{"returncode", "seconds", "waited_seconds", "log", "tail"}``; ``returncode`` is None
        when the lock could not be taken within ``wait`` seconds.
    """
    project = (project or Path.cwd()).resolve()
    command = command or repro_command("segmenter")
    lock_path = runtime.ensure(runtime.home()) / "retrain.lock"
    logs = runtime.ensure(runtime.logs_dir())
    t0 = time.monotonic()
    with open(lock_path, "a") as lock:
        if not _acquire(lock, wait):
            return {"returncode": None, "seconds": 0.0, "waited_seconds": wait, "log": None,
                    "tail": "another retrain holds the lock"}  # fmt: skip
        waited = time.monotonic() - t0
        log_path = logs / f"retrain-{time.strftime('%Y%m%d-%H%M%S')}-{id(lock):x}.log"
        with open(log_path, "wb") as log:
            try:
                rc = subprocess.run(command, cwd=project, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, timeout=timeout,
                                    env=_stage_env()).returncode
            except subprocess.TimeoutExpired:
                rc = -9
        seconds = time.monotonic() - t0 - waited
    tail = log_path.read_text(errors="replace")[-TAIL:]
    return {"returncode": rc, "seconds": round(seconds, 2), "waited_seconds": round(waited, 2),
            "log": str(log_path), "tail": tail}  # fmt: skip

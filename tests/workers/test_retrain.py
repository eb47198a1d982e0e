"""``retrain``: a real ``dvc repro`` in a project, one at a time."""

from __future__ import annotations

import fcntl
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from dinoseg.io import InputError
from workers.retrain import _dvc, repro_command, run_retrain

DVC_YAML = """stages:
  count:
    cmd: python -c "import os; open('out.txt', 'w').write(str(len(os.listdir('labels'))))"
    deps: [labels]
    outs: [out.txt]
"""


def test_dvc_repro_runs_and_reruns_on_new_labels(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("DINOSEG_HOME", str(tmp_path / "home"))
    project = tmp_path / "project"
    (project / "labels").mkdir(parents=True)
    (project / "labels" / "a.png").write_bytes(b"x")
    subprocess.run([_dvc(), "init", "--no-scm", "-q"], cwd=project, check=True, timeout=120)
    (project / "dvc.yaml").write_text(DVC_YAML)
    first = run_retrain(project, timeout=300)
    assert first["returncode"] == 0, first["tail"]
    assert (project / "out.txt").read_text() == "1"
    (project / "labels" / "b.png").write_bytes(b"y")  # a new label reruns the stage
    second = run_retrain(project, timeout=300)
    assert second["returncode"] == 0 and (project / "out.txt").read_text() == "2"
    assert Path(second["log"]).is_file() and "count" in second["tail"]


def test_retrains_run_one_at_a_time(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("DINOSEG_HOME", str(tmp_path / "home"))
    stamp = tmp_path / "stamps.txt"
    code = ("import time, sys; f = open(sys.argv[1], 'a'); f.write(f'start {time.time()}\\n'); "
            "f.flush(); time.sleep(1.0); f.write(f'end {time.time()}\\n')")  # fmt: skip
    command = [sys.executable, "-c", code, str(stamp)]
    replies: list[dict] = []

    def run() -> None:
        replies.append(run_retrain(tmp_path, command=command, wait=60))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    events = [line.split()[0] for line in stamp.read_text().splitlines()]
    assert events == ["start", "end", "start", "end"]  # never overlapping
    assert sorted(r["returncode"] for r in replies) == [0, 0]
    assert max(r["waited_seconds"] for r in replies) >= 0.5


def test_lock_held_elsewhere_gives_up_after_wait(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("DINOSEG_HOME", str(tmp_path))
    with open(tmp_path / "retrain.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        reply = run_retrain(tmp_path, command=[sys.executable, "-c", "pass"], wait=0.0)
    assert reply["returncode"] is None and "lock" in reply["tail"]


def test_the_aerial_retrain_runs_the_aerial_pipeline_only(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("DINOSEG_HOME", str(tmp_path / "home"))
    project = tmp_path / "project"
    (project / "labels").mkdir(parents=True)
    (project / "aerial").mkdir()
    (project / "labels" / "a.png").write_bytes(b"x")
    subprocess.run([_dvc(), "init", "--no-scm", "-q"], cwd=project, check=True, timeout=120)
    (project / "dvc.yaml").write_text(DVC_YAML)
    (project / "aerial" / "dvc.yaml").write_text(DVC_YAML.replace(
        "  count:", "  aerial_count:\n    wdir: ..").replace("out.txt", "aerial_out.txt"))
    reply = run_retrain(project, command=repro_command("aerial"), timeout=300)
    assert reply["returncode"] == 0, reply["tail"]
    assert (project / "aerial_out.txt").read_text() == "1" and not (project / "out.txt").exists()
    assert repro_command("segmenter")[1:] == ["repro"]
    with pytest.raises(InputError, match="unknown pipeline 'x'"):
        repro_command("x")

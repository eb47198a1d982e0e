"""The loop on the embedded stack: ``dinoseg demo`` in the simulation's project, driven as the
web app and an annotator would drive it.

Segmentation goes to the workers by task name (``dinoseg.segment``); a picked result is sent
with ``dinoseg.queue_for_review`` (a Label Studio task with the class and the pre-annotation);
the oracle submits the ground truth as an annotation through Label Studio's API; then
``dinoseg.sync_annotations`` writes ``data/labels`` and updates the workers' support memory,
``dinoseg.retrain`` runs ``dvc repro`` in the project (retrain, evaluate, gate, register), and
the workers follow the champion alias before the test split is segmented again.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from dinoseg import runtime
from mlops.loop.oracle import Oracle
from mlops.loop.requests import CHUNK, Descriptors, Uploads, candidates, champion, test_ious
from mlops.loop.rounds import Learned
from mlops.loop.scenario import Scenario
from mlops.loop.strategies import Candidate

log = logging.getLogger("mlops.loop")
START_TIMEOUT = 600.0
TASK_TIMEOUT = 1800.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RealStack:
    """A :class:`mlops.loop.rounds.Driver` over a running stack (started here, stopped by
    :meth:`close`)."""

    def __init__(self, scen: Scenario, project: Path, *, retrain: bool = True):
        self.scen, self.project, self.retrains = scen, project, retrain
        self.env = self._env()
        self.proc = self._start()
        from workers.app import make_app
        from workers.labelstudio.client import connect

        self.app = make_app(self.env)
        self.ls = connect(self.env["LABEL_STUDIO_URL"], self.env["LABEL_STUDIO_API_KEY"])
        self.oracle = Oracle(scen)
        self.uploads = Uploads(scen, self.oracle)
        self.describe = Descriptors()

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "MLFLOW_"))}
        env.update(LABEL_STUDIO_URL=f"http://127.0.0.1:{_free_port()}",
                   DINOSEG_ML_BACKEND_URL=f"http://127.0.0.1:{_free_port()}",
                   LABEL_STUDIO_API_KEY=secrets.token_hex(20),
                   LABEL_STUDIO_PASSWORD=secrets.token_urlsafe(12),
                   LABEL_STUDIO_USERNAME="oracle@dinoseg.local",
                   PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
        os.environ.update({k: env[k] for k in ("LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY")})
        return env

    def _start(self) -> subprocess.Popen[bytes]:
        """``dinoseg demo`` in the project (dvc initialised there), until every service is up."""
        dvc = Path(sys.executable).with_name("dvc")
        if not (self.project / ".dvc").is_dir():
            subprocess.run([str(dvc), "init", "--no-scm", "-q"], cwd=self.project, check=True,
                           env=self.env, timeout=120)  # fmt: skip
        port = _free_port()
        log_file = open(runtime.ensure(runtime.home()) / "demo.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(  # from the project folder: its copy of the code runs
            [sys.executable, "-m", "dinoseg.cli", "demo", "--project", str(self.project),
             "--port", str(port), "--workers", "1", "--no-ml-backend"],
            cwd=self.project, env=self.env, stdout=log_file, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self._wait_up(proc)
        return proc

    def _wait_up(self, proc: subprocess.Popen[bytes]) -> None:
        from infra.supervisor import health_report

        deadline = time.monotonic() + START_TIMEOUT
        path = runtime.home() / "stack.json"
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"dinoseg demo exited ({proc.returncode}); see "
                                   f"{runtime.home() / 'demo.log'}")  # fmt: skip
            if path.is_file() and health_report(path).ok:
                return
            time.sleep(2.0)
        raise RuntimeError(f"the stack did not come up in {START_TIMEOUT:.0f} s")

    def close(self) -> None:
        """Stop the stack (its supervisor stops every service)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)

    def _call(self, name: str, *args: Any, timeout: float = TASK_TIMEOUT) -> Any:
        return self.app.send_task(name, args=list(args)).get(timeout=timeout)

    def _segment(self, req: Any, split: str, stems: list[str]) -> list[dict[str, Any]]:
        pending = [self.app.send_task("dinoseg.segment", args=[self.uploads.request(
            req, split, stems[start : start + CHUNK])]) for start in range(0, len(stems), CHUNK)]
        return [r for p in pending for r in p.get(timeout=TASK_TIMEOUT)["results"]]

    def segment_pool(self, scen: Scenario) -> list[Candidate]:
        return candidates(scen, self._segment)

    def annotate(self, scen: Scenario, picked: list[Candidate]) -> Learned:
        errors: list[str] = []
        for cand in picked:
            reply = self._call("dinoseg.queue_for_review", cand.result_id, timeout=120)
            task_id = reply.get("task_id")
            if task_id is None:
                errors.append(f"{cand.result_id}: not delivered ({reply.get('status')})")
                continue
            task = self.ls.tasks.get(task_id)
            self.ls.annotations.create(id=task_id, result=self.oracle.result(dict(task.data)))
        synced = self._call("dinoseg.sync_annotations", timeout=600)
        errors += [str(s) for s in synced.get("skipped") or []]
        errors += [str(s) for s in synced.get("memory_errors") or []]
        if not self.retrains:
            return Learned(int(synced.get("new_labels") or 0), self.champion(), errors)
        retrain = self._call("dinoseg.retrain")
        if retrain.get("returncode") != 0:
            errors.append(f"retrain failed ({retrain.get('returncode')}): "
                          f"{str(retrain.get('tail'))[-300:]}")  # fmt: skip
        time.sleep(2.0)  # serving.model_check_seconds: the workers re-resolve the champion
        return Learned(int(synced.get("new_labels") or 0), self.champion(), errors)

    def champion(self) -> str | None:
        return champion()

    def test(self, scen: Scenario) -> tuple[dict[str, dict[str, float]], str | None]:
        return test_ious(scen, self._segment), self.champion()

    def status(self) -> dict[str, Any]:
        return dict(json.loads(json.dumps(self._call("dinoseg.status", timeout=60))))

"""Real services for the worker tests: Celery workers (SQLite and Redis brokers), Label Studio.

Every test runs against a temporary project (``params.yaml`` with a tiny random DINOv2 and the
prototype model) and a temporary ``DINOSEG_HOME``; nothing touches the repository's ``var/``.
Waits are bounded; a missing service is a failure with a message, never a skip.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.conftest import tiny_dinov2

REPO = Path(__file__).resolve().parents[2]
CELERY = Path(sys.executable).with_name("celery")
REDIS_URL = "redis://127.0.0.1:6379/14"
LS_TOKEN = "dinoseg-test-token-0123456789"
WORKER_START_TIMEOUT = 90.0


@dataclass
class Project:
    """A temporary project folder and the environment of its stack."""

    root: Path
    env: dict[str, str]

    @property
    def home(self) -> Path:
        return Path(self.env["DINOSEG_HOME"])

    @property
    def uploads(self) -> Path:
        return self.home / "uploads"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_params(root: Path, backbone: Path, classes_from: Path, **review: object) -> None:
    params = {
        "serving": {"model": "prototype", "backbone": str(backbone), "image_size": 112},
        "review": {"classes_from": str(classes_from), "labels_dir": "data/labels",
                   "auto_queue": False, "retrain_after": 2, **review},
    }  # fmt: skip
    (root / "params.yaml").write_text(yaml.safe_dump(params))


@pytest.fixture(scope="session")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """Project folder: params.yaml, a tiny backbone, a 2-class dataset's classes.json."""
    root = tmp_path_factory.mktemp("project")
    backbone = root / "tiny-dinov2"
    tiny_dinov2().save_pretrained(backbone)
    classes = root / "base"
    classes.mkdir()
    (classes / "classes.json").write_text(
        json.dumps({"classes": {"0": "road", "1": "car"}, "ignore_index": 255})
    )
    write_params(root, backbone, classes)
    env = {
        **os.environ,
        "DINOSEG_HOME": str(root / "var"),
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "LABEL_STUDIO_URL": f"http://127.0.0.1:{free_port()}",
        "LABEL_STUDIO_API_KEY": LS_TOKEN,
        "LABEL_STUDIO_USERNAME": "admin@dinoseg.test",
        "LABEL_STUDIO_PASSWORD": "dinoseg-test-password",
        "ML_BLOCK_LOCAL_IP": "false",  # Label Studio may call the ML backend on loopback
    }
    for key in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "MLFLOW_TRACKING_URI"):
        env.pop(key, None)
    return Project(root, env)


@pytest.fixture
def stack_env(project: Project, monkeypatch: pytest.MonkeyPatch) -> Project:
    """The project's environment applied to this process too (runtime reads os.environ)."""
    for key in ("DINOSEG_HOME", "LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY"):
        monkeypatch.setenv(key, project.env[key])
    monkeypatch.chdir(project.root)
    return project


def blob(h: int, w: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A noisy image with a bright rectangle and the rectangle's mask."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 80, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), bool)
    y, x = h // 4 + seed % 5, w // 4 + seed % 7
    mask[y : y + h // 3, x : x + w // 3] = True
    img[mask] = (220, 190, 40)
    return img, mask


def upload(project: Project, name: str, image: np.ndarray, mask: np.ndarray | None = None) -> dict:
    """Save an image (and mask) into the uploads folder; returns their paths."""
    project.uploads.mkdir(parents=True, exist_ok=True)
    out = {"image": str(project.uploads / f"{name}.png")}
    Image.fromarray(image).save(out["image"])
    if mask is not None:
        out["mask"] = str(project.uploads / f"{name}-mask.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(out["mask"])
    return out


def make_request(
    project: Project, n_queries: int, size: tuple[int, int] = (96, 128), first: int = 1
) -> dict:
    """A 1-shot request with ``n_queries`` distinct queries (seeds ``first``, ``first + 1``...)."""
    img, mask = blob(*size, seed=0)
    support = upload(project, "support", img, mask)
    queries = [upload(project, f"q{i}", blob(*size, seed=i)[0])["image"]
               for i in range(first, first + n_queries)]  # fmt: skip
    return {"support": [support], "queries": queries, "model": None, "threshold": None}


class Worker:
    """A ``celery worker`` subprocess (prefork, one child) in the project folder."""

    def __init__(self, project: Project, env: dict[str, str], name: str):
        self.log = project.root / f"worker-{name}.log"
        cmd = [str(CELERY), "-A", "workers.app", "worker", "-c", "1", "-P", "prefork",
               "-l", "INFO", "-n", f"{name}@%h", "--without-mingle", "--without-gossip",
               "--without-heartbeat"]  # fmt: skip
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=project.root, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def children(self) -> list[int]:
        import psutil

        return [c.pid for c in psutil.Process(self.proc.pid).children()]

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and pool)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def start_worker(project: Project) -> Iterator[Callable[..., Worker]]:
    workers: list[Worker] = []

    def start(name: str, **extra_env: str) -> Worker:
        w = Worker(project, {**project.env, **extra_env}, name)
        workers.append(w)
        return w

    yield start
    for w in workers:
        w.stop()


def wait_for(predicate: Callable[[], object], timeout: float, what: str, step: float = 0.2):
    """Poll ``predicate`` until truthy; pytest.fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def celery_app(env: dict[str, str]):
    """A client-side Celery app for ``env`` (as the webapp would build it)."""
    from workers.app import make_app

    app = make_app(env)
    app.conf.broker_connection_timeout = 5
    return app


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=2).ping()
    except redis.RedisError as e:
        pytest.fail(f"Redis is not answering on 127.0.0.1:6379 ({e}); start redis-server")
    return REDIS_URL


@dataclass
class LabelStudioServer:
    """The test suite's Label Studio (started once per session)."""

    env: dict[str, str]
    first_start_seconds: float

    def start(self) -> float:
        from infra.labelstudio import start

        return start(self.env)

    def stop(self) -> None:
        from infra.labelstudio import stop

        stop(self.env)

    def client(self):
        from workers.labelstudio.client import connect

        return connect(self.env["LABEL_STUDIO_URL"], self.env["LABEL_STUDIO_API_KEY"])


@pytest.fixture(scope="session")
def labelstudio(project: Project) -> Iterator[LabelStudioServer]:
    from infra.labelstudio import VENV, LabelStudioError, start, stop

    if not (VENV / "bin" / "label-studio").is_file():
        pytest.fail(f"{VENV} is missing: run infra/labelstudio/install.sh (make test does)")
    try:
        seconds = start(project.env)
    except LabelStudioError as e:
        pytest.fail(f"Label Studio did not start: {e}")
    server = LabelStudioServer(project.env, seconds)
    try:
        yield server
    finally:
        stop(project.env)

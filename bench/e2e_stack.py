"""The stacks ``bench/latency_e2e.py`` times: ``dinoseg demo`` in a subprocess on a private
project (SQLite broker, or a private ``redis-server``), and the image pool its requests use.

Run as part of the bench (this folder is on ``sys.path``); nothing here starts at import.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
CAMVID = REPO.parent / "shared" / "data" / "camvid"
ROAD = 3  # camvid classes.json
READY = "Press Ctrl-C to stop."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Pool:
    """CamVid images (val, then train) with a road mask: each one is used once per path, so
    no feature cache can hold it (``new`` really is new)."""

    def __init__(self, root: Path = CAMVID, folder: Path | None = None):
        self.items = [p for split in ("val", "train")
                      for p in sorted((root / split / "images").glob("*.jpg"))]  # fmt: skip
        self.root, self.folder, self._next = root, folder, 0

    def take(self, n: int) -> list[Path]:
        if self._next + n > len(self.items):
            raise RuntimeError("image pool exhausted: run fewer repetitions")
        out = self.items[self._next : self._next + n]
        self._next += n
        return out

    def support(self) -> tuple[Path, Path]:
        """A new support image and its road mask (0/255 PNG written into ``folder``)."""
        image = self.take(1)[0]
        split = image.parent.parent.name
        labels = np.asarray(Image.open(self.root / split / "masks" / f"{image.stem}.png"))
        mask = (self.folder or Path(".")) / f"m{self._next}.png"  # a short name: the page shows it
        Image.fromarray((labels == ROAD).astype(np.uint8) * 255).save(mask)
        return image, mask


def write_project(root: Path) -> Path:
    """A project folder: the prototype served, no support memory, nothing queued for review."""
    root.mkdir(parents=True, exist_ok=True)
    params = {
        "serving": {"model": "prototype", "memory": ""},
        "review": {"auto_queue": False, "classes_from": str(CAMVID)},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


@dataclass
class Redis:
    """A private ``redis-server`` (no persistence) on a free loopback port."""

    proc: subprocess.Popen
    url: str

    @classmethod
    def start(cls) -> Redis:
        port = free_port()
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no"], stdout=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return cls(proc, f"redis://127.0.0.1:{port}/0")
            time.sleep(0.1)
        proc.kill()
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class Stack:
    """``dinoseg demo --no-labelstudio`` (app + one worker; ``in_process``: the app runs the
    model itself, ``--no-worker``) on ``project``."""

    def __init__(self, project: Path, threads: int, broker: str | None = None,
                 in_process: bool = False):  # fmt: skip
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "DINOSEG_HOME": str(project / "var"),
                    "OMP_NUM_THREADS": str(threads),
                    "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        for key in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "MLFLOW_TRACKING_URI",
                    "DINOSEG_DEMO_AUTH"):  # fmt: skip
            self.env.pop(key, None)
        if broker:
            self.env["CELERY_BROKER_URL"] = self.env["CELERY_RESULT_BACKEND"] = broker
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dinoseg", "demo", "--port", str(self.port),
             "--no-labelstudio", "--project", str(project),
             *(["--no-worker"] if in_process else [])],
            cwd=project, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())

    def wait_up(self, timeout: float = 240.0) -> Stack:
        deadline = time.monotonic() + timeout
        while not any(READY in x for x in self.lines):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the stack did not come up:\n" + "\n".join(self.lines[-30:]))
            time.sleep(0.3)
        return self

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(2)  # Ctrl-C: the stack stops its services
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def celery_backend(env: dict[str, str]) -> object:
    """A :class:`webapp.backends.celery.CeleryBackend` on the stack's broker."""
    from dinoseg import runtime
    from webapp.backends.celery import CeleryBackend, client_app

    app = client_app(runtime.broker_url(env), runtime.result_backend(env))
    return CeleryBackend(app)


def requests_for(supports: Iterable[tuple[Path, Path]], queries: list[Path],
                 uploads: Path) -> dict:  # fmt: skip
    """A ``segment`` request over stored uploads (the web app's way of storing them)."""
    from serving.uploads import store_file

    support = [{"image": str(store_file(i, uploads)), "mask": str(store_file(m, uploads))}
               for i, m in supports]  # fmt: skip
    return {"support": support, "queries": [str(store_file(q, uploads)) for q in queries],
            "class_name": None, "model": "prototype", "threshold": None}  # fmt: skip


def dump(rows: list[dict], path: Path | None) -> None:
    if path is not None:
        path.write_text(json.dumps(rows, indent=1))

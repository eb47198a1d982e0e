"""Load on the workers: many concurrent ``dinoseg.segment`` requests, sent straight to the queue
and through the webapp's Celery backend, with 1 and 2 worker processes, on the embedded SQLite
broker and on Redis.

For every (broker, workers, path) it prints submitted / completed / failed counts, the distinct
result records stored, throughput (completed requests per second of wall time) and p50 / p95
latency (send -> reply). Every request is 1 support + 1 distinct query, so none is served from
another's record. Workers are separate ``celery worker`` processes (``-c 1``, one thread each)
started through :mod:`infra.stack`, in a temporary project and home; Redis is a private
``redis-server`` on a free loopback port (append-only, fsync every second). Nothing is kept.

    OMP_NUM_THREADS=1 python bench/load.py --requests 40 --concurrency 8 --json load.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # infra, workers, webapp live beside dinoseg in the checkout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def private_redis(folder: Path) -> Iterator[str]:
    """A private redis-server on a free loopback port; yields its URL."""
    import redis

    port = free_port()
    cmd = [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind",
           "127.0.0.1", "--dir", str(folder), "--appendonly", "yes", "--appendfsync", "everysec",
           "--save", "", "--logfile", str(folder / "redis.log")]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                redis.Redis(port=port, socket_timeout=1).ping()
                break
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.1)
        yield f"redis://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def make_project(root: Path, backbone: str, image_size: int) -> None:
    params = {"serving": {"model": "prototype", "backbone": backbone, "image_size": image_size},
              "review": {"auto_queue": False, "sync_seconds": 3600, "outbox_seconds": 3600}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def make_requests(uploads: Path, n: int, size: tuple[int, int], first: int) -> list[dict]:
    """``n`` 1-shot requests with distinct queries (a bright box on noise, shifted per seed)."""
    uploads.mkdir(parents=True, exist_ok=True)
    h, w = size

    def image(seed: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        img = rng.integers(0, 90, (h, w, 3), dtype=np.uint8)
        mask = np.zeros((h, w), bool)
        y, x = h // 4 + seed % 17, w // 4 + seed % 23
        mask[y : y + h // 3, x : x + w // 3] = True
        img[mask] = (220, 190, 40)
        return img, mask

    img, mask = image(0)
    Image.fromarray(img).save(uploads / "support.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(uploads / "support-mask.png")
    support = [{"image": str(uploads / "support.png"), "mask": str(uploads / "support-mask.png")}]
    out = []
    for seed in range(first, first + n):
        path = uploads / f"q{seed}.png"
        Image.fromarray(image(seed)[0]).save(path)
        out.append({"support": support, "queries": [str(path)], "model": None, "threshold": None})
    return out


def start_workers(n: int, env: dict[str, str], project: Path) -> Any:
    """``n`` worker processes through the stack's supervisor, once they report ready."""
    from infra.stack import StackConfig, worker_services
    from infra.supervisor import Supervisor

    services = worker_services(StackConfig(nodes=n, workers=1), env, beat=False)
    sup = Supervisor(services, env, lambda line: None, cwd=project)
    sup.start()
    deadline = time.monotonic() + 300
    while sup.starting():
        sup.poll()
        if time.monotonic() > deadline:
            sup.stop()
            raise RuntimeError(f"workers not ready; see {sup.logs}")
        time.sleep(0.5)
    return sup


def run_load(send: Callable[[dict], dict], requests: list[dict], concurrency: int) -> dict:
    """Send every request from ``concurrency`` threads; latencies and counts."""
    latencies: list[float] = []
    failures: list[str] = []

    def one(request: dict) -> None:
        t0 = time.perf_counter()
        try:
            reply = send(request)
            assert len(reply["results"]) == 1
            latencies.append(time.perf_counter() - t0)
        except Exception as e:
            failures.append(f"{type(e).__name__}: {e}"[:200])

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, requests))
    wall = time.perf_counter() - t0
    lat = sorted(latencies)

    def pct(q: float) -> float:  # nearest-rank percentile
        return lat[min(len(lat) - 1, round(q * (len(lat) - 1)))] if lat else float("nan")

    return {"submitted": len(requests), "completed": len(lat), "failed": len(failures),
            "wall_s": round(wall, 2), "throughput_rps": round(len(lat) / wall, 3),
            "p50_s": round(pct(0.5), 3), "p95_s": round(pct(0.95), 3),
            "mean_s": round(statistics.fmean(lat), 3) if lat else None,
            "errors": failures[:3]}  # fmt: skip


def bench_config(broker: str, n_workers: int, args: argparse.Namespace, tmp: Path) -> list[dict]:
    """One broker and worker count: warm up, then each path in turn."""
    from dinoseg import runtime
    from webapp.backends.celery import CeleryBackend, client_app
    from workers.app import make_app

    project = tmp / f"{broker}-{n_workers}"
    project.mkdir()
    make_project(project, args.backbone, args.image_size)
    env = {**os.environ, "DINOSEG_HOME": str(project / "var"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    for key in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "MLFLOW_TRACKING_URI"):
        env.pop(key, None)
    with contextlib_redis(broker, project) as url:
        if url:
            env.update({"CELERY_BROKER_URL": url + "/0", "CELERY_RESULT_BACKEND": url + "/1"})
        sup = start_workers(n_workers, env, project)
        try:
            app = make_app(env)
            send_queue = lambda r: app.send_task("dinoseg.segment", args=[r]).get(timeout=600)  # noqa: E731
            broker_url, results_url = runtime.broker_url(env), runtime.result_backend(env)
            backend = CeleryBackend(client_app(broker_url, results_url))
            uploads = project / "var" / "uploads"
            warm = make_requests(uploads, 2 * n_workers, args.size, first=10_000)
            run_load(send_queue, warm, n_workers)  # each worker loads its model
            rows, first = [], 1
            for path, send in (("queue", send_queue), ("webapp", backend.segment)):
                if path not in args.paths:
                    continue
                reqs = make_requests(uploads, args.requests, args.size, first)
                first += args.requests
                before = records(project)
                row = run_load(send, reqs, args.concurrency)
                row.update(broker=broker, workers=n_workers, path=path,
                           stored=len(records(project) - before))  # fmt: skip
                rows.append(row)
                print(fmt(row), flush=True)
        finally:
            sup.stop()
    return rows


def records(project: Path) -> set[str]:
    """Result ids in the project's results store."""
    results = project / "var" / "results"
    return {p.name for p in results.iterdir() if p.is_dir()} if results.is_dir() else set()


@contextmanager
def contextlib_redis(broker: str, project: Path) -> Iterator[str | None]:
    if broker != "redis":
        yield None
        return
    folder = project / "redis"
    folder.mkdir()
    with private_redis(folder) as url:
        yield url


def fmt(row: dict) -> str:
    return (f"{row['broker']:<7} {row['workers']} worker(s) {row['path']:<7} "
            f"submitted {row['submitted']:>3} completed {row['completed']:>3} "
            f"failed {row['failed']} stored {row['stored']:>3} | {row['throughput_rps']:.2f} req/s "
            f"p50 {row['p50_s']:.2f} s p95 {row['p95_s']:.2f} s (wall {row['wall_s']:.1f} s)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--requests", type=int, default=40, help="requests per path")
    ap.add_argument("--concurrency", type=int, default=8, help="client threads")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--brokers", nargs="+", choices=["sqlite", "redis"],
                    default=["sqlite", "redis"])  # fmt: skip
    ap.add_argument("--paths", nargs="+", choices=["queue", "webapp"],
                    default=["queue", "webapp"])  # fmt: skip
    ap.add_argument("--backbone", default="packaged:dinov2-s")
    ap.add_argument("--image-size", type=int, default=448, help="encoder long side (448)")
    ap.add_argument("--size", type=lambda s: tuple(int(x) for x in s.split("x")),
                    default=(240, 320), help="image HxW (default 240x320)")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args()
    print(f"load: {args.requests} requests/path, {args.concurrency} client threads, backbone "
          f"{args.backbone} @ {args.image_size}px, images {args.size[1]}x{args.size[0]}, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="dinoseg-load-") as tmp:
        for broker in args.brokers:
            for n in args.workers:
                rows += bench_config(broker, n, args, Path(tmp))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    lost = sum(r["submitted"] - r["completed"] for r in rows)
    print(f"done: {len(rows)} runs, {lost} request(s) not completed, load average "
          f"{os.getloadavg()[0]:.1f}")
    return 0 if lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

"""End-to-end latency of one ``segment`` request, in one run on one machine: the served
predictor in-process, the serving job in-process, the ``segment`` task through the embedded
stack (SQLite broker) and through Redis, and a browser click -> result on the page (Playwright
+ Chromium) on that stack and on the app that runs the model itself (``dinoseg demo
--no-worker``: ``browser-local``) — for 1 and 4 queries, with a cached and with a new
support. Prints each median (seconds) and its ratio to the in-process predictor.

Every run uses CamVid images (480x360, served at 448 px) it has not used before on that path,
so no feature cache holds them; the cached-support rows first encode the support once.

Usage: python bench/latency_e2e.py [--runs 3] [--threads 2] [--paths predictor job sqlite
redis browser browser-local] [--json OUT]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from e2e_stack import REPO, Pool, Redis, Stack, celery_backend, dump, requests_for, write_project

PATHS = ("predictor", "job", "sqlite", "redis", "browser", "browser-local")
CASES = [(1, "cached"), (4, "cached"), (1, "new"), (4, "new")]
#: what one timed run does: (support or None to keep the last one, queries) -> the seconds it
#: timed itself, or None to be timed from call to return
Runner = Callable[[tuple[Path, Path] | None, list[Path]], float | None]


def timed(run: Runner, pool: Pool, queries: int, support: str, runs: int) -> float:
    """Median seconds of ``runs`` runs (after one warm-up) on queries (and, for ``new``,
    supports) that ``pool`` has not handed out before: one pool serves a whole bench run, so
    no path's feature cache holds an image another case or path used."""
    import time

    run(pool.support(), pool.take(queries))  # warm-up; the cached rows keep this support
    times = []
    for _ in range(runs):
        s, q = (pool.support() if support == "new" else None), pool.take(queries)
        start = time.perf_counter()
        own = run(s, q)
        times.append(time.perf_counter() - start if own is None else own)
    return statistics.median(times)


def predictor_runner(threads: int) -> Runner:
    """The served predictor (load_served, as the job uses it), images decoded in the clock."""
    import torch

    from dinoseg.io import load_image, load_mask
    from dinoseg.served import load_served

    torch.set_num_threads(threads)
    served = load_served("prototype")

    def run(support: tuple[Path, Path] | None, queries: list[Path]) -> None:
        if support is not None:
            image = load_image(support[0])
            served.set_support([image], [load_mask(support[1], image_size=image.shape[:2])])
        served.predict([load_image(q) for q in queries])

    return run


def backend_runner(backend: object, uploads: Path) -> Runner:
    """A web-app backend's ``segment`` on stored uploads (storing them is not timed)."""
    last: list[tuple[Path, Path]] = []

    def run(support: tuple[Path, Path] | None, queries: list[Path]) -> None:
        if support is not None:
            last[:] = [support]
        request = requests_for(last, queries, uploads)
        backend.segment(request)  # type: ignore[attr-defined]

    return run


def browser_cases(url: str, pool: Pool, runs: int, cases: list) -> dict[str, float]:
    """Click -> first mask shown, per case (one page; the uploads before each click are not
    timed, and each click waits until the page's network has been quiet for 0.5 s, as a
    visitor's would be: ``run`` times the click itself and returns those seconds)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))  # the page driver lives with the browser test
    from tests.webapp.demo_page import demo_page

    out = {}
    with demo_page(url) as page:
        page.choose_prototype()
        for n, support in cases:
            def run(s: tuple[Path, Path] | None, q: list[Path]) -> float:
                page.upload(s, q)
                page.settle()  # the editor's uploads after the last event are over
                return page.segment(q[0])

            out[f"{n}/{support}"] = timed(run, pool, n, support, runs)
    return out


def stack_cases(project: Path, args: argparse.Namespace, pool: Pool,
                broker: str | None) -> dict[str, dict[str, float]]:  # fmt: skip
    """The stack's own rows (``sqlite`` or ``redis``, when asked) and, on the SQLite stack,
    the browser's."""
    stack = Stack(project, args.threads, broker).wait_up()
    name, out = ("redis" if broker else "sqlite"), {}
    try:
        os.environ["DINOSEG_HOME"] = stack.env["DINOSEG_HOME"]
        uploads = Path(stack.env["DINOSEG_HOME"]) / "uploads"
        run = backend_runner(celery_backend(stack.env), uploads)
        if name in args.paths:
            out[name] = {f"{n}/{s}": timed(run, pool, n, s, args.runs) for n, s in CASES}
        if not broker and "browser" in args.paths:
            out["browser"] = browser_cases(stack.url, pool, args.runs, CASES)
        return out
    finally:
        stack.stop()


def local_browser(project: Path, args: argparse.Namespace, pool: Pool) -> dict[str, float]:
    """The browser row on ``dinoseg demo --no-worker`` (no broker, no worker process)."""
    stack = Stack(project, args.threads, in_process=True).wait_up()
    try:
        return browser_cases(stack.url, pool, args.runs, CASES)
    finally:
        stack.stop()


def in_process(project: Path, args: argparse.Namespace,
               pool: Pool) -> dict[str, dict[str, float]]:  # fmt: skip
    out = {}
    if "predictor" in args.paths:
        run = predictor_runner(args.threads)
        out["predictor"] = {f"{n}/{s}": timed(run, pool, n, s, args.runs)
                            for n, s in CASES}  # fmt: skip
    if "job" in args.paths:
        from serving.segment import SegmentJob
        from webapp.backends.local import LocalBackend

        os.environ["DINOSEG_HOME"] = str(project / "var-job")
        backend = LocalBackend(SegmentJob.from_params(project / "params.yaml"))
        run = backend_runner(backend, project / "var-job" / "uploads")
        out["job"] = {f"{n}/{s}": timed(run, pool, n, s, args.runs)
                      for n, s in CASES}  # fmt: skip
    return out


def table(rows: dict[str, dict[str, float]]) -> str:
    keys = [f"{n}/{s}" for n, s in CASES]
    ref = rows.get("predictor")
    lines = ["path       " + "".join(f"{k:>18}" for k in keys)]
    for path, cells in rows.items():
        text = ""
        for k in keys:
            ratio = f" ({cells[k] / ref[k]:.1f}x)" if ref and path != "predictor" else ""
            text += f"{cells[k]:>11.2f} s{ratio:>6}" if ratio else f"{cells[k]:>16.2f} s"
        lines.append(f"{path:<11}{text}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=3, help="timed runs per cell (median)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads, every path")
    ap.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    ap.add_argument("--json", type=Path, default=None, help="also write the medians here")
    args = ap.parse_args()
    if args.json is not None:
        args.json = args.json.resolve()  # the bench runs inside its temporary project
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    with tempfile.TemporaryDirectory(prefix="dinoseg-e2e-") as tmp:
        project = write_project(Path(tmp) / "project")
        os.chdir(project)
        pool = Pool(folder=project)
        rows = in_process(project, args, pool)
        if {"sqlite", "browser"} & set(args.paths):
            rows.update(stack_cases(project, args, pool, None))
        if "browser-local" in args.paths:
            rows["browser-local"] = local_browser(project, args, pool)
        if "redis" in args.paths:
            redis = Redis.start()
            try:
                rows.update(stack_cases(project, args, pool, redis.url))
            finally:
                redis.stop()
    print(f"threads={args.threads} runs={args.runs} load={os.getloadavg()[0]:.1f}; seconds, "
          "median; (ratio to the in-process predictor); cells = queries/support")
    print(table(rows))
    dump([{"path": p, **c} for p, c in rows.items()], args.json)


if __name__ == "__main__":
    main()

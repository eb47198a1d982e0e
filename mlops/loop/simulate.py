"""One simulation: every (strategy, seed) in a fresh home and project, rounds, report.

Each run gets its own ``DINOSEG_HOME`` (uploads, results, support memory, MLflow store) and its
own project (the derived base, params, the simulation pipeline), so strategies and seeds never
share labels or models; the support memory of the base is built once and copied (the build is
a pure function of the labels). Every round is logged to MLflow (experiment ``dinoseg-loop``,
one run per strategy and seed, metrics by round) and ``report.json`` is rewritten after each.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlops.loop.report import plot_curve, write_report
from mlops.loop.rounds import Driver, run_rounds
from mlops.loop.scenario import Scenario

log = logging.getLogger("mlops.loop")


@dataclass
class Settings:
    """What ``dinoseg loop simulate`` was asked (see :mod:`mlops.loop.cli`)."""

    pool: Path
    pool_split: str
    test: Path
    test_split: str
    classes: list[str]
    rounds: int
    budget: int
    strategies: list[str]
    seeds: list[int]
    out: Path
    mode: str = "in-process"
    guard: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _environ(home: Path) -> dict[str, str | None]:
    """Point this process at ``home`` (returns what to restore)."""
    keys = ("DINOSEG_HOME", "MLFLOW_TRACKING_URI", "DINOSEG_PIPELINE_RUN")
    before = {k: os.environ.get(k) for k in keys}
    os.environ["DINOSEG_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.pop("DINOSEG_PIPELINE_RUN", None)
    return before


def _restore(before: dict[str, str | None]) -> None:
    for k, v in before.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _log_round(run_name: str, row: dict[str, Any]) -> None:
    """The round as MLflow metrics of the run ``run_name`` (experiment ``dinoseg-loop``)."""
    from mlops import tracking

    client = tracking.client()
    exp = client.get_experiment_by_name("dinoseg-loop") or None
    exp_id = exp.experiment_id if exp else client.create_experiment("dinoseg-loop")
    runs = client.search_runs([exp_id], f"attributes.run_name = '{run_name}'")
    run_id = (runs[0].info.run_id if runs
              else client.create_run(exp_id, run_name=run_name).info.run_id)  # fmt: skip
    step = int(row["round"])
    for key in ("labels", "miou", "seconds"):
        if row.get(key) is not None:
            client.log_metric(run_id, key, float(row[key]), step=step)
    for part, score in row.get("parts", {}).items():
        if score["miou"] is not None:
            client.log_metric(run_id, f"miou_{part}", float(score["miou"]), step=step)
    for name, iou in row["class_iou"].items():
        if iou == iou:  # not NaN
            client.log_metric(run_id, f"iou_{name}", float(iou), step=step)


def run_all(settings: Settings, make_driver: Callable[[Scenario, Path], Driver]) -> dict:
    """Every strategy and seed (see the module docstring); returns the report."""
    out = settings.out
    report: dict[str, Any] = {
        "classes": settings.classes, "pool": f"{settings.pool}:{settings.pool_split}",
        "test": f"{settings.test}:{settings.test_split}", "mode": settings.mode,
        "settings": {"rounds": settings.rounds, "budget": settings.budget,
                     "seeds": settings.seeds, "guard": settings.guard,
                     "retrain": settings.extra.get("retrain", True)},
        "strategies": {s: [] for s in settings.strategies},
    }  # fmt: skip
    for seed in settings.seeds:
        scen = Scenario.load(settings.pool, settings.pool_split, settings.test,
                             settings.test_split, settings.classes, seed)  # fmt: skip
        for strategy in settings.strategies:
            _one_run(settings, scen, strategy, seed, make_driver, report)
    write_report(out, report)
    plot_curve(out, report)
    return report


def _one_run(settings: Settings, scen: Scenario, strategy: str, seed: int,
             make_driver: Callable[[Scenario, Path], Driver], report: dict[str, Any]) -> None:
    """The rounds of one strategy and seed in a fresh home and project."""
    from mlops.loop.project import write_project

    out, name = settings.out, f"{strategy}-seed{seed}"
    run = out / "runs" / name
    shutil.rmtree(run, ignore_errors=True)
    before = _environ(run / "home")
    try:
        project = write_project(run / "project", scen, settings.guard,
                                settings.extra.get("params"))  # fmt: skip
        _seed_memory(out, run / "home")
        t0 = time.monotonic()
        driver = make_driver(scen, project)
        _keep_memory(out, run / "home")  # before the first label: the base's memory only

        def on_round(row: dict[str, Any]) -> None:
            report["strategies"][strategy].append({**row, "strategy": strategy})
            _log_round(name, row)
            write_report(out, report)

        try:
            run_rounds(driver, scen, strategy, settings.rounds, settings.budget, seed, on_round)
        finally:
            close = getattr(driver, "close", None)
            if close is not None:
                close()
        log.info("%s done in %.0f s", name, time.monotonic() - t0)
    finally:
        _restore(before)


def _seed_memory(out: Path, home: Path) -> None:
    """Start from the base's memory built by an earlier run (no label yet: same content)."""
    cached = out / "cache" / "memory-base"
    if (cached / "index.safetensors").is_file() and not (home / "memory").exists():
        shutil.copytree(cached, home / "memory")


def _keep_memory(out: Path, home: Path) -> None:
    """Keep the base's memory (built by the driver, before any label) for the next runs; kept
    after the rounds, it carried one run's labels into the next run's round 0."""
    cached = out / "cache" / "memory-base"
    if not cached.exists() and (home / "memory" / "index.safetensors").is_file():
        shutil.copytree(home / "memory", cached)

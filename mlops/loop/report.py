"""The loop's report: ``report.json`` and ``learning_curve.png``.

::

    {"classes": [...], "test": "DATA:SPLIT", "pool": "DATA:SPLIT", "mode": "real"|"in-process",
     "settings": {...},
     "strategies": {NAME: [{"round", "labels", "miou", "class_iou", "champion", "seconds",
                            "seed", "errors",
                            "parts": {"choose"|"tell": {"miou", "class_iou"}}}, ...]},
     "summary": {NAME: {"labels": [...], "miou_mean": [...], "miou_std": [...],
                        "parts": {"choose"|"tell": {"miou_mean", "miou_std"}}}}}

``miou`` is over the whole test split; ``parts`` splits it in two (``Scenario.test_part``):
a default is chosen on ``choose`` and reported on ``tell``.

Round 0 is the served system before any label. With several seeds, each seed's rounds are
listed (``seed``) and the summary averages them per round.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np


def summarise(strategies: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per strategy and round: labels, mean and standard deviation of mIoU over seeds."""
    out: dict[str, Any] = {}
    for name, rows in strategies.items():
        by_round: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            by_round[int(row["round"])].append(row)
        rounds = sorted(by_round)
        out[name] = {
            "rounds": rounds,
            "labels": [float(np.mean([r["labels"] for r in by_round[k]])) for k in rounds],
            **_mean_std([[r["miou"] for r in by_round[k]] for k in rounds]),
            "seeds": sorted({int(r.get("seed", 0)) for r in rows}),
        }
        parts = sorted({p for r in rows for p in r.get("parts", {})})
        if parts:  # the test split's parts: the one that chooses, the one that tells
            out[name]["parts"] = {p: _mean_std([[r.get("parts", {}).get(p, {}).get("miou")
                                                 for r in by_round[k]] for k in rounds])
                                  for p in parts}  # fmt: skip
    return out


def _mean_std(per_round: list[list[float | None]]) -> dict[str, list[float | None]]:
    """Mean and standard deviation over seeds of each round's figures (None left out)."""
    kept = [[v for v in vs if v is not None] for vs in per_round]
    return {"miou_mean": [float(np.mean(m)) if m else None for m in kept],
            "miou_std": [float(np.std(m)) if m else None for m in kept]}  # fmt: skip


def merge_reports(paths: list[Path]) -> dict[str, Any]:
    """Reports of runs made separately (e.g. one seed each, in parallel) -> one report: the
    rows of every strategy, the settings' seeds joined. The runs must share classes, pool,
    test split and mode (an ``InputError`` says which differs)."""
    from dinoseg.io import InputError

    if not paths:
        raise InputError("loop merge needs at least one report.json")
    reports = []
    for path in paths:
        try:
            reports.append(json.loads(Path(path).read_text()))
        except (OSError, ValueError) as e:
            raise InputError(f"{path}: not a readable loop report ({e})") from e
    first = reports[0]
    for path, rep in zip(paths[1:], reports[1:], strict=True):
        for key in ("classes", "pool", "test", "mode"):
            if rep.get(key) != first.get(key):
                raise InputError(f"{path}: {key} {rep.get(key)!r} differs from "
                                 f"{paths[0]}'s {first.get(key)!r}")  # fmt: skip
    merged = {k: v for k, v in first.items() if k not in ("strategies", "summary")}
    merged["strategies"] = defaultdict(list)
    seeds: set[int] = set()
    for rep in reports:
        for name, rows in rep["strategies"].items():
            merged["strategies"][name] += rows
            seeds |= {int(r.get("seed", 0)) for r in rows}
    merged["strategies"] = dict(merged["strategies"])
    merged["settings"] = {**first.get("settings", {}), "seeds": sorted(seeds)}
    return merged


def write_report(out: Path, report: dict[str, Any]) -> Path:
    """Write ``out/report.json`` (atomically) with its summary; returns the path."""
    out.mkdir(parents=True, exist_ok=True)
    report = {**report, "summary": summarise(report["strategies"])}
    path = out / "report.json"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(report, indent=1))
    os.replace(tmp, path)
    return path


def plot_curve(out: Path, report: dict[str, Any]) -> Path:
    """``out/learning_curve.png``: test mIoU against labels, one line per strategy (mean over
    seeds, a band of one standard deviation)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summarise(report["strategies"])
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for name, s in summary.items():
        x = np.asarray(s["labels"], float)
        y = np.asarray([np.nan if v is None else v for v in s["miou_mean"]], float)
        sd = np.asarray([0.0 if v is None else v for v in s["miou_std"]], float)
        ax.plot(x, y, marker="o", label=f"{name} ({len(s['seeds'])} seed(s))")
        ax.fill_between(x, y - sd, y + sd, alpha=0.15)
    ax.set_xlabel("labels (annotated results)")
    ax.set_ylabel(f"test mIoU, {', '.join(report['classes'])}")
    test = Path(str(report.get("test", ""))).name  # the dataset's name and split, not a path
    ax.set_title(f"Active-learning loop ({report.get('mode', '?')}): test {test}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "learning_curve.png"
    fig.savefig(path)
    plt.close(fig)
    return path

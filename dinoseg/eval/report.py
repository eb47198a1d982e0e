"""Reports of an evaluation: the side-by-side text table and the files ``dinoseg eval`` writes.

:func:`write_outputs` writes the report JSON to ``out`` and PNG plots beside it
(:mod:`dinoseg.eval.plots`): ``<stem>_class_iou.png``, ``<stem>_confidence.png`` and
``<stem>_example_<i>.png``; the report lists them under ``"plots"``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dinoseg.eval.plots import plot_class_iou, plot_confidence, plot_example

if TYPE_CHECKING:
    from dinoseg.eval.protocol import EvalResult


def write_outputs(result: EvalResult, out: Path) -> list[Path]:
    """Write the plots beside ``out`` and the report (listing them) to ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    stem = out.with_suffix("")
    plots = [
        plot_class_iou(result.report, Path(f"{stem}_class_iou.png")),
        plot_confidence(result.report, Path(f"{stem}_confidence.png")),
    ]
    names = list(result.report["models"])
    for j, ex in enumerate(result.examples):
        plots.append(plot_example(ex, names, Path(f"{stem}_example_{j}.png")))
    result.report["plots"] = [p.name for p in plots]
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result.report, indent=1) + "\n", encoding="utf-8")
    tmp.replace(out)
    return [out, *plots]


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def format_table(report: Mapping[str, Any]) -> str:
    """Side-by-side text table of a report: per-class IoU, other metrics, timing, then mIoU and
    FB-IoU as the last two lines."""
    models = report["models"]
    width = max(12, *(len(m) for m in models))
    header = f"{'':<22}" + "".join(f"{m:>{width + 2}}" for m in models)
    lines = [header, "-" * len(header)]

    def row(label: str, values: Iterable[str]) -> None:
        lines.append(f"{label:<22}" + "".join(f"{v:>{width + 2}}" for v in values))

    class_ids = sorted({int(c) for m in models.values() for c in m["metrics"]["per_class"]})
    for c in class_ids:
        entries = [m["metrics"]["per_class"].get(str(c)) for m in models.values()]
        label = next(e["name"] for e in entries if e is not None)
        row(f"IoU {label}", (_fmt(e["iou"] if e else None) for e in entries))
    for key, label in (("boundary_f1", "boundary F1"), ("pixel_accuracy", "pixel accuracy")):
        row(label, (_fmt(m["metrics"][key]) for m in models.values()))
    for key, label in (("encoder", "encoder ms/episode"), ("model", "model ms/episode")):
        per_ep = (m["timing"][f"{key}_seconds_per_episode"] * 1000 for m in models.values())
        row(label, (_fmt(v) for v in per_ep))
    row("mIoU", (_fmt(m["metrics"]["miou"]) for m in models.values()))
    row("FB-IoU", (_fmt(m["metrics"]["fb_iou"]) for m in models.values()))
    return "\n".join(lines)

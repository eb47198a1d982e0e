"""Plots of an evaluation report (matplotlib, imported when drawing): per-class IoU bars,
episode-confidence histograms, example overlays."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from dinoseg.eval.protocol import Example


def plot_class_iou(report: dict[str, Any], path: Path) -> Path:
    """Grouped bars: per-class IoU (%), one bar per model."""
    from matplotlib.figure import Figure

    models = report["models"]
    ids = sorted({int(c) for m in models.values() for c in m["metrics"]["per_class"]})
    labels = [report["settings"]["class_names"].get(str(c), str(c)) for c in ids]
    fig = Figure(figsize=(max(6.0, 0.9 * len(ids) * max(1, len(models)) ** 0.5), 4.0))
    ax = fig.add_subplot()
    width = 0.8 / len(models)
    for j, (name, m) in enumerate(models.items()):
        per_class = m["metrics"]["per_class"]
        values = [(per_class.get(str(c)) or {}).get("iou") or 0.0 for c in ids]
        x = np.arange(len(ids)) + (j - (len(models) - 1) / 2) * width
        ax.bar(x, values, width, label=f"{name} (mIoU {m['metrics']['miou'] or 0:.1f})")
    ax.set_xticks(np.arange(len(ids)), labels, rotation=30, ha="right")
    ax.set_ylabel("IoU (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def plot_confidence(report: dict[str, Any], path: Path) -> Path:
    """Per model: histogram of episode confidence, correct (IoU >= threshold) vs not."""
    from matplotlib.figure import Figure

    models = report["models"]
    cut = report["calibration"]["correct_iou"]
    fig = Figure(figsize=(4.0 * len(models), 3.2))
    for j, (name, m) in enumerate(models.items()):
        ax = fig.add_subplot(1, len(models), j + 1)
        conf = np.array([e["confidence"] for e in m["episodes"]], dtype=float)
        ok = np.array([(e["iou"] or 0.0) >= cut for e in m["episodes"]], dtype=bool)
        ax.hist(conf[ok], bins=20, range=(0.0, 1.0), alpha=0.6, label=f"IoU >= {cut} ({ok.sum()})")
        ax.hist(
            conf[~ok], bins=20, range=(0.0, 1.0), alpha=0.6, label=f"IoU < {cut} ({(~ok).sum()})"
        )
        ax.set_title(name if len(name) < 40 else "..." + name[-37:], fontsize="small")
        ax.set_xlabel("confidence")
        ax.legend(fontsize="x-small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def plot_example(example: Example, model_names: list[str], path: Path) -> Path:
    """One row: support (mask) | query ground truth | each model's prediction."""
    from matplotlib.figure import Figure

    from dinoseg.visualize import overlay

    panels = [
        (overlay(example.support_image, example.support_mask), "support"),
        (overlay(example.query_image, example.query_mask == 1), "query GT"),
    ]
    panels += [(overlay(example.query_image, example.predictions[n]), n) for n in model_names]
    fig = Figure(figsize=(3.2 * len(panels), 3.0))
    for j, (image, title) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), j + 1)
        ax.imshow(image)
        ax.set_title(title if len(title) < 30 else "..." + title[-27:], fontsize="small")
        ax.axis("off")
    fig.suptitle(f"episode {example.episode}: {example.class_name}", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return path

"""``dinoseg eval``: several models on the same seeded episodes -> table, JSON report, plots.

The work is :func:`dinoseg.evaluate.evaluate`; this module checks arguments, builds the
predictors and writes ``--out`` (JSON) plus PNG plots beside it:
``<stem>_class_iou.png``, ``<stem>_confidence.png`` and ``<stem>_example_<i>.png``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from dinoseg.backbone import DEFAULT_BACKBONE
from dinoseg.data.folds import DEFAULT_MIN_AREA
from dinoseg.evaluate import DEFAULT_FOLDER_FOLDS, EvalResult, Example
from dinoseg.io import InputError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate few-shot models on seeded episodes")
    p.add_argument("--data", required=True, type=Path, help="dataset folder (with classes.json)")
    p.add_argument("--split", default="val", help="split sub-folder (default: val)")
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--fold",
        type=int,
        default=None,
        help="test the fold's novel classes (CamVid-3i, PASCAL-5i, else round-robin)",
    )
    which.add_argument("--classes", default=None, help="comma-separated class names or ids")
    p.add_argument(
        "--n-folds",
        type=int,
        default=DEFAULT_FOLDER_FOLDS,
        help=f"folds of a generic dataset (default: {DEFAULT_FOLDER_FOLDS})",
    )
    p.add_argument("--shots", type=int, default=1, help="support images per episode")
    p.add_argument("--episodes", type=int, default=1000, help="number of episodes")
    p.add_argument("--seed", type=int, default=0, help="episode seed")
    p.add_argument(
        "--model",
        action="append",
        default=None,
        metavar="SPEC",
        help="'prototype' or a checkpoint directory (repeat to compare models)",
    )
    p.add_argument(
        "--backbone",
        default=None,
        help=f"backbone spec (default: the checkpoint's, else {DEFAULT_BACKBONE})",
    )
    p.add_argument("--image-size", type=int, default=None, help="long side fed to the encoder")
    p.add_argument(
        "--min-area",
        type=float,
        default=DEFAULT_MIN_AREA,
        help=f"minimum class area as a fraction of the image (default {DEFAULT_MIN_AREA})",
    )
    p.add_argument("--out", required=True, type=Path, help="report JSON path (plots go beside it)")
    p.add_argument(
        "--feature-cache",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep backbone features on disk here, shared by later runs",
    )
    p.add_argument("--cache-gb", type=float, default=2.0, help="in-memory feature cache budget")
    p.add_argument("--examples", type=int, default=3, help="example overlays to draw")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _classes(args: argparse.Namespace, dataset: Any) -> tuple[list[int] | None, dict[str, Any]]:
    """Episode classes from --fold / --classes (None = all) and their description."""
    from dinoseg.evaluate import dataset_fold, parse_classes

    if args.fold is not None:
        fold = dataset_fold(dataset.class_names, dataset.class_ids, args.fold, n_folds=args.n_folds)
        info = {
            "benchmark": fold.benchmark,
            "index": fold.index,
            "n_folds": fold.n_folds,
            "novel": list(fold.novel),
        }
        return list(fold.novel), {"fold": info}
    if args.classes is not None:
        return parse_classes(args.classes, dataset.class_names), {"fold": None}
    return None, {"fold": None}


def _check_args(args: argparse.Namespace) -> list[str]:
    """Model specs (default prototype); rejects bad paths and values before any work."""
    if not args.data.is_dir():
        raise InputError(f"--data {args.data}: no such dataset folder")
    if args.out.is_dir() or args.out.suffix.lower() != ".json":
        raise InputError(f"--out {args.out}: give a report file name ending in .json")
    if args.image_size is not None and args.image_size < 14:
        raise InputError(f"--image-size {args.image_size}: give at least 14 px")
    if args.cache_gb < 0 or args.examples < 0:
        raise InputError("--cache-gb and --examples must be 0 or more")
    specs = list(args.model or ["prototype"])
    twice = sorted({s for s in specs if specs.count(s) > 1})
    if twice:
        raise InputError(f"--model {', '.join(twice)} given twice; each model once")
    return specs


def _load_models(specs: list[str], args: argparse.Namespace) -> dict[str, Any]:
    from dinoseg.predictor import load_predictor

    models = {}
    for spec in specs:
        try:
            models[spec] = load_predictor(spec, backbone=args.backbone, image_size=args.image_size)
        except InputError:
            raise
        except ValueError as e:  # e.g. a backbone spec load_backbone does not understand
            raise InputError(f"--model {spec}: {e}") from e
    return models


def run(args: argparse.Namespace) -> int:
    from dinoseg.data import EpisodeSampler, open_dataset
    from dinoseg.evaluate import evaluate, format_table
    from dinoseg.feature_cache import FeatureCache

    specs = _check_args(args)
    dataset = open_dataset(args.data, args.split)
    classes, fold = _classes(args, dataset)
    sampler = EpisodeSampler(
        dataset,
        classes,
        shots=args.shots,
        n_episodes=args.episodes,
        seed=args.seed,
        min_area=args.min_area,
    )
    models = _load_models(specs, args)
    cache = FeatureCache(max_bytes=int(args.cache_gb * 1024**3), disk_dir=args.feature_cache)
    settings = {
        "data": str(dataset.root),
        "split": args.split,
        **fold,
        "requested_classes": args.classes,
        "requested_image_size": args.image_size,
        "requested_backbone": args.backbone,
        "models": specs,
        "feature_cache_dir": str(args.feature_cache) if args.feature_cache else None,
    }
    result = evaluate(
        models,
        sampler,
        class_names=dataset.class_names,
        cache=cache,
        settings=settings,
        n_examples=args.examples,
        progress=not args.no_progress,
    )
    for spec in specs:
        result.report["models"][spec]["spec"] = spec
    write_outputs(result, args.out)
    print(format_table(result.report), flush=True)
    print(f"report: {args.out}", flush=True)
    return 0


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

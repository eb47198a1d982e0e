"""``dinoseg eval``: several models on the same seeded episodes -> table, JSON report, plots.

Arguments only: this module checks them, opens the dataset, builds the predictors and hands over
to :func:`dinoseg.eval.protocol.evaluate`; :func:`dinoseg.eval.report.write_outputs` writes
``--out`` (JSON) and the plots beside it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dinoseg.backbone import DEFAULT_BACKBONE
from dinoseg.data.folds import DEFAULT_FOLDER_FOLDS, DEFAULT_MIN_AREA
from dinoseg.device import DEVICE_HELP, check_device_name
from dinoseg.io import InputError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate few-shot models on seeded episodes")
    _add_episode_args(p)
    _add_model_args(p)
    p.add_argument(
        "--min-area",
        type=float,
        default=DEFAULT_MIN_AREA,
        help=f"minimum class area as a fraction of the image (default {DEFAULT_MIN_AREA})",
    )
    _add_output_args(p)
    _add_memory_args(p)
    p.add_argument("--examples", type=int, default=3, help="example overlays to draw")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _add_episode_args(p: argparse.ArgumentParser) -> None:
    """The dataset, its classes and the episodes drawn from it."""
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


def _add_model_args(p: argparse.ArgumentParser) -> None:
    """The models compared and where they run."""
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
    p.add_argument("--device", default=None, help=DEVICE_HELP)


def _add_output_args(p: argparse.ArgumentParser) -> None:
    """The report and the feature cache."""
    p.add_argument("--out", required=True, type=Path, help="report JSON path (plots go beside it)")
    p.add_argument(
        "--feature-cache",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep backbone features on disk here, shared by later runs",
    )
    p.add_argument("--cache-gb", type=float, default=2.0, help="in-memory feature cache budget")


def _add_memory_args(p: argparse.ArgumentParser) -> None:
    """The support memory each model also runs with."""
    p.add_argument(
        "--memory",
        default=None,
        metavar="DATA[:SPLIT]|DIR",
        help="support memory: a memory directory, or a dataset split built into one "
        "(--memory-dir); each model then also runs with it, on the same episodes",
    )
    p.add_argument(
        "--memory-k",
        action="append",
        default=None,
        metavar="K",
        help="labelled images retrieved per query, or 'all' (repeatable; default 30)",
    )
    p.add_argument(
        "--memory-dir",
        type=Path,
        default=None,
        help="where a --memory DATA:SPLIT is built (default: under $DINOSEG_CACHE/memory)",
    )


def _classes(args: argparse.Namespace, dataset: Any) -> tuple[list[int] | None, dict[str, Any]]:
    """Episode classes from --fold / --classes (None = all) and their description."""
    from dinoseg.data.folds import dataset_fold
    from dinoseg.eval.protocol import parse_classes

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
    check_device_name(args.device)  # before the dataset is read
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
            models[spec] = load_predictor(spec, backbone=args.backbone, image_size=args.image_size,
                                          device=args.device or "auto")
        except InputError:
            raise
        except ValueError as e:  # e.g. a backbone spec load_backbone does not understand
            raise InputError(f"--model {spec}: {e}") from e
    if args.memory is not None:
        models.update(_memory_models(models, args))
    return models


def memory_ks(values: list[str] | None) -> list[int | None]:
    """``--memory-k`` values -> retrieved images per query (``None`` = all); default [30]."""
    out: list[int | None] = []
    for v in values or ["30"]:
        if v.lower() == "all":
            out.append(None)
        elif v.isdigit():
            out.append(int(v))
        else:
            raise InputError(f"--memory-k {v}: give a whole number of images or 'all'")
    return list(dict.fromkeys(out))


def _memory_models(models: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """``<spec>+memory@K`` for every model and K: the same model and backbone with the memory."""
    from dinoseg.cli.memory import open_memory
    from dinoseg.memory.vote import MemoryMode
    from dinoseg.predictor import FewShotPredictor

    first = next(iter(models.values()))
    memory = open_memory(args.memory, first.backbone, args.image_size, args.memory_dir)
    out = {}
    for spec, base in models.items():
        for k in memory_ks(args.memory_k):
            p = FewShotPredictor(
                base.model, base.backbone, image_size=base.image_size,
                threshold=base.threshold, batch_size=base.batch_size, model_id=base.model_id,
                device=base.device,
            )  # fmt: skip
            p.attach_memory(memory, MemoryMode(images=k))
            out[f"{spec}+memory@{'all' if k is None else k}"] = p
    return out


def run(args: argparse.Namespace) -> int:
    from dinoseg.data import EpisodeSampler, open_dataset
    from dinoseg.eval.protocol import evaluate
    from dinoseg.eval.report import format_table, write_outputs
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
        "device": str(next(iter(models.values())).device),
        "models": specs,
        "feature_cache_dir": str(args.feature_cache) if args.feature_cache else None,
        "memory": args.memory,
        "memory_k": args.memory_k,
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
    for name, entry in result.report["models"].items():
        entry["spec"] = name.split("+memory@")[0]
    write_outputs(result, args.out)
    print(format_table(result.report), flush=True)
    print(f"report: {args.out}", flush=True)
    return 0

"""``dinoseg predict``: segment query images from K annotated supports."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from dinoseg.backbone import DEFAULT_BACKBONE
from dinoseg.device import DEVICE_HELP
from dinoseg.io import InputError, load_image, load_mask, save_mask_png

if TYPE_CHECKING:
    from dinoseg.predictor import FewShotPredictor, Prediction


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="segment queries from annotated support images")
    _add_io_args(p)
    _add_model_args(p)
    p.add_argument(
        "--class-id",
        type=int,
        default=None,
        help="masks are class-index PNGs: this class is the foreground",
    )
    p.add_argument("--image-size", type=int, default=None, help="long side fed to the encoder")
    p.add_argument("--threshold", type=float, default=None, help="foreground probability cut")
    p.add_argument("--overlay", action="store_true", help="also write <stem>_overlay.png")
    p.add_argument("--device", default=None, help=DEVICE_HELP)
    _add_memory_args(p)


def _add_io_args(p: argparse.ArgumentParser) -> None:
    """The supports, the queries and the output folder."""
    p.add_argument(
        "--support",
        nargs=2,
        action="append",
        metavar=("IMG", "MASK"),
        required=True,
        help="a support image and its mask (repeat for K shots)",
    )
    p.add_argument(
        "--query",
        nargs="+",
        action="append",
        metavar="IMG",
        required=True,
        help="query image(s) to segment (repeatable)",
    )
    p.add_argument("--out", required=True, type=Path, help="output directory")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    """The model and its backbone."""
    p.add_argument(
        "--model",
        default="prototype",
        help="'prototype' or a checkpoint directory (default: prototype)",
    )
    p.add_argument(
        "--backbone",
        default=None,
        help=f"backbone spec (default: the checkpoint's, else {DEFAULT_BACKBONE})",
    )


def _add_memory_args(p: argparse.ArgumentParser) -> None:
    """The class the supports mark and the support memory of that class."""
    p.add_argument(
        "--class-name",
        default=None,
        metavar="NAME",
        help="what the support masks mark (e.g. road); with --memory its labelled images help",
    )
    p.add_argument(
        "--memory",
        default=None,
        metavar="DIR|DATA[:SPLIT]",
        help="support memory (dinoseg memory build), or a dataset split to build one from",
    )
    p.add_argument(
        "--memory-k",
        default="30",
        metavar="K",
        help="labelled images retrieved per query, or 'all' (default 30)",
    )


def _out_names(queries: list[Path]) -> list[str]:
    """Unique output stems (``a``, ``a-2`` ...) for queries that share a file stem."""
    seen: dict[str, int] = {}
    names = []
    for q in queries:
        n = seen.get(q.stem, 0) + 1
        seen[q.stem] = n
        names.append(q.stem if n == 1 else f"{q.stem}-{n}")
    return names


def _load_supports(args: argparse.Namespace) -> list[tuple[np.ndarray, np.ndarray]]:
    """``--support`` pairs: (H, W, 3) uint8 image and (H, W) bool mask (``--class-id``: the
    class of a class-index mask that is the foreground)."""
    supports = []
    for img_path, mask_path in args.support:
        img = load_image(img_path)
        supports.append(
            (img, load_mask(mask_path, image_size=img.shape[:2], class_id=args.class_id))
        )
    return supports


def _attach_memory(predictor: FewShotPredictor, args: argparse.Namespace) -> None:
    """``--memory`` (opened, or built from a dataset split) with ``--memory-k`` images."""
    from dinoseg.cli.evaluate import memory_ks
    from dinoseg.cli.memory import open_memory
    from dinoseg.memory.vote import MemoryMode

    memory = open_memory(args.memory, predictor.backbone, args.image_size, None)
    predictor.attach_memory(memory, MemoryMode(images=memory_ks([args.memory_k])[0]))


def _write_query(args: argparse.Namespace, path: Path, name: str, img: np.ndarray,
                 pred: Prediction, model_id: str, shots: int) -> dict[str, Any]:  # fmt: skip
    """Write one query's mask (and ``--overlay``) into ``--out``; its JSON record."""
    from dinoseg.visualize import overlay

    mask_path = args.out / f"{name}.png"
    save_mask_png(pred.mask, mask_path)
    record = {
        "query": str(path),
        "mask": str(mask_path),
        "confidence": round(pred.confidence, 4),
        "foreground_fraction": round(float(np.mean(pred.mask)), 4),
        "model": model_id,
        "shots": shots,
    }
    if args.class_name:
        record["class_name"] = args.class_name
    if args.memory is not None:
        record["memory_images"] = len(pred.retrieved)
    if args.overlay:
        ov = args.out / f"{name}_overlay.png"
        Image.fromarray(overlay(img, pred.mask)).save(ov)
        record["overlay"] = str(ov)
    return record


def run(args: argparse.Namespace) -> int:
    from dinoseg.predictor import load_predictor

    supports = _load_supports(args)
    queries = [Path(q) for group in args.query for q in group]
    images = [load_image(q) for q in queries]  # validate every input before any work
    if args.out.exists() and not args.out.is_dir():
        raise InputError(f"--out {args.out} exists and is not a directory")
    if args.memory is not None and not args.class_name:
        raise InputError("--memory needs --class-name (the class the support masks mark)")
    predictor = load_predictor(
        args.model, backbone=args.backbone, image_size=args.image_size, threshold=args.threshold,
        device=args.device or "auto",
    )
    if args.memory is not None:
        _attach_memory(predictor, args)
    predictor.set_support(
        [s[0] for s in supports], [s[1] for s in supports], class_name=args.class_name
    )
    args.out.mkdir(parents=True, exist_ok=True)
    for path, name, img, pred in zip(
        queries, _out_names(queries), images, predictor.predict(images), strict=True
    ):
        record = _write_query(args, path, name, img, pred, predictor.model_id, len(supports))
        print(json.dumps(record), flush=True)
    return 0

"""``dinoseg export --format onnx --out DIR``: the frozen encoder as ONNX (any input size).

The backbone and layers are the model's (``--model``: prototype or a checkpoint, whose
backbone and layers it was trained with), or ``--backbone``. Prints, per file, the largest
absolute difference to torch on a random input of another size than the traced one. Use the
export as the backbone spec ``onnx:DIR`` (``onnx:DIR/backbone.int8.onnx`` for int8).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dinoseg.io import InputError


def _size(text: str) -> tuple[int, int]:
    """``"336x448"`` (H x W) or ``"224"`` -> (H, W)."""
    parts = text.lower().split("x")
    if len(parts) not in (1, 2) or not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"{text!r}: give HxW in px, e.g. 336x448")
    h, w = int(parts[0]), int(parts[-1])
    return h, w


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export the frozen encoder to ONNX (ONNX Runtime, int8)")
    p.add_argument("--format", default="onnx", choices=["onnx"], help="export format")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--model", default="prototype",
                   help="prototype | knn | checkpoint dir: its backbone and layers")  # fmt: skip
    p.add_argument("--backbone", default=None, help="backbone spec (default: the model's)")
    p.add_argument("--int8", action="store_true",
                   help="also write backbone.int8.onnx (dynamic int8 quantisation)")  # fmt: skip
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17)")
    p.add_argument("--trace-size", type=_size, default=None, metavar="HxW",
                   help="traced input size (default 224x224); any size runs later")  # fmt: skip
    p.add_argument("--verify-size", type=_size, default=None, metavar="HxW",
                   help="size of the check against torch (default 336x448)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from dinoseg.export import (
        DEFAULT_OPSET,
        DEFAULT_TRACE_SIZE,
        DEFAULT_VERIFY_SIZE,
        export_backbone,
    )
    from dinoseg.predictor import load_predictor

    if args.out.exists() and not args.out.is_dir():
        raise InputError(f"--out {args.out}: exists and is not a directory")
    if args.backbone and args.backbone.startswith("onnx:"):
        raise InputError("--backbone: give the torch backbone to export, not an ONNX one")
    try:
        predictor = load_predictor(args.model, backbone=args.backbone, device="cpu")
    except ValueError as e:
        raise InputError(f"--model {args.model}: {e}") from e
    bb = predictor.backbone
    result = export_backbone(
        bb, args.out, int8=args.int8, opset=args.opset or DEFAULT_OPSET,
        trace_size=args.trace_size or DEFAULT_TRACE_SIZE,
        verify_size=args.verify_size or DEFAULT_VERIFY_SIZE,
    )  # fmt: skip
    print(f"exported {bb.spec} layers {list(bb.layers)} to {result.out_dir}")
    for name, info in result.files.items():
        h, w = info["verify_size"]
        print(f"  {name:<20} {info['precision']:<5} max abs diff vs torch "
              f"{info['max_abs_diff']:.2e} (mean {info['mean_abs_diff']:.2e}, random "
              f"2x3x{h}x{w})")  # fmt: skip
    print(f"  metadata: {result.metadata}")
    print(f"use it: --backbone onnx:{result.out_dir}")
    return 0

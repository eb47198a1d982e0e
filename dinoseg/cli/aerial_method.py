"""The method options of ``dinoseg aerial map`` and ``dinoseg aerial eval`` and the config they
resolve to (shared by :mod:`dinoseg.cli.aerial` and :mod:`dinoseg.cli.aerial_verbs`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

FLAGS = (
    "method", "model", "backbone", "tile", "overlap", "image_size", "k", "sam_model",
    "sam_checkpoint", "segformer", "pixel_size", "building_height", "height_rule",
    "unknown_threshold", "min_area", "smooth_iterations", "device",
)


def add_method_args(p: argparse.ArgumentParser) -> None:
    """The method options ``map`` and ``eval`` share."""
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="any AerialConfig field")
    p.add_argument(
        "--support", nargs=2, action="append", metavar=("IMG", "MASK"), default=[],
        help="an annotated tile and its class-index mask PNG (255 = unlabelled); repeatable",
    )
    p.add_argument("--classes", type=Path, default=None,
                   help="classes.json naming the mask values (default: land, water, building, "
                   "vegetation, road - the Dubai dataset's)")
    p.add_argument("--method", default=None,
                   help="fewshot (default) | kmeans | sam-match | segformer | head")
    p.add_argument("--device", default=None, help="where the DINOv2 encoder runs: auto (CUDA "
                   "when present, else CPU) | cpu | cuda | cuda:N | mps (default: auto)")
    p.add_argument("--refine", action="store_true", help="refine boundaries with SAM")
    p.add_argument("--params", type=Path, default=None, help="YAML params file")
    p.add_argument("--model", default=None, help="few-shot model: prototype | checkpoint dir; "
                   "head: the head checkpoint of `dinoseg aerial train` (dir or models:/...)")
    p.add_argument("--backbone", default=None, help="DINOv2 spec (default packaged:dinov2-s)")
    p.add_argument("--tile", type=int, default=None, help="tile size in px (default 518)")
    p.add_argument("--overlap", type=int, default=None, help="tile overlap in px (default 96)")
    p.add_argument("--image-size", type=int, default=None,
                   help="encoder px per tile side (default: the tile size)")
    p.add_argument("--k", type=int, default=None, help="k-means clusters (default 8)")
    p.add_argument("--sam-model", default=None, help="auto|litemedsam|mobilesam|sam_vit_b|l|h")
    p.add_argument("--sam-checkpoint", default=None, help="SAM weights file (real SAM)")
    p.add_argument("--segformer", default=None, help="SegFormer hub id or local directory")
    p.add_argument("--pixel-size", type=float, default=None, help="metres per pixel (0.5)")
    p.add_argument("--building-height", type=float, default=None, help="metres (10)")
    p.add_argument("--height-rule", choices=("fixed", "area"), default=None)
    p.add_argument("--unknown-threshold", type=float, default=None)
    p.add_argument("--min-area", type=int, default=None, help="smallest segment kept (px)")
    p.add_argument("--smooth-iterations", type=int, default=None)


def method_config(args: argparse.Namespace, image: Path | None = None
                  ) -> tuple[Any, list[str], Any]:  # fmt: skip
    """The resolved :class:`AerialConfig`, the class names and the supports (checked) of the
    ``map`` / ``eval`` flags; ``image`` is checked before the supports are read."""
    from dinoseg.aerial.build import check_method, check_supports
    from dinoseg.aerial.categories import DEFAULT_CLASS_NAMES, read_class_names
    from dinoseg.aerial.config import AerialConfig
    from dinoseg.aerial.pipeline import load_supports
    from dinoseg.config import resolve_cli

    cfg = resolve_cli(AerialConfig, args, "aerial", FLAGS)
    if args.refine:
        cfg.refine = True
    check_method(cfg.method)
    cfg.check()
    names = read_class_names(args.classes) if args.classes else list(DEFAULT_CLASS_NAMES)
    if image is not None:
        from dinoseg.aerial.reader import open_large_image

        open_large_image(image, max_pixels=cfg.max_pixels)  # before loading anything
    supports = load_supports(args.support, names) if args.support else None
    check_supports(cfg.method, 0 if supports is None else len(supports.images),
                   "--support IMG MASK")
    return cfg, names, supports

"""``dinoseg aerial``: an aerial photo to a city map (class raster, coloured map, stats, 3D)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

FLAGS = (
    "method", "model", "backbone", "tile", "overlap", "image_size", "k", "sam_model",
    "sam_checkpoint", "segformer", "pixel_size", "building_height", "height_rule",
    "unknown_threshold", "min_area", "smooth_iterations",
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "aerial",
        help="segment an aerial photo of any size into a city map and a 3D model",
        description="Config layers: code defaults <- --params FILE (section 'aerial') <- flags "
        "<- KEY=VALUE overrides (any AerialConfig field). Writes OUT/classes.png, map.png, "
        "stats.json, city.glb and resolved_config.json.",
    )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="any AerialConfig field")
    p.add_argument("--image", required=True, type=Path, help="the aerial photo (up to 150 MP)")
    p.add_argument(
        "--support", nargs=2, action="append", metavar=("IMG", "MASK"), default=[],
        help="an annotated tile and its class-index mask PNG (255 = unlabelled); repeatable",
    )
    p.add_argument("--classes", type=Path, default=None,
                   help="classes.json naming the mask values (default: land, water, building, "
                   "vegetation, road - the Dubai dataset's)")
    p.add_argument("--method", default=None,
                   help="fewshot (default) | kmeans | sam-match | segformer")
    p.add_argument("--refine", action="store_true", help="refine boundaries with SAM")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--params", type=Path, default=None, help="YAML params file")
    p.add_argument("--model", default=None, help="few-shot model: prototype | checkpoint dir")
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


def run(args: argparse.Namespace) -> int:
    from dinoseg.aerial.build import check_method
    from dinoseg.aerial.categories import DEFAULT_CLASS_NAMES, read_class_names
    from dinoseg.aerial.config import AerialConfig
    from dinoseg.aerial.pipeline import load_supports, run_aerial
    from dinoseg.aerial.reader import open_large_image
    from dinoseg.config import resolve_cli
    from dinoseg.io import InputError

    cfg = resolve_cli(AerialConfig, args, "aerial", FLAGS)
    if args.refine:
        cfg.refine = True
    check_method(cfg.method)
    cfg.check()
    if args.out.exists() and not args.out.is_dir():
        raise InputError(f"--out {args.out} exists and is not a directory")
    names = read_class_names(args.classes) if args.classes else list(DEFAULT_CLASS_NAMES)
    open_large_image(args.image, max_pixels=cfg.max_pixels)  # validate before loading models
    supports = load_supports(args.support, names) if args.support else None
    if supports is None and cfg.method in ("fewshot", "sam-match"):
        raise InputError(f"--method {cfg.method} needs at least one --support IMG MASK")

    def progress(stage: str, done: int, total: int) -> None:
        print(f"\r{stage}: {done}/{total} tiles", end="", file=sys.stderr, flush=True)
        if done == total:
            print(file=sys.stderr)

    stats = run_aerial(args.image, supports, names, cfg, args.out, progress=progress)
    summary = {
        "out": str(args.out),
        "method": stats["method"],
        "classes": {n: c["fraction"] for n, c in stats["classes"].items()},
        "buildings": stats["buildings"],
        "seconds_per_megapixel": stats["seconds_per_megapixel"],
    }
    print(json.dumps(summary))
    return 0

"""``dinoseg aerial [map] | train | eval``: an aerial photo to a city map (class raster,
coloured map, stats, 3D); a supervised head for it; a method scored on a labelled folder.

``map`` is the default verb (``dinoseg aerial --image x ...``); ``train`` and ``eval`` live in
:mod:`dinoseg.cli.aerial_verbs`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

VERBS = ("map", "train", "eval")
DEFAULT_VERB = "map"


def add_parser(sub: argparse._SubParsersAction) -> None:
    from dinoseg.cli.aerial_method import add_method_args
    from dinoseg.cli.aerial_verbs import add_eval, add_train

    a = sub.add_parser(
        "aerial", help="aerial photos to city maps: map (default) | train | eval",
        description="dinoseg aerial [map] --image PHOTO --out DIR: a city map; dinoseg aerial "
        "train: a supervised head for it; dinoseg aerial eval: a method on a labelled folder.",
    )  # fmt: skip
    verbs = a.add_subparsers(dest="verb", required=True, metavar="VERB")
    p = verbs.add_parser(
        "map",
        help="segment an aerial photo of any size into a city map and a 3D model (the default)",
        description="Config layers: code defaults <- --params FILE (section 'aerial') <- flags "
        "<- KEY=VALUE overrides (any AerialConfig field). Writes OUT/classes.png, map.png, "
        "stats.json, city.glb and resolved_config.json.",
    )
    p.add_argument("--image", required=True, type=Path, help="the aerial photo (up to 150 MP)")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    add_method_args(p)
    add_train(verbs)
    add_eval(verbs)


def run(args: argparse.Namespace) -> int:
    if args.verb != "map":
        from dinoseg.cli.aerial_verbs import run_verb

        return run_verb(args)
    from dinoseg.aerial.pipeline import run_aerial
    from dinoseg.cli.aerial_method import method_config
    from dinoseg.io import InputError

    if args.out.exists() and not args.out.is_dir():
        raise InputError(f"--out {args.out} exists and is not a directory")
    cfg, names, supports = method_config(args, args.image)

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

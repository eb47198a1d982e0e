"""Supervised aerial heads vs the other methods on the same Dubai val tiles (docs/aerial.md tables).

Every number comes from ``dinoseg aerial train`` / ``dinoseg aerial eval`` run as subprocesses
(``OMP_NUM_THREADS`` = ``--threads``), on the val images of bench/aerial_compare.py (parts
001/005/009 of val tiles 4, 5 and 6; ``--images all``: the 27) with its supports (train tiles
showing every class, seeded). Training CPU and wall time come from the child's resource usage.

    python bench/aerial_heads.py train                # the head variants -> runs/aerial_heads/
    python bench/aerial_heads.py eval [--refine] [--views 8]  # their reports
    python bench/aerial_heads.py baselines [--baselines fewshot-5]  # few-shot / k-means / SAM
    python bench/aerial_heads.py curve                # mIoU vs labelled tiles: head vs few-shot
    python bench/aerial_heads.py scene [--views 8]    # + labelled images of the val scenes
    python bench/aerial_heads.py scene --scene-n 4 --scene-kind mlp [--images gate] [--seed 1]
    python bench/aerial_heads.py table                # the docs/aerial.md tables from the reports
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from aerial_compare import DATA, SUBSET, pick_supports

OUT = Path("runs/aerial_heads")
#: the val parts the aerial gate scores (aerial/params.yaml): where options are chosen
GATE = ("part_003", "part_007")
AUG = "crop,rotate,jitter,blur"
VARIANTS: dict[str, dict[str, Any]] = {  # name -> AerialTrainConfig overrides
    "linear": {"strategy": "frozen", "kind": "linear"},
    "linear+aug": {"strategy": "frozen", "kind": "linear", "augment": AUG},
    # inverse-frequency class weights (vegetation 4.9 % of the labels) / the last block read too
    "linear+aug+bal1": {"strategy": "frozen", "kind": "linear", "augment": AUG, "balance": 1.0},
    # tiles encoded at 1.5x their ground resolution (784 px per 518 px tile): finer patches
    "linear+aug+bal1+s784": {"strategy": "frozen", "kind": "linear", "augment": AUG,
                             "balance": 1.0, "image_size": 784},
    # more augmented views per image (12, 24 instead of 4), and stronger ones (scale, colour:
    # strength 0.4 instead of 0.25)
    "linear+aug+bal1+v12": {"strategy": "frozen", "kind": "linear", "augment": AUG,
                            "balance": 1.0, "views": 12},
    "linear+aug+bal1+v24": {"strategy": "frozen", "kind": "linear", "augment": AUG,
                            "balance": 1.0, "views": 24},
    # larger tiles (770 px = 55 patches, overlap 140): more context in each tile's attention
    "linear+aug+bal1+t770": {"strategy": "frozen", "kind": "linear", "augment": AUG,
                             "balance": 1.0, "tile": 770, "overlap": 140},
    "linear+aug+bal1+v12+s40": {"strategy": "frozen", "kind": "linear", "augment": AUG,
                                "balance": 1.0, "views": 12, "strength": 0.4},
    "linear+aug+bal1+s40": {"strategy": "frozen", "kind": "linear", "augment": AUG,
                            "balance": 1.0, "strength": 0.4},
    # every other block from 2 (2, 4, 6, 8, 10) instead of 6-10: earlier blocks' finer cues
    "linear+aug+bal1+s40+even": {"strategy": "frozen", "kind": "linear", "augment": AUG,
                                 "balance": 1.0, "strength": 0.4, "blocks": "2,4,6,8,10"},
    # the default recipe with an MLP head (1x1 -> GELU -> 1x1)
    "mlp+aug+bal1+s40": {"strategy": "frozen", "kind": "mlp", "augment": AUG, "balance": 1.0,
                         "strength": 0.4},
    # square-root inverse-frequency weights (the code default) with strength 0.4
    "linear+aug+bal05+s40": {"strategy": "frozen", "kind": "linear", "augment": AUG,
                             "balance": 0.5, "strength": 0.4},
    "linear+aug+b11": {"strategy": "frozen", "kind": "linear", "augment": AUG,
                       "blocks": "6,7,8,9,10,11"},
    "cnn": {"strategy": "frozen", "kind": "conv", "hidden": 64},
    "cnn+aug": {"strategy": "frozen", "kind": "conv", "hidden": 64, "augment": AUG},
    # tuned blocks 9-10: a step costs their forward and backward, hence 4 views a step
    "finetune": {"strategy": "finetune", "kind": "linear", "batch_size": 4},
    "finetune+aug": {"strategy": "finetune", "kind": "linear", "batch_size": 4, "augment": AUG},
    "progressive": {"strategy": "progressive", "kind": "linear", "batch_size": 4},
    "progressive+aug": {"strategy": "progressive", "kind": "linear", "batch_size": 4,
                        "augment": AUG},
}
#: the same recipe with other seeds (held-back images, augmented views, initialisation,
#: batch order): ``NAME+seedN``
SEEDED = {"linear+aug+bal1": (1, 2), "linear+aug+bal1+s40": (1, 2), "mlp+aug+bal1+s40": (1, 2),
          "linear+aug+bal1+s40+even": (1, 2),
          "linear+aug+bal1+v12+s40": (1, 2), "linear+aug+bal05+s40": (1, 2)}
VARIANTS.update({f"{name}+seed{seed}": {**VARIANTS[name], "seed": seed}
                 for name, seeds in SEEDED.items() for seed in seeds})
BASELINES: dict[str, tuple[list[str], int]] = {  # name -> (eval flags, supports)
    "fewshot-1": (["--method", "fewshot"], 1),
    "fewshot-5": (["--method", "fewshot"], 5),
    "kmeans-5": (["--method", "kmeans"], 5),
    "sam-match-5": (["--method", "sam-match"], 5),
    "fewshot-5+refine": (["--method", "fewshot", "--refine"], 5),
}
CURVE = (1, 3, 9, 27)
#: val parts an annotator labels in the ``scene`` runs, in this order, per val tile: never the
#: reported parts (001/005/009) nor the gate's (003/007)
SCENE_PARTS = ("002", "004", "006", "008")
SCENE_VARIANT = "linear+aug+bal1+s40"


def _run(cmd: list[str], threads: int) -> dict[str, float]:
    """Run a child process; its wall and CPU seconds (fails loudly with its last line)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd[:6])}...: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu}


def train(name: str, overrides: dict[str, Any], args: argparse.Namespace,
          images: list[str] | None = None, splits: str = "train",
          extra: tuple[str, ...] = ()) -> Path:  # fmt: skip
    """A head trained on ``splits`` of ``args.data`` (+ ``extra`` label sources, DIR:SPLIT)."""
    out = args.out / "heads" / name
    if (out / "config.json").is_file() and not args.force:
        return out
    sources = [f"{args.data}:{s}" for s in splits.split(",")] + list(extra)
    pairs = {**overrides, "threads": args.threads, "feature_cache": str(args.out / "cache"),
             "data": ",".join(sources)}
    if images:
        pairs["images"] = ",".join(images)
    cmd = [sys.executable, "-m", "dinoseg", "aerial", "train", "--out", str(out),
           *[f"{k}={v}" for k, v in pairs.items()]]
    took = _run(cmd, args.threads)
    (out / "bench_time.json").write_text(json.dumps(took))
    print(f"trained {name}: {took['wall_s']:.0f} s wall, {took['cpu_s']:.0f} s CPU", flush=True)
    return out


def evaluate(name: str, flags: list[str], args: argparse.Namespace) -> dict[str, Any]:
    report = args.out / "reports" / f"{name}.json"
    if report.is_file() and not args.force:
        return dict(json.loads(report.read_text()))
    only = {"all": [], "subset": ["--only", *SUBSET], "gate": ["--only", *GATE],
            "other": ["--only", *(f"part_{p}" for p in SCENE_PARTS)]}[args.images]
    cmd = [sys.executable, "-m", "dinoseg", "aerial", "eval", "--data", str(args.data),
           "--split", "val", *only, "--out", str(report), *flags]
    _run(cmd, args.threads)
    r = dict(json.loads(report.read_text()))
    print(f"{name}: mIoU {r['miou']:.1f}, {r['cpu_s_per_mp']:.1f} CPU s/MP", flush=True)
    return r


def supports(n: int, root: Path) -> list[str]:
    """The first ``n`` train tiles in the supports' order (then the others, seeded)."""
    order = pick_supports(root, 27)
    rest = sorted(p.stem for p in (root / "train" / "masks").glob("*.png") if p.stem not in order)
    return (order + rest)[:n]


def support_flags(stems: list[str], root: Path) -> list[str]:
    t = root / "train"
    return [x for s in stems for x in ("--support", str(t / "images" / f"{s}.jpg"),
                                       str(t / "masks" / f"{s}.png"))]


def scene_images(n: int, root: Path) -> list[str]:
    """The 27 train images + the first ``n`` of :data:`SCENE_PARTS` of each val tile."""
    train_stems = sorted(p.stem for p in (root / "train" / "masks").glob("*.png"))
    tiles = sorted({p.stem.split("_")[0] for p in (root / "val" / "masks").glob("*.png")})
    return train_stems + [f"{t}_image_part_{part}" for t in tiles for part in SCENE_PARTS[:n]]


def scales_text(args: argparse.Namespace) -> str:
    """``--scales`` as ``head_scales`` takes it: ``1,1.5``."""
    return ",".join(f"{x:g}" for x in args.scales)


def head_flags(name: str, args: argparse.Namespace) -> list[str]:
    flags = ["--method", "head", "--model", str(args.out / "heads" / name)]
    variant = VARIANTS.get(name, {})
    if variant.get("strategy", "frozen") == "frozen":  # curve heads: frozen
        flags.append(f"feature_cache={args.out / 'val_cache'}")  # frozen: same tile features
    flags.append(f"head_adapt_steps={args.adapt}")  # off unless --adapt
    flags.append(f"head_safety_bias={args.safety_bias}")  # none unless --safety-bias
    flags.append(f"head_scales={scales_text(args)}")  # 1 unless --scales
    flags.append(f"head_pixel_weight={args.pixel_weight:g}")  # off unless --pixel-weight
    return flags + [f"{k}={variant[k]}" for k in ("tile", "overlap") if k in variant]


def head_tag(args: argparse.Namespace) -> str:
    """``--adapt`` / ``--safety-bias`` / ``--pixel-weight`` / ``--scales``: the report name's
    tag (none without them; the values: head_flags)."""
    tag = f"+adapt{args.adapt}" if args.adapt else ""
    tag += f"+safety{args.safety_bias:g}" if args.safety_bias else ""
    tag += f"+pixel{args.pixel_weight:g}" if args.pixel_weight else ""
    return tag + ("" if args.scales == [1.0] else f"+scales{scales_text(args)}")


def view_flags(args: argparse.Namespace) -> tuple[str, list[str]]:
    """``--views`` / ``--adapt`` / ``--safety-bias`` / ``--scales``: the report name's tag and
    the views flag (none for one view, no adaptation, no bias, one scale)."""
    if args.views == 1:
        return head_tag(args), []
    return f"+tta{args.views}" + head_tag(args), [f"head_views={args.views}"]


def scene(args: argparse.Namespace, suffix: str) -> None:
    """Heads trained on the train images + the first ``n`` scene parts of each val tile, scored
    on the reported parts or, to choose between recipes, the gate's (neither is trained on)."""
    if args.images not in ("subset", "gate"):
        sys.exit("scene: scored on parts 001/005/009 or the gate's 003/007 (the others train)")
    recipe = {**VARIANTS[SCENE_VARIANT], "kind": args.scene_kind, "seed": args.seed}
    tag = ("" if args.scene_kind == "linear" else f"-{args.scene_kind}") + (
        f"+seed{args.seed}" if args.seed else "")
    for n in args.scene_n:
        name = f"scene{n}{tag}"
        train(name, recipe, args, scene_images(n, args.data), "train,val")
        tta, views = view_flags(args)
        evaluate(name + tta + suffix, head_flags(name, args) + views, args)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("what", choices=("train", "eval", "baselines", "curve", "scene", "table"))
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--baselines", nargs="+", default=list(BASELINES), choices=list(BASELINES),
                    help="baselines: which of them")
    ap.add_argument("--refine", action="store_true", help="eval: + SAM refinement")
    ap.add_argument("--views", type=int, default=1, help="eval: head_views (test orientations)")
    ap.add_argument("--adapt", type=int, default=0,
                    help="eval, curve, scene: head_adapt_steps per round (self-training on each "
                         "photo; 0 = off, the figures without a tag)")
    ap.add_argument("--safety-bias", type=float, default=0.0,
                    help="eval, curve, scene: head_safety_bias (log-odds added to roads' "
                         "scores; 0 = none, the figures without a tag)")
    ap.add_argument("--pixel-weight", type=float, default=0.0,
                    help="eval, curve, scene: head_pixel_weight (the pixel head's evidence; "
                         "0 = off, the figures without a tag)")
    ap.add_argument("--scales", type=float, nargs="+", default=[1.0],
                    help="eval, curve, scene: head_scales (encoder scales averaged per tile; "
                         "1 = as trained, the figures without a tag)")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--images", choices=("subset", "gate", "other", "all"), default="subset",
                    help="val images: parts 001/005/009 (reported), 003/007 (choosing), "
                         "002/004/006/008 (checking a choice), all 27")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--force", action="store_true", help="redo what exists")
    ap.add_argument("--scene-n", type=int, nargs="+", default=[1, 2, 3, 4],
                    choices=range(1, len(SCENE_PARTS) + 1), help="scene: parts per val tile")
    ap.add_argument("--scene-kind", choices=("linear", "mlp"), default="linear",
                    help="scene: the head (mlp: 1x1 -> GELU -> 1x1, the recipe otherwise)")
    ap.add_argument("--seed", type=int, default=0, help="scene: the training seed")
    ap.add_argument("--curve-variant", default="linear", choices=list(VARIANTS),
                    help="the head of the learning curve (a frozen one)")
    args = ap.parse_args()
    suffix = "" if args.images == "subset" else f"@{args.images}"
    if args.what == "train":
        for name in args.variants:
            train(name, VARIANTS[name], args)
    elif args.what == "eval":
        for name in args.variants:
            tta, views = view_flags(args)
            flags = head_flags(name, args) + (["--refine"] if args.refine else []) + views
            evaluate(name + tta + ("+refine" if args.refine else "") + suffix, flags, args)
    elif args.what == "baselines":
        for name in args.baselines:
            flags, n = BASELINES[name]
            evaluate(name + suffix, flags + support_flags(supports(n, args.data), args.data),
                     args)  # fmt: skip
    elif args.what == "curve":
        for n in CURVE:
            stems = supports(n, args.data)
            train(f"n{n}", VARIANTS[args.curve_variant], args, stems)
            evaluate(f"curve-head-{n}{head_tag(args)}{suffix}", head_flags(f"n{n}", args), args)
            evaluate(f"curve-fewshot-{n}{suffix}",
                     ["--method", "fewshot", *support_flags(stems, args.data)], args)
    elif args.what == "scene":
        scene(args, suffix)
    else:
        from aerial_heads_table import print_tables

        print_tables(args.out, suffix, (SCENE_VARIANT, SCENE_PARTS), SEEDED)


if __name__ == "__main__":
    main()

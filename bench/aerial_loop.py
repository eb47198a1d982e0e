"""The aerial review loop measured with a simulated annotator (docs/aerial.md).

What a map job does (serving/aerial.py ``review_tiles``): the default head maps a photo and
offers its ``n`` least confident tiles to annotators; their labels (workers/labelstudio/aerial.py
``sync_tiles``: tile image + class-index mask in ``data/aerial_labels/train``) are training data
for the next ``dvc repro aerial/dvc.yaml``. Here the annotator is simulated by the ground truth:

1. map each photo with the default head (adapted, safety bias, one view) and take its ``n``
   least confident tiles, as the job would offer them;
2. write those tiles' images and true masks in the labels folder's layout;
3. train the default recipe (``--kind mlp``: with an MLP head) on the train images + those
   tiles (``NAME+loopN`` heads);
4. score the new head and the old one on the same photos **outside the labelled tiles** (their
   pixels count as unlabelled), so what is reported is what the labels taught elsewhere; or,
   with ``--score gate|subset``, on other whole photos of the same scenes (does a reviewed tile
   teach the scene's other photos?).

Nothing here chooses anything; it measures what one round of the loop buys on the photos the
annotators saw. Defaults: the reported val images (parts 001/005/009), the default recipe's
bench variant; heads and reports in runs/aerial_heads/ beside bench/aerial_heads.py's.

    python bench/aerial_loop.py [--tiles 1 3] [--seeds 0] [--images subset|gate|other]
        [--score rest|subset|gate] [--kind linear mlp] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from aerial_compare import DATA, SUBSET, val_stems
from aerial_heads import GATE, OUT, SCENE_PARTS, VARIANTS, evaluate, train
from PIL import Image

from dinoseg.aerial.build import build_method
from dinoseg.aerial.config import AerialConfig
from dinoseg.aerial.methods.head import least_confident
from dinoseg.aerial.pipeline import run_aerial
from dinoseg.aerial.reader import open_large_image
from dinoseg.io import load_label_map

RECIPE = "linear+aug+bal1+s40+even"  # the default recipe (aerial/params.yaml)
IGNORE = 255
#: the photos the annotator labels (``--images``)
PHOTOS = {"subset": SUBSET, "gate": GATE, "other": tuple(f"part_{p}" for p in SCENE_PARTS)}


def review_boxes(root: Path, names: list[str], head: Path, photos: list[str], n: int,
                    work: Path) -> dict[str, list[list[int]]]:  # fmt: skip
    """``{stem: [[y0, x0, y1, x1], ...]}``: the ``n`` least confident tiles of each photo's map
    by ``head`` with the default map settings (as a map job offers them for review)."""
    cfg = AerialConfig(method="head", model=str(head), feature_cache=str(OUT / "val_cache"))
    method = build_method(cfg, None, names)
    boxes = {}
    for stem in photos:
        run_aerial(root / "val" / "images" / f"{stem}.jpg", None, names, cfg,
                   work / "maps" / stem, method=method)  # fmt: skip
        ranked = least_confident(method.tile_confidence, n)  # type: ignore[attr-defined]
        boxes[stem] = [list(box) for box, _ in ranked]
    return boxes


def _folder(root: Path, out: Path, split: str) -> Path:
    """An empty Dubai-layout folder ``out`` with ``root``'s classes; returns its split folder."""
    shutil.rmtree(out, ignore_errors=True)
    for sub in ("images", "masks"):
        (out / split / sub).mkdir(parents=True)
    shutil.copy(root / "classes.json", out / "classes.json")
    return out / split


def annotate(root: Path, boxes: dict[str, list[list[int]]], labels: Path, val: Path) -> None:
    """The simulated annotator: each box's image and true mask in the labels folder's layout
    (``labels/train``), and a val folder (``val/val``) of the same photos whose labelled boxes are
    unlabelled (255)."""
    train_dir, val_dir = _folder(root, labels, "train"), _folder(root, val, "val")
    for stem, tiles in boxes.items():
        image = root / "val" / "images" / f"{stem}.jpg"
        photo = open_large_image(image)
        mask = load_label_map(root / "val" / "masks" / f"{stem}.png").astype(np.uint8)
        for y0, x0, y1, x1 in tiles:
            name = f"{stem}_{y0}_{x0}.png"
            Image.fromarray(photo.read(y0, x0, y1, x1)).save(train_dir / "images" / name)
            Image.fromarray(mask[y0:y1, x0:x1]).save(train_dir / "masks" / name)
        for y0, x0, y1, x1 in tiles:  # after every crop is saved: the boxes overlap
            mask[y0:y1, x0:x1] = IGNORE
        (val_dir / "images" / image.name).symlink_to(image)
        Image.fromarray(mask).save(val_dir / "masks" / f"{stem}.png")


def line(tag: str, r: dict[str, Any]) -> str:
    ious = ", ".join(f"{c} {v['iou']:.1f}" for c, v in r["per_class"].items())
    return (f"{tag}: mIoU {r['miou']:.1f} | {ious} | road FNR {r['safety']['fnr']['road']:.1f}"
            f" | water FPR {r['safety']['hazard_fpr']['water']:.1f}")


def score(n: int, suffix: str, models: list[tuple[str, Path]], val: Path,
          args: argparse.Namespace) -> None:
    """Print each model's figures: on ``val`` (the labelled photos outside their tiles) for
    ``--score rest``, else on the real data's whole ``--score`` photos."""
    rest = args.score == "rest"
    where = "" if rest else f"@{args.score}"
    scored = argparse.Namespace(**{**vars(args), "data": val if rest else args.data,
                                   "images": "all" if rest else args.score})
    for tag, model in models:
        flags = ["--method", "head", "--model", str(model), f"feature_cache={OUT / 'val_cache'}"]
        r = evaluate(f"loop-{model.name}-on{n}{suffix}{where}", flags, scored)
        print(line(f"{model.name}, {n} tile(s) per photo labelled, {tag}{where}", r), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tiles", type=int, nargs="+", default=[1, 3], help="tiles labelled per photo")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--images", choices=tuple(PHOTOS), default="subset", help="photos labelled")
    ap.add_argument("--score", choices=("rest", "subset", "gate"), default="rest",
                    help="photos scored: the labelled ones outside their tiles, or other ones")
    ap.add_argument("--kind", choices=("linear", "mlp"), nargs="+", default=["linear"],
                    help="the retrained heads (aerial/params.yaml recommends mlp once labels of "
                         "the mapped scenes are in the data)")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--force", action="store_true", help="redo what exists")
    args = ap.parse_args()
    args.out = OUT
    names = list(json.loads((args.data / "classes.json").read_text())["classes"].values())
    photos = val_stems(args.data, PHOTOS[args.images])
    suffix = "" if args.images == "subset" else f"@{args.images}"
    for seed in args.seeds:
        base = RECIPE + (f"+seed{seed}" if seed else "")
        head = train(base, VARIANTS[base], args)
        work = OUT / "loop" / f"{base}{suffix}"
        for n in args.tiles:
            boxes = review_boxes(args.data, names, head, photos, n, work)
            labels, val = work / f"labels{n}", work / f"val{n}"
            annotate(args.data, boxes, labels, val)
            (work / f"boxes{n}.json").write_text(json.dumps(boxes))
            models = [("before", head)]
            for k in args.kind:
                kind = "" if k == "linear" else f"-{k}"
                models.append((f"after{kind}", train(
                    f"{base}+loop{n}{kind}{suffix}", {**VARIANTS[base], "kind": k}, args,
                    extra=(f"{labels}:train",))))  # fmt: skip
            score(n, suffix, models, val, args)


if __name__ == "__main__":
    main()

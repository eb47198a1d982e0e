"""How far a patch head could go on the reported Dubai val images: two ceilings (docs/aerial.md).

1. **The patch grid**: every ``P`` px square of each mask (a grid from the image's corner) given
   its majority label, drawn back at full resolution. A head that labels whole DINOv2 patches
   (14 px at native resolution, 9.3 px at 1.5x) cannot beat it without finer evidence.
2. **A head that has seen these very images**: the default recipe (frozen, linear, four
   augmentations at strength 0.4, ``balance=1``) fitted on the 27 train images + the 9 reported
   ones, and on the 9 alone, nothing held back (the last step is kept), then scored on the same 9
   with the plain head (no adaptation, no safety bias, one view); ``--kind mlp`` the same with
   an MLP head. In-sample: a bound on what the frozen features and the head can separate on
   these images, not a result.

Nothing here chooses anything. The reported images are parts 001/005/009 of val tiles 4-6 (as in
bench/aerial_heads.py); the heads and reports land in runs/aerial_heads/ beside its own.

    python bench/aerial_ceiling.py [--seeds 0 1] [--kind linear|mlp] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from aerial_compare import DATA, SUBSET, ious, val_stems
from aerial_heads import OUT, SCENE_VARIANT, VARIANTS, evaluate, head_flags, train

from dinoseg.io import load_label_map

IGNORE = 255


def patch_grid_labels(mask: np.ndarray, patch: int, classes: int) -> np.ndarray:
    """(H, W) labels: every ``patch`` px square's majority class (255 where none is labelled,
    and in the last rows/columns the grid does not cover).

    Args:
        mask: (H, W) class indices, 255 unlabelled.
    """
    h, w = (mask.shape[0] // patch) * patch, (mask.shape[1] // patch) * patch
    cells = mask[:h, :w].reshape(h // patch, patch, w // patch, patch).swapaxes(1, 2)
    counts = np.stack([(cells == c).sum((-1, -2)) for c in range(classes)], -1)  # (h/P, w/P, C)
    best = np.where(counts.sum(-1) > 0, counts.argmax(-1), IGNORE).astype(np.uint8)
    out = np.full(mask.shape, IGNORE, np.uint8)
    out[:h, :w] = best.repeat(patch, 0).repeat(patch, 1)
    return out


def grid_ceiling(root: Path, stems: list[str], patch: int, names: list[str]) -> dict[str, float]:
    """Per class IoU, mIoU and road FNR (%) of :func:`patch_grid_labels` over ``stems``, summed
    over pixels as ``dinoseg aerial eval`` does (unlabelled pixels left out)."""
    n = len(names)
    conf = np.zeros((n, n + 1), np.int64)  # true class x predicted (n: unlabelled cell)
    for stem in stems:
        gt = load_label_map(root / "val" / "masks" / f"{stem}.png")
        pred = patch_grid_labels(gt, patch, n)
        valid = gt != IGNORE
        conf += np.bincount(gt[valid].astype(np.int64) * (n + 1) + np.minimum(pred[valid], n),
                            minlength=n * (n + 1)).reshape(n, n + 1)  # fmt: skip
    iou = ious(conf)
    out = dict(zip(names, iou, strict=True))
    out["mIoU"] = float(np.mean(iou))
    if "road" in names:
        r = names.index("road")
        out["road FNR"] = float(100 * (1 - conf[r, r] / conf[r].sum()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--kind", choices=("linear", "mlp"), default="linear",
                    help="the head (mlp: the same recipe with a 1x1 -> GELU -> 1x1 head)")
    ap.add_argument("--patches", type=int, nargs="+", default=[14, 9, 28],
                    help="grid cells in px: 14 native patches, 9 (~14/1.5), 28 (half resolution)")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--force", action="store_true", help="redo what exists")
    args = ap.parse_args()
    # what aerial_heads.evaluate / head_flags read: the reported images, the plain head
    args.images, args.adapt, args.safety_bias, args.pixel_weight, args.scales = (
        "subset", 0, 0.0, 0.0, [1.0])
    classes = json.loads((args.data / "classes.json").read_text())["classes"]
    names = [classes[k] for k in sorted(classes, key=int)]
    stems = val_stems(args.data, SUBSET)
    for patch in args.patches:
        row = grid_ceiling(args.data, stems, patch, names)
        print(f"patch grid {patch} px: " + ", ".join(f"{k} {v:.1f}" for k, v in row.items()))
    train_stems = sorted(p.stem for p in (args.data / "train" / "masks").glob("*.png"))
    for seed in args.seeds:
        recipe = {**VARIANTS[SCENE_VARIANT], "val_fraction": 0.0, "seed": seed, "kind": args.kind}
        tag = "" if args.kind == "linear" else f"-{args.kind}"
        for name, images, splits in ((f"seen{tag}{seed}", train_stems + stems, "train,val"),
                                     (f"seen-only{tag}{seed}", stems, "val")):  # fmt: skip
            train(name, recipe, args, images, splits)
            r = evaluate(f"ceiling-{name}", head_flags(name, args), args)
            per = ", ".join(f"{c} {v['iou']:.1f}" for c, v in r["per_class"].items())
            print(f"{name}: {per}; mIoU {r['miou']:.1f}, road FNR {r['safety']['fnr']['road']:.1f}")


if __name__ == "__main__":
    main()

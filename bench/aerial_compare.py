"""Aerial methods compared on the same Dubai val tiles: per-class IoU, mIoU, s/MP, peak RSS.

Time per megapixel is reported as process CPU time (one thread: what an idle core would
take) and as wall time (inflated when the machine is shared). Every method runs in its own
subprocess (so its peak RSS is its own) over the same images,
with supports taken from the train split (1 and 5 tiles, seeded; each support shows every
class). Unknown pixels count as wrong. SegFormer-B5 needs weights that cannot be downloaded
here: it is reported as not measurable unless --segformer names a local directory.

    OMP_NUM_THREADS=1 python bench/aerial_compare.py --out out/aerial_compare.json
    python bench/aerial_compare.py --images all --methods fewshot-1 fewshot-5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from procstats import peak_rss_mb

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "dubai"
METHODS = {  # name -> (AerialConfig overrides, shots)
    "fewshot-1": ({"method": "fewshot"}, 1),
    "fewshot-5": ({"method": "fewshot"}, 5),
    "kmeans-1": ({"method": "kmeans"}, 1),
    "kmeans-5": ({"method": "kmeans"}, 5),
    "sam-match-5": ({"method": "sam-match"}, 5),
    "fewshot-5+refine": ({"method": "fewshot", "refine": True}, 5),
    "segformer": ({"method": "segformer"}, 0),
    # the same at half resolution (a patch covers 28 px of ground: more context per patch)
    "fewshot-1@0.5x": ({"method": "fewshot", "image_size": 259}, 1),
    "fewshot-5@0.5x": ({"method": "fewshot", "image_size": 259}, 5),
    "kmeans-5@0.5x": ({"method": "kmeans", "image_size": 259}, 5),
    "sam-match-5@0.5x": ({"method": "sam-match", "image_size": 259}, 5),
}
SUBSET = ("part_001", "part_005", "part_009")


def pick_supports(root: Path, shots: int, seed: int = 0, min_share: float = 0.005) -> list[str]:
    """Stems of ``shots`` train tiles in which every class covers >= ``min_share`` of the
    labelled pixels, in a seeded order (so the 1-shot support is the first of the 5)."""
    from dinoseg.aerial.categories import read_class_names
    from dinoseg.io import load_label_map

    n = len(read_class_names(root))
    good = []
    for mask in sorted((root / "train" / "masks").glob("*.png")):
        lab = load_label_map(mask)
        counts = np.bincount(lab[lab != 255].ravel(), minlength=n)[:n]
        if (counts >= min_share * counts.sum()).all():
            good.append(mask.stem)
    order = np.random.default_rng(seed).permutation(len(good))
    return [good[i] for i in order[:shots]]


def val_stems(root: Path, parts: tuple[str, ...] = ()) -> list[str]:
    """The val stems ending in one of ``parts`` (``part_001``, ...); all of them for ``()``."""
    stems = sorted(p.stem for p in (root / "val" / "masks").glob("*.png"))
    return [s for s in stems if s.endswith(parts)] if parts else stems


def worker(args: argparse.Namespace) -> None:
    """Run one method over the images; print one JSON line (confusion, seconds, MP, RSS)."""
    import torch

    from dinoseg.aerial.categories import read_class_names
    from dinoseg.aerial.config import AerialConfig
    from dinoseg.aerial.pipeline import build_method, load_supports, segment_map
    from dinoseg.aerial.reader import open_large_image
    from dinoseg.io import load_label_map

    torch.set_num_threads(args.threads)
    overrides, shots = METHODS[args.worker]
    cfg = AerialConfig(tile=args.tile, overlap=args.overlap, **overrides)  # type: ignore[arg-type]
    if args.segformer:
        cfg.segformer = args.segformer
    root = args.data
    names = read_class_names(root)
    stems = pick_supports(root, shots) if shots else []
    t = root / "train"
    supports = (
        load_supports([(t / "images" / f"{s}.jpg", t / "masks" / f"{s}.png") for s in stems], names)
        if stems else None
    )
    method = build_method(cfg, supports, names)
    n = len(names)
    conf = np.zeros((n, n + 1), np.int64)  # gt class x (pred class, unknown)
    seconds, cpu, mp = 0.0, 0.0, 0.0
    for stem in val_stems(root, () if args.images == "all" else SUBSET):
        source = open_large_image(root / "val" / "images" / f"{stem}.jpg")
        gt = load_label_map(root / "val" / "masks" / f"{stem}.png")
        start, start_cpu = time.perf_counter(), time.process_time()
        labels, _ = segment_map(source, method, cfg)
        seconds += time.perf_counter() - start
        cpu += time.process_time() - start_cpu
        mp += source.megapixels
        pred = np.where(labels == 255, n, labels).astype(np.int64)
        valid = gt != 255
        conf += np.bincount(gt[valid] * (n + 1) + pred[valid], minlength=n * (n + 1)).reshape(
            n, n + 1
        )
        print(f"{args.worker} {stem} {seconds:.0f}s", file=sys.stderr, flush=True)
    rss = peak_rss_mb()
    print(json.dumps({"method": args.worker, "supports": stems, "confusion": conf.tolist(),
                      "seconds": seconds, "cpu_seconds": cpu, "megapixels": mp,
                      "peak_rss_mb": rss}))


def ious(conf: np.ndarray) -> list[float]:
    n = conf.shape[0]
    tp = np.diag(conf[:, :n])
    union = conf.sum(1) + conf[:, :n].sum(0) - tp
    return [float(100 * a / b) if b else float("nan") for a, b in zip(tp, union, strict=True)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--images", choices=("subset", "all"), default="subset",
                    help="subset: parts 001/005/009 of each val tile (9 images); all: 27")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--tile", type=int, default=518)
    ap.add_argument("--overlap", type=int, default=96)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--segformer", default="", help="local SegFormer-B5 directory, if any")
    ap.add_argument("--out", type=Path, default=None, help="write the report JSON here")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    from dinoseg.aerial.categories import read_class_names

    names = read_class_names(args.data)
    results = []
    for m in args.methods:
        cmd = [sys.executable, __file__, "--worker", m, "--data", str(args.data), "--images",
               args.images, "--tile", str(args.tile), "--overlap", str(args.overlap),
               "--threads", str(args.threads), "--segformer", args.segformer]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            reason = (proc.stderr.strip().splitlines() or ["?"])[-1]
            results.append({"method": m, "error": reason})
            print(f"| {m} | not measurable: {reason} |", flush=True)
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        r["iou"] = dict(zip(names, ious(np.array(r["confusion"])), strict=True))
        r["miou"] = float(np.nanmean(list(r["iou"].values())))
        r["s_per_mp"] = r["seconds"] / r["megapixels"]
        r["cpu_s_per_mp"] = r["cpu_seconds"] / r["megapixels"]
        results.append(r)
        cells = " | ".join(f"{v:.1f}" for v in r["iou"].values())
        print(f"| {m} | {cells} | **{r['miou']:.1f}** | {r['cpu_s_per_mp']:.1f} | "
              f"{r['s_per_mp']:.1f} | {r['peak_rss_mb']:.0f} |", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"images": args.images, "tile": args.tile,
                                        "overlap": args.overlap, "results": results}, indent=2))


if __name__ == "__main__":
    main()

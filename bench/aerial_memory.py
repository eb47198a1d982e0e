"""Peak memory of the tiled aerial pipeline at two image sizes (flat memory check).

A synthetic photo of S x S px (a real Dubai val tile mirrored over the area) is written to a
temporary folder as binary PPM (memory-mapped by the tiled reader) and, with --png, as PNG
(decoded whole: +3 bytes/pixel); each run is a fresh subprocess doing the whole
``run_aerial`` job (few-shot, prototype model, packaged DINOv2-S, one Dubai train support),
and reports its peak RSS after segmentation and at the end (outputs written).

    OMP_NUM_THREADS=1 python bench/aerial_memory.py --sizes 2000 10000 --png
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from procstats import peak_rss_mb

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "dubai"
SUPPORT = "tile1_image_part_006"
TILE = "tile4_image_part_001"


def synthetic(size: int, path: Path) -> None:
    """Mirror-tile a real val image to ``size x size`` and write it (format from the suffix)."""
    base = np.asarray(Image.open(DATA / "val" / "images" / f"{TILE}.jpg").convert("RGB"))
    row = np.concatenate([base, base[:, ::-1]], axis=1)
    block = np.concatenate([row, row[::-1]], axis=0)
    reps = (-(-size // block.shape[0]), -(-size // block.shape[1]), 1)
    Image.fromarray(np.tile(block, reps)[:size, :size]).save(path)


def worker(image: Path, out: Path, image_size: int) -> None:
    import torch

    from dinoseg.aerial.categories import read_class_names
    from dinoseg.aerial.config import AerialConfig
    from dinoseg.aerial.pipeline import build_method, load_supports, run_aerial

    torch.set_num_threads(1)
    names = read_class_names(DATA)
    t = DATA / "train"
    supports = load_supports([(t / "images" / f"{SUPPORT}.jpg", t / "masks" / f"{SUPPORT}.png")],
                             names)
    cfg = AerialConfig(method="fewshot", image_size=image_size)
    method = build_method(cfg, supports, names)
    marks = {"after_model_load_mb": peak_rss_mb()}

    def progress(stage: str, done: int, total: int) -> None:
        if done == total:
            marks[f"after_{stage}_mb"] = peak_rss_mb()

    start, cpu = time.perf_counter(), time.process_time()
    stats = run_aerial(image, supports, names, cfg, out, method=method, progress=progress)
    marks["peak_mb"] = peak_rss_mb()
    print(json.dumps({"image": image.name, "megapixels": stats["image"]["height"]
                      * stats["image"]["width"] / 1e6, "seconds": time.perf_counter() - start,
                      "cpu_seconds": time.process_time() - cpu, **marks}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 10000])
    ap.add_argument("--png", action="store_true", help="also run the largest size as PNG")
    ap.add_argument("--image-size", type=int, default=224, help="encoder px per 518 px tile")
    ap.add_argument("--worker", nargs=2, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(Path(args.worker[0]), Path(args.worker[1]), args.image_size)
        return
    with tempfile.TemporaryDirectory() as tmp:
        jobs = [Path(tmp) / f"synthetic_{s}.ppm" for s in args.sizes]
        if args.png:
            jobs.append(Path(tmp) / f"synthetic_{max(args.sizes)}.png")
        for path in jobs:
            synthetic(int(path.stem.split("_")[1]), path)
            cmd = [sys.executable, __file__, "--image-size", str(args.image_size),
                   "--worker", str(path), str(Path(tmp) / f"out_{path.name}")]
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode:
                print(f"{path.name}: failed: {proc.stderr.strip().splitlines()[-1:]}")
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"| {r['image']} | {r['megapixels']:.1f} MP | {r['cpu_seconds']:.0f} s | "
                  f"{r['after_model_load_mb']:.0f} | {r.get('after_segment_mb', 0):.0f} | "
                  f"{r['peak_mb']:.0f} |", flush=True)
            path.unlink()


if __name__ == "__main__":
    main()

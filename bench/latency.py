"""CPU latency of the encoder alone vs a cached-support 1-shot and 5-shot query.

Prints medians (ms) over --runs repetitions, the ratios to a bare backbone forward, and the
peak RSS of the process. Usage: python bench/latency.py [--model prototype fsdino-s]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from procstats import peak_rss_mb

from dinoseg.backbone import load_backbone
from dinoseg.models import build_segmenter
from dinoseg.predictor import FewShotPredictor


def median_ms(fn: Callable[[], object], runs: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - t))
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", nargs="+", default=["prototype", "fsdino-s"])
    ap.add_argument("--backbone", default="packaged:dinov2-s")
    ap.add_argument("--image-size", type=int, default=448)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    bb = load_backbone(args.backbone)
    rng = np.random.default_rng(0)
    h, w = args.image_size * 3 // 4, args.image_size  # 4:3, like CamVid
    imgs = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for _ in range(6)]
    mask = np.zeros((h, w), bool)
    mask[h // 4 : h // 2, w // 4 : w // 2] = True
    pix = torch.randn(1, 3, (h + 13) // 14 * 14, w)
    bare = median_ms(lambda: bb(pix), args.runs)
    print(
        f"threads={args.threads} image={w}x{h} layers={bb.layers} (grid "
        f"{pix.shape[2] // 14}x{pix.shape[3] // 14})"
    )
    print(f"backbone forward (bare)          {bare:8.1f} ms")
    for name in args.model:
        model = build_segmenter(name).eval()
        pred = FewShotPredictor(model, bb, image_size=args.image_size)
        for k in (1, 5):
            enc = median_ms(lambda p=pred, k=k: p.set_support(imgs[1 : 1 + k], [mask] * k), 3)
            q = median_ms(lambda p=pred: p.predict([imgs[0]]), args.runs)
            print(
                f"{name:>10} {k}-shot: set_support {enc:8.1f} ms | query {q:8.1f} ms "
                f"= {q / bare:.2f}x backbone"
            )
    print(f"peak RSS {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()

"""The CPU path: torch fp32 vs ONNX Runtime fp32 vs ONNX Runtime int8 (dynamic quantisation).

Same packaged DINOv2-S/14 (blocks 6-10), same prototype 1-shot model, same seeded CamVid val
episodes (all classes, :func:`dinoseg.eval.protocol.evaluate`; the feature cache is keyed by
the backbone's identity, so every backend encodes every image itself, once). Prints, per
backend: the median ms of one query with a cached support (a CamVid val image, 480x360 ->
448x336) and of a bare backbone forward, timed interleaved; and mIoU / FB-IoU on the
episodes, the mIoU change against torch and the mean per-episode |IoU change|. The export is
made with ``dinoseg export`` into ``--export`` when missing.

Usage (README, "A faster CPU path")::

    OMP_NUM_THREADS=1 nice -n 10 python bench/onnx_cpu.py --threads 1 --episodes 300
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from dinoseg.backbone import DinoBackbone, load_backbone
from dinoseg.backbone.onnxrt import FP32_NAME, INT8_NAME, OnnxBackbone
from dinoseg.data import EpisodeSampler, open_dataset
from dinoseg.eval.protocol import evaluate
from dinoseg.feature_cache import FeatureCache
from dinoseg.models.prototype import PrototypeBaseline
from dinoseg.predictor import FewShotPredictor


def backends(args: argparse.Namespace) -> dict[str, DinoBackbone]:
    torch_bb = load_backbone(args.backbone)
    if not (args.export / INT8_NAME).is_file():
        from dinoseg.export import export_backbone

        export_backbone(torch_bb, args.export, int8=True)
    return {
        "torch fp32": torch_bb,
        "onnxruntime fp32": OnnxBackbone(args.export / FP32_NAME, threads=args.threads),
        "onnxruntime int8": OnnxBackbone(args.export / INT8_NAME, threads=args.threads),
    }


def latency(preds: dict[str, FewShotPredictor], data: Path, runs: int) -> dict[str, dict]:
    """Median ms per query (cached 1-shot support) and per bare backbone forward, each backend
    timed in turn within every run (a load change hits all alike)."""
    val = data / "val"
    files = sorted((val / "images").iterdir())[:2]
    img = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    mask = np.asarray(Image.open(val / "masks" / f"{files[0].stem}.png")) == 8  # car
    if not mask.any():
        mask[100:200, 100:200] = True
    times: dict[str, dict[str, list[float]]] = {k: {"query": [], "backbone": []} for k in preds}
    for p in preds.values():
        p.set_support([img[0]], [mask])
        p.predict([img[1]])  # warm-up
    pix = torch.randn(1, 3, 336, 448)
    for _ in range(runs):
        for name, p in preds.items():
            t = time.perf_counter()
            p.predict([img[1]])
            times[name]["query"].append(1000 * (time.perf_counter() - t))
            t = time.perf_counter()
            p.backbone(pix)
            times[name]["backbone"].append(1000 * (time.perf_counter() - t))
    return {n: {k: statistics.median(v) for k, v in t.items()} for n, t in times.items()}


def quality(preds: dict[str, FewShotPredictor], args: argparse.Namespace) -> dict[str, Any]:
    dataset = open_dataset(args.data, "val")
    sampler = EpisodeSampler(dataset, None, shots=1, n_episodes=args.episodes, seed=args.seed)
    result = evaluate(preds, sampler, class_names=dataset.class_names,
                      cache=FeatureCache(max_bytes=int(args.cache_gb * 1024**3)),
                      n_examples=0)  # fmt: skip
    return result.report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/camvid"))
    ap.add_argument("--backbone", default="packaged:dinov2-s")
    ap.add_argument("--export", type=Path, default=Path("out/onnx/dinov2-s"))
    ap.add_argument("--episodes", type=int, default=300, help="0: latency only")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", type=int, default=15, help="timed queries per backend")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--image-size", type=int, default=448)
    ap.add_argument(
        "--cache-gb",
        type=float,
        default=3.0,
        help="feature cache GB (keyed per backend: each encodes each image once)",
    )
    ap.add_argument("--out", type=Path, default=Path("out/onnx/bench.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    preds = {name: FewShotPredictor(PrototypeBaseline(), bb, image_size=args.image_size)
             for name, bb in backends(args).items()}  # fmt: skip
    ms = latency(preds, args.data, args.runs)
    print(f"threads={args.threads} image 480x360 -> 448x336, {args.runs} runs, medians", flush=True)
    base = ms["torch fp32"]["query"]
    for name, m in ms.items():
        print(f"  {name:<18} query {m['query']:7.1f} ms ({m['query'] / base:.2f}x torch)   "
              f"backbone {m['backbone']:7.1f} ms")  # fmt: skip
    summary: dict[str, Any] = {"settings": {k: str(v) for k, v in vars(args).items()},
                               "latency_ms": ms}  # fmt: skip
    if args.episodes > 0:
        summary["metrics"] = quality_table(preds, args, ms)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))
    print(f"wrote {args.out}")


def quality_table(
    preds: dict[str, FewShotPredictor], args: argparse.Namespace, ms: dict[str, dict]
) -> dict[str, Any]:
    """Run the episodes, print the README table, return mIoU / FB-IoU / timing per backend."""
    start = time.perf_counter()
    rows = quality(preds, args)["models"]
    ref = rows["torch fp32"]
    ref_iou = [e["iou"] for e in ref["episodes"]]
    print(f"{args.episodes} CamVid val episodes (seed {args.seed}, 1-shot, all classes), "
          f"{time.perf_counter() - start:.0f} s")  # fmt: skip
    print("| backend | ms / query | backbone ms | mIoU | FB-IoU | ΔmIoU | mean abs ΔIoU |")
    print("|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        m, t = row["metrics"], ms[name]
        ious = [e["iou"] for e in row["episodes"]]
        d = [abs(a - b) for a, b in zip(ious, ref_iou, strict=True) if None not in (a, b)]
        print(f"| {name} | {t['query']:.0f} | {t['backbone']:.0f} | {m['miou']:.1f} | "
              f"{m['fb_iou']:.1f} | {m['miou'] - ref['metrics']['miou']:+.2f} | "
              f"{100 * float(np.mean(d)):.2f} |")  # fmt: skip
    return {n: {k: r["metrics"][k] for k in ("miou", "fb_iou")} | {"timing": r["timing"]}
            for n, r in rows.items()}  # fmt: skip


if __name__ == "__main__":
    main()

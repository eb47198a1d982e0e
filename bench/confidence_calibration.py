"""Does the confidence score mean something? Confidence vs actual IoU on CamVid val episodes.

Two phases, so score variants can be compared without running the model again:

1. ``collect``: 1-shot episodes over every CamVid val class (the prototype baseline is
   training-free, so every class is novel to it), the model's probability map quantised to
   uint8 and the episode's target saved per episode under ``--cache``;
2. ``report``: per candidate score, Pearson / Spearman correlation with the episode IoU, the
   AUROC of "IoU < 0.5" against the score (higher = better at flagging bad masks), a reliability
   table (mean IoU per confidence bin) and, for the review threshold, the share of episodes sent
   to review and the share of bad masks caught. Writes ``report.json`` and ``reliability.png``.

Usage::

    OMP_NUM_THREADS=1 python bench/confidence_calibration.py collect --episodes 330
    python bench/confidence_calibration.py report
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

CACHE = Path("out/bench/confidence")
BAD_IOU = 0.5


def collect(args: argparse.Namespace) -> None:
    """Run the model on the episodes and cache (prob uint8, target uint8) per episode."""
    import torch

    from dinoseg.data import EpisodeSampler, open_dataset
    from dinoseg.predictor import load_predictor

    torch.set_num_threads(args.threads)
    dataset = open_dataset(args.data, args.split)
    sampler = EpisodeSampler(dataset, shots=args.shots, n_episodes=args.episodes, seed=args.seed)
    predictor = load_predictor(args.model, image_size=args.image_size)
    out = args.cache / "episodes"
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for i in range(len(sampler)):
        path = out / f"{i:05d}.npz"
        if path.exists():
            continue
        ep = sampler[i]
        predictor.set_support(ep["support_images"], [m == 1 for m in ep["support_masks"]])
        pred = predictor.predict([ep["query_image"]])[0]
        prob8 = np.round(pred.prob * 255).astype(np.uint8)
        tmp = out / f"{i:05d}.tmp.npz"
        np.savez_compressed(tmp, prob=prob8, target=ep["query_mask"], class_id=ep["class_id"])
        tmp.replace(path)
        if i % 20 == 0:
            rate = (time.perf_counter() - start) / (i + 1)
            print(f"episode {i}/{len(sampler)}  {rate:.2f} s/episode", file=sys.stderr)
    meta = {"data": str(args.data), "split": args.split, "shots": args.shots,
            "episodes": args.episodes, "seed": args.seed, "model": args.model,
            "image_size": args.image_size, "threshold": predictor.threshold}  # fmt: skip
    (args.cache / "settings.json").write_text(json.dumps(meta, indent=1))


def _iou(mask: np.ndarray, target: np.ndarray) -> float | None:
    valid = target != 255
    p, gt = mask & valid, target == 1
    union = np.count_nonzero(p | gt)
    return None if union == 0 else np.count_nonzero(p & gt) / union


def soft_iou(p: np.ndarray, threshold: float, low: float = 0.1) -> float:
    """The mask's IoU if pixels were foreground with probability p (p <= low counts as 0)."""
    p = np.where(p > low, p, 0.0)
    mask = p > threshold
    denom = mask.sum() + p[~mask].sum()
    return 1.0 if denom == 0 else float(p[mask].sum() / denom)


def boundary_margin(p: np.ndarray, threshold: float, rel_width: float = 0.01) -> float:
    """Mean |2p - 1| over a band (1 % of the long side) on both sides of the mask outline."""
    import torch
    import torch.nn.functional as F

    w = max(1, round(rel_width * max(p.shape)))
    m = torch.from_numpy((p > threshold).astype(np.float32))[None, None]
    dilated = F.max_pool2d(m, 2 * w + 1, stride=1, padding=w)
    eroded = -F.max_pool2d(-m, 2 * w + 1, stride=1, padding=w)
    band = (dilated != eroded)[0, 0].numpy()
    return float(np.abs(2 * p[band] - 1).mean()) if band.any() else 1.0


def candidate_scores(threshold: float) -> dict[str, Callable[[np.ndarray], float]]:
    """Score variants compared by the report (the first two are dinoseg.confidence's)."""
    from dinoseg import confidence as c

    def fg_margin(p: np.ndarray) -> float:
        fg = p > threshold
        return float(np.abs(2 * p[fg] - 1).mean()) if fg.any() else 1.0

    def fg_mean_entropy(p: np.ndarray) -> float:
        fg = p > threshold
        return float(1 - c.binary_entropy(p[fg]).mean()) if fg.any() else 1.0

    return {
        "mask_confidence": lambda p: c.mask_confidence(p, threshold=threshold),
        "roi_margin": lambda p: c.roi_margin(p, threshold=threshold),
        "fg_mean_entropy": fg_mean_entropy,
        "fg_margin": fg_margin,
        "soft_iou": lambda p: soft_iou(p, threshold),
        "boundary_margin": lambda p: boundary_margin(p, threshold),
        "area": lambda p: float((p > threshold).mean()),
    }


def _rank(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x))
    for v in np.unique(x):  # average ranks of ties
        tie = x == v
        ranks[tie] = ranks[tie].mean()
    return ranks


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """P(score of a random positive < score of a random negative): low score flags positives."""
    r = _rank(-scores)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((r[positive].sum() - n_pos * (n_pos - 1) / 2) / (n_pos * n_neg))


def reliability(conf: np.ndarray, iou: np.ndarray, bins: int = 10) -> list[dict[str, Any]]:
    """Mean IoU and share of good masks (IoU >= 0.5) per equal-width confidence bin."""
    edges = np.linspace(0, 1, bins + 1)
    rows = []
    for lo, hi in itertools.pairwise(edges):
        sel = (conf >= lo) & ((conf < hi) | (hi == 1.0))
        if sel.any():
            rows.append({"bin": [round(lo, 2), round(hi, 2)], "n": int(sel.sum()),
                         "mean_confidence": float(conf[sel].mean()),
                         "mean_iou": float(iou[sel].mean()),
                         "good_rate": float((iou[sel] >= BAD_IOU).mean())})  # fmt: skip
    return rows


def review_table(conf: np.ndarray, iou: np.ndarray) -> list[dict[str, float]]:
    """For candidate thresholds: share sent to review, share of bad masks caught, precision."""
    bad = iou < BAD_IOU
    rows = []
    for t in np.round(np.arange(0.3, 0.95, 0.05), 2):
        sent = conf < t
        rows.append({"threshold": float(t), "review_rate": float(sent.mean()),
                     "bad_caught": float((sent & bad).sum() / max(1, bad.sum())),
                     "precision": float((sent & bad).sum() / max(1, sent.sum()))})  # fmt: skip
    return rows


def _load(cache: Path) -> tuple[list[np.ndarray], np.ndarray, float]:
    settings = json.loads((cache / "settings.json").read_text())
    probs, ious = [], []
    for path in sorted((cache / "episodes").glob("[0-9]*.npz")):
        with np.load(path) as z:
            prob = z["prob"].astype(np.float32) / 255.0
            iou = _iou(prob > settings["threshold"], z["target"])
        if iou is not None:
            probs.append(prob)
            ious.append(iou)
    return probs, np.asarray(ious), float(settings["threshold"])


def plot(path: Path, curves: dict[str, list[dict[str, Any]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for name, rows in curves.items():
        x = [r["mean_confidence"] for r in rows]
        ax.plot(x, [r["mean_iou"] for r in rows], marker="o", label=name)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--", label="confidence = IoU")
    ax.set(xlabel="confidence (bin mean)", ylabel="actual IoU (bin mean)", xlim=(0, 1),
           ylim=(0, 1), title="Reliability, CamVid val, 1-shot prototype")  # fmt: skip
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def report(args: argparse.Namespace) -> None:
    probs, iou, thr = _load(args.cache)
    out: dict[str, Any] = {"episodes": len(iou), "mean_iou": float(iou.mean()),
                           "bad_rate": float((iou < BAD_IOU).mean()), "scores": {}}  # fmt: skip
    for name, fn in candidate_scores(thr).items():
        conf = np.asarray([fn(p) for p in probs])
        out["scores"][name] = {
            "pearson": float(np.corrcoef(conf, iou)[0, 1]),
            "spearman": float(np.corrcoef(_rank(conf), _rank(iou))[0, 1]),
            "auroc_bad": auroc(conf, iou < BAD_IOU),
            "reliability": reliability(conf, iou),
            "review": review_table(conf, iou),
        }
    args.cache.mkdir(parents=True, exist_ok=True)
    (args.cache / "report.json").write_text(json.dumps(out, indent=1))
    shown = {n: out["scores"][n]["reliability"] for n in ("mask_confidence", "roi_margin")}
    plot(args.cache / "reliability.png", shown)
    print(f"{out['episodes']} episodes, mean IoU {out['mean_iou']:.3f}, "
          f"{100 * out['bad_rate']:.0f}% with IoU < {BAD_IOU}")  # fmt: skip
    print(f"{'score':<18}{'pearson':>9}{'spearman':>10}{'AUROC(bad)':>12}")
    for name, s in out["scores"].items():
        print(f"{name:<18}{s['pearson']:>9.3f}{s['spearman']:>10.3f}{s['auroc_bad']:>12.3f}")
    print(f"written: {args.cache}/report.json, reliability.png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("phase", choices=["collect", "report"])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/camvid"))
    ap.add_argument("--split", default="val")
    ap.add_argument("--shots", type=int, default=1)
    ap.add_argument("--episodes", type=int, default=330)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default="prototype")
    ap.add_argument("--image-size", type=int, default=448)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache", type=Path, default=CACHE)
    args = ap.parse_args()
    collect(args) if args.phase == "collect" else report(args)


if __name__ == "__main__":
    main()

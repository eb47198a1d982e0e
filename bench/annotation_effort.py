"""The annotator's numbers: the effort to fix uncertain CamVid val results, three ways.

Results: seeded 1-shot requests of the training-free prototype model (``packaged:dinov2-s``),
one per CamVid class: the support is one train image of the class (drawn with
``np.random.default_rng([seed, class_id])`` among the train images where the class covers at
least 1 %), the queries are every val image where it covers at least 1 %. A result is
*uncertain* as the product decides it: its confidence is below ``review.confidence_threshold``
(params.yaml; serving's :class:`~serving.config.ReviewConfig`). The ``--results`` least
confident of them are replayed; the target is the class's whole ground-truth mask in the
query (void ignored), the goal IoU ``--goal`` (0.9).

Ways, each simulated with the protocol of :mod:`dinoseg.interactive.noc` (every action at the
centre of the largest error region; a brush dab of radius ``min(--radius, the region's
inscribed radius - 1/2)``, one dab = one action), at most ``--max-actions`` actions:

- brush from scratch: :func:`~dinoseg.interactive.noc.brush_trace` from an empty mask;
- fix the pre-annotation: the same brush, starting from the model's mask;
- fix with click-to-mask: the click engine (:class:`~dinoseg.interactive.ClickSegmenter`)
  correcting the pre-annotation as its base mask, clicks by
  :func:`~dinoseg.interactive.noc.click_trace`, at most 20, then the brush from the last mask;
- click-to-mask as Label Studio wires it today: a click's mask is a new region beside the
  pre-annotation (the backend does not see the pre-annotation), which the annotator deletes
  first (one action) when more than half of it is wrong, else keeps; a false positive of the
  kept pre-annotation is erased with the brush (a dab), one of a click region gets a negative
  click; after 20 clicks, the brush.

Usage: OMP_NUM_THREADS=1 python bench/annotation_effort.py [--results 50] [--out effort.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from dinoseg.data.folder import FolderDataset
from dinoseg.interactive import Click, ClickSegmenter, InteractiveConfig, InteractiveEngine
from dinoseg.interactive.noc import Target, brush_dab, click_trace, iou, next_click
from serving.config import review_config

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
MIN_AREA = 0.01
MAX_CLICKS = 20


@dataclass
class Result:
    """One uncertain result: (H, W, 3) image, (H, W) bool pre-annotation, its target."""

    key: str
    class_name: str
    confidence: float
    image: np.ndarray
    mask: np.ndarray
    target: Target


@dataclass
class Effort:
    """Actions spent until the goal (or the limit): clicks, brush dabs, pixels under the brush."""

    clicks: int = 0
    dabs: int = 0
    pixels: int = 0
    reached: bool = False
    start_iou: float = 0.0
    end_iou: float = 0.0

    @property
    def actions(self) -> int:
        return self.clicks + self.dabs


def encode_once(predictor) -> None:
    """Remember each image's features: a val image is a query of every class it shows (the
    outputs are the predictor's own, each image is only encoded once)."""
    import hashlib

    encode, seen = predictor.encode, {}

    def remembered(pixels: torch.Tensor) -> list[torch.Tensor]:
        key = hashlib.sha256(pixels.numpy().tobytes()).hexdigest()
        if key not in seen:
            seen[key] = encode(pixels)
        return seen[key]

    predictor.encode = remembered


def uncertain_results(args: argparse.Namespace, below: float) -> tuple[list[Result], int]:
    """The ``args.results`` least confident results below ``below``, and how many results."""
    from dinoseg.predictor import load_predictor

    train, val = FolderDataset(args.data, "train"), FolderDataset(args.data, "val")
    predictor = load_predictor("prototype", backbone="packaged:dinov2-s")
    encode_once(predictor)
    found: list[Result] = []
    total, start = 0, time.perf_counter()
    for c in val.class_ids:
        pool = train.images_with_class(c, MIN_AREA)
        stem = pool[int(np.random.default_rng([args.seed, c]).integers(len(pool)))]
        image, labels = train.load_stem(stem)
        predictor.set_support([image], [labels == c], class_name=val.class_names[c])
        for q in val.images_with_class(c, MIN_AREA):
            image, labels = val.load_stem(q)
            pred = predictor.predict([image])[0]
            total += 1
            if pred.confidence < below:
                valid = labels != val.ignore_index
                found.append(Result(f"{q}/{val.class_names[c]}", val.class_names[c],
                                    float(pred.confidence), image, pred.mask,
                                    Target(labels == c, valid)))  # fmt: skip
        print(f"  {val.class_names[c]}: support {stem}, {total} results, {len(found)} uncertain, "
              f"{time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)  # fmt: skip
    found.sort(key=lambda r: r.confidence)
    return found[: args.results], total


def brush_on(pred: np.ndarray, target: Target, effort: Effort, args: argparse.Namespace) -> Effort:
    """Brush dabs from ``pred`` until the goal or ``args.max_actions`` actions in all."""
    effort.end_iou = iou(pred, target)
    while not effort.reached and effort.actions < args.max_actions:
        dab = brush_dab(pred, target, args.radius)
        if dab is None:
            effort.reached = True
            break
        pred, pixels = dab
        effort.dabs, effort.pixels = effort.dabs + 1, effort.pixels + pixels
        effort.end_iou = iou(pred, target)
        effort.reached = effort.end_iou >= args.goal
    return effort


def start(mask: np.ndarray, target: Target, goal: float) -> Effort:
    first = iou(mask, target)
    return Effort(reached=first >= goal, start_iou=first, end_iou=first)


def click_fix(r: Result, engine: InteractiveEngine, args: argparse.Namespace) -> Effort:
    """Clicks correcting the pre-annotation (the engine's base mask), then the brush."""
    effort = start(r.mask, r.target, args.goal)
    if effort.reached:
        return effort
    session = engine.session(r.key.split("/")[0], lambda: r.image)
    segmenter = ClickSegmenter(r.image, session.features, engine.config, base=r.mask)
    placed: list[list[Click]] = []

    def segment(clicks):
        placed.append(list(clicks))
        return segmenter(clicks)

    ious = click_trace(segment, r.target, min(MAX_CLICKS, args.max_actions))
    hit = next((i for i, v in enumerate(ious) if v >= args.goal), None)
    effort.clicks = len(ious) if hit is None else hit + 1
    effort.reached = hit is not None
    last = segmenter(placed[effort.clicks - 1]) if ious else r.mask
    return brush_on(last, r.target, effort, args)


def click_union(r: Result, engine: InteractiveEngine, args: argparse.Namespace) -> Effort:
    """Label Studio today: click regions (the engine on the clicks alone) + the pre-annotation,
    deleted first (one action) when more than half of it is wrong, else kept and its false
    positives erased with the brush; after 20 clicks, the brush."""
    effort = start(r.mask, r.target, args.goal)
    session = engine.session(r.key.split("/")[0], lambda: r.image)
    segmenter = ClickSegmenter(r.image, session.features, engine.config)
    kept, region, clicks = r.mask.copy(), np.zeros_like(r.mask), []
    right = np.count_nonzero(kept & r.target.mask & r.target.valid)
    if not effort.reached and right < 0.5 * np.count_nonzero(kept & r.target.valid):
        kept[:] = False
        effort.clicks += 1  # select the region, delete
    while not effort.reached and len(clicks) < MAX_CLICKS and effort.actions < args.max_actions:
        found = next_click(kept | region, r.target)
        if found is None:
            effort.reached = True
            break
        click = found[0]
        row, col = click.pixel(kept.shape)
        if not click.positive and kept[row, col]:  # the pre-annotation's error: the eraser
            erased, pixels = brush_dab(kept | region, r.target, args.radius)  # type: ignore[misc]
            kept &= erased
            effort.dabs, effort.pixels = effort.dabs + 1, effort.pixels + pixels
        else:
            clicks.append(click)
            region = segmenter(clicks)
            effort.clicks += 1
        effort.reached = iou(kept | region, r.target) >= args.goal
    return brush_on(kept | region, r.target, effort, args)


WAYS = ("brush from scratch", "fix the pre-annotation (brush)",
        "fix with click-to-mask (clicks correct the pre-annotation)",
        "click-to-mask as Label Studio wires it (click regions + the pre-annotation, deleted "
        "when more than half of it is wrong)")  # fmt: skip


def replay(r: Result, engine: InteractiveEngine, args: argparse.Namespace) -> dict[str, Effort]:
    empty = np.zeros_like(r.mask)
    return {
        WAYS[0]: brush_on(empty, r.target, start(empty, r.target, args.goal), args),
        WAYS[1]: brush_on(r.mask, r.target, start(r.mask, r.target, args.goal), args),
        WAYS[2]: click_fix(r, engine, args),
        WAYS[3]: click_union(r, engine, args),
    }


def summarise(efforts: list[Effort], args: argparse.Namespace) -> dict[str, float]:
    """Median / mean actions and brushed pixels to the goal (unreached: what the limit cost)."""
    med, mean = statistics.median, statistics.mean
    acts, px = [e.actions for e in efforts], [e.pixels for e in efforts]
    return {"actions_median": med(acts), "actions_mean": mean(acts),
            "clicks_mean": mean(e.clicks for e in efforts),
            "dabs_mean": mean(e.dabs for e in efforts),
            "pixels_median": med(px), "pixels_mean": mean(px),
            "reached_pct": 100 * mean(e.reached for e in efforts),
            "end_iou_mean": mean(e.end_iou for e in efforts)}  # fmt: skip


def table(rows: dict[str, dict[str, float]], args: argparse.Namespace) -> str:
    lines = [f"| way | actions to IoU {args.goal} (median / mean) | clicks + dabs (mean) "
             f"| brushed px (median / mean) | reach {args.goal} within {args.max_actions} "
             f"| mean IoU at the end |", "|---|---|---|---|---|---|"]  # fmt: skip
    for name, s in rows.items():
        lines.append(f"| {name} | {s['actions_median']:.0f} / {s['actions_mean']:.1f} | "
                     f"{s['clicks_mean']:.1f} + {s['dabs_mean']:.1f} | "
                     f"{s['pixels_median']:,.0f} / {s['pixels_mean']:,.0f} | "
                     f"{s['reached_pct']:.0f} % | {s['end_iou_mean']:.3f} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA / "camvid")
    ap.add_argument("--results", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--goal", type=float, default=0.9)
    ap.add_argument("--radius", type=float, default=25.0, help="largest brush radius (px)")
    ap.add_argument("--max-actions", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    below = review_config(ROOT / "params.yaml").confidence_threshold
    results, total = uncertain_results(args, below)
    print(f"{len(results)} least confident of the {total} results; confidence "
          f"{results[0].confidence:.3f}-{results[-1].confidence:.3f} (review below {below})",
          flush=True)  # fmt: skip
    config = InteractiveConfig()
    from dinoseg.backbone import load_backbone

    engine = InteractiveEngine(load_backbone("packaged:dinov2-s", layers=config.layers), config,
                               sessions=2)  # fmt: skip
    efforts: dict[str, list[Effort]] = {w: [] for w in WAYS}
    for i, r in enumerate(results):
        for way, e in replay(r, engine, args).items():
            efforts[way].append(e)
        if (i + 1) % 10 == 0:
            print(f"  {i + 1}/{len(results)} replayed", file=sys.stderr, flush=True)
    report(results, efforts, total, below, args)


def report(results: list[Result], efforts: dict[str, list[Effort]], total: int, below: float,
           args: argparse.Namespace) -> None:  # fmt: skip
    """Print the table (and write every figure as JSON with ``--out``)."""
    rows = {w: summarise(e, args) for w, e in efforts.items()}
    first = [e.start_iou for e in efforts[WAYS[1]]]
    print(f"pre-annotation IoU: median {statistics.median(first):.3f}, "
          f"mean {statistics.mean(first):.3f}")  # fmt: skip
    print(table(rows, args))
    if args.out:
        settings = {**vars(args), "data": str(args.data), "out": str(args.out),
                    "review_below": below, "results_total": total}  # fmt: skip
        per = [{"key": r.key, "confidence": r.confidence,
                **{w: asdict(efforts[w][i]) for w in WAYS}}
               for i, r in enumerate(results)]  # fmt: skip
        args.out.write_text(json.dumps({"settings": settings, "rows": rows, "results": per},
                                       indent=1))  # fmt: skip


if __name__ == "__main__":
    main()

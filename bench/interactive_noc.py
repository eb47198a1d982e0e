"""Click-to-mask, measured: NoC@85 / NoC@90 on CamVid val and the VOC subset, and latency.

The protocol is :mod:`dinoseg.interactive.noc` (first click at the object's most interior
point, each next click at the centre of the largest error region, at most 20). Objects: one
8-connected component of one class per (image, class) pair, at least ``--min-area`` of the
image, ``--objects`` per dataset drawn with ``--seed``; CamVid's val split, and the VOC-subset
images that ``dinoseg split`` holds back (``in_val(stem, 0.2)``; the settings were tuned on
CamVid train and the other VOC images). Rows:

- dinoseg clicks: :class:`~dinoseg.interactive.InteractiveEngine` (DINOv2 only);
- LiteMedSAM alone, clicks as point prompts (the packaged decoder with the same clicks);
- LiteMedSAM alone, clicks as points + a box of the positive clicks padded by 1/8 of the
  image's long side (LiteMedSAM only learnt box prompts);
- brushing from scratch: :func:`~dinoseg.interactive.noc.brush_trace`, radius <= 10 / 25 px.

Then rectangles (IoU of one tight ground-truth box) for both box routes, and the latency of a
click on a 960x720 image (a CamVid val image upscaled 2x).

Usage: OMP_NUM_THREADS=1 python bench/interactive_noc.py [--objects 100] [--out noc.json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import numpy as np
import torch

from dinoseg.backbone import load_backbone
from dinoseg.cache import cache_dir
from dinoseg.data.folder import FolderDataset
from dinoseg.data.split import in_val
from dinoseg.interactive import Box, Click, InteractiveConfig, InteractiveEngine
from dinoseg.interactive.box import dino_box_mask, sam_box_mask
from dinoseg.interactive.noc import (
    Target,
    brush_trace,
    click_trace,
    clicks_to_reach,
    iou,
    next_click,
    reached,
)
from dinoseg.teachers import build_teacher

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
Obj = tuple[str, str, np.ndarray, Target]


def sample_objects(root: Path, split: str, n: int, seed: int, min_area: float,
                   keep: Callable[[str], bool] = lambda s: True) -> list[Obj]:  # fmt: skip
    """``n`` objects: (key, class name, (H, W, 3) image, target), one per (image, class)."""
    from scipy import ndimage

    ds = FolderDataset(root, split)
    pairs = [(s, c) for s in ds.stems if keep(s) for c in ds.class_ids
             if ds.stats[s].pixels.get(c, 0) >= min_area * np.prod(ds.stats[s].shape)]  # fmt: skip
    rng = random.Random(seed)
    rng.shuffle(pairs)
    objects: list[Obj] = []
    for stem, c in pairs:
        image, labels = ds.load_stem(stem)
        comps, k = ndimage.label(labels == c, structure=np.ones((3, 3), bool))
        sizes = np.bincount(comps.ravel(), minlength=k + 1)
        big = [i for i in range(1, k + 1) if sizes[i] >= min_area * labels.size]
        if big:
            valid = labels != ds.ignore_index if ds.ignore_index is not None else labels >= 0
            objects.append((f"{root.name}/{stem}", ds.class_names[c], image,
                            Target(comps == rng.choice(big), valid)))  # fmt: skip
        if len(objects) == n:
            break
    return objects


def summarise(traces: Sequence[Sequence[float]], max_clicks: int) -> dict[str, float]:
    """NoC@85, NoC@90, failures at 90 (%), mean IoU after 1 and 5 clicks."""

    def at(t: Sequence[float], k: int) -> float:
        return t[min(k, len(t)) - 1] if t else 0.0

    return {
        "noc85": statistics.mean(clicks_to_reach(t, 0.85, max_clicks) for t in traces),
        "noc90": statistics.mean(clicks_to_reach(t, 0.90, max_clicks) for t in traces),
        "fail90_pct": 100 * statistics.mean(not reached(t, 0.90, max_clicks) for t in traces),
        "iou1": statistics.mean(at(t, 1) for t in traces),
        "iou5": statistics.mean(at(t, 5) for t in traces),
    }


def sam_points(sam, embedding, shape: tuple[int, int], clicks: Sequence[Click], *,
               pad: float | None) -> np.ndarray:  # fmt: skip
    """LiteMedSAM alone: the clicks as point prompts (+ a box around the positive ones)."""
    pts = torch.tensor([[[c.x, c.y] for c in clicks]], dtype=torch.float32)
    labels = torch.tensor([[int(c.positive) for c in clicks]])
    box = None
    if pad is not None:
        xs = [c.x for c in clicks if c.positive]
        ys = [c.y for c in clicks if c.positive]
        m = pad * max(shape)
        box = torch.tensor([[max(0, min(xs) - m), max(0, min(ys) - m),
                             min(shape[1], max(xs) + m), min(shape[0], max(ys) + m)]])  # fmt: skip
        box = sam.to_input_coords(box, shape)
    with torch.inference_mode():
        logits, _ = sam.decode(embedding, boxes=box, points=sam.to_input_coords(pts, shape),
                               point_labels=labels)  # fmt: skip
        return (sam.postprocess_masks(logits, shape)[0, 0] > 0).numpy()


def run_rows(objects: list[Obj], engine: InteractiveEngine, max_clicks: int) -> dict:
    rows: dict[str, list] = {k: [] for k in ("dinoseg clicks", "LiteMedSAM, clicks as points",
                                             "LiteMedSAM, points + box around them",
                                             "brush r<=10", "brush r<=25")}  # fmt: skip
    boxes: dict[str, list[float]] = {"LiteMedSAM box": [], "DINOv2 box": [],
                                     "dinoseg rectangle (union)": []}  # fmt: skip
    for i, (key, _, image, target) in enumerate(objects):
        session = engine.session(key, lambda image=image: image)
        shape = target.mask.shape
        rows["dinoseg clicks"].append(click_trace(partial(engine.segment, session), target,
                                                  max_clicks))  # fmt: skip
        engine.warm(session)
        emb = session.embedding
        for name, pad in (("LiteMedSAM, clicks as points", None),
                          ("LiteMedSAM, points + box around them", 0.125)):  # fmt: skip
            decoder = partial(sam_points, engine.sam, emb, shape, pad=pad)
            rows[name].append(click_trace(decoder, target, max_clicks))
        for r in (10, 25):
            rows[f"brush r<={r}"].append(brush_trace(target, r, max_clicks))
        ys, xs = np.nonzero(target.mask)
        box = Box(float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
        sam = sam_box_mask(engine.sam, emb, box, shape)
        dino = dino_box_mask(image, session.features, box)
        boxes["LiteMedSAM box"].append(iou(sam, target))
        boxes["DINOv2 box"].append(iou(dino, target))
        boxes["dinoseg rectangle (union)"].append(iou(engine.segment(session, [], box), target))
        if (i + 1) % 10 == 0:
            print(f"  {i + 1}/{len(objects)} objects", flush=True)
    out = {name: summarise(t, max_clicks) for name, t in rows.items()}
    out["rectangles"] = {k: statistics.mean(v) for k, v in boxes.items()}
    return out


def latency(shared: InteractiveEngine, objects: list[Obj], clicks: int = 10) -> dict:
    """Seconds on 960x720 (images upscaled 2x): new image, each warm click, a 10-click replay
    (an engine without a disk cache, warmed up on one image first)."""
    from PIL import Image

    engine = InteractiveEngine(shared.backbone, shared.config, sam=shared.sam)
    engine.session("warm-up", lambda: np.zeros((720, 960, 3), np.uint8))
    enc, per_click, replay, sam_embed, box_s = [], [], [], [], []
    for key, _, image, target in objects:
        big = np.asarray(Image.fromarray(image).resize((960, 720), Image.BILINEAR))
        up = Target(*(np.asarray(Image.fromarray(m).resize((960, 720), Image.NEAREST))
                      for m in (target.mask, target.valid)))  # fmt: skip
        t = time.perf_counter()
        session = engine.session(f"latency/{key}", lambda big=big: big)
        enc.append(time.perf_counter() - t)
        placed: list[Click] = []
        pred = np.zeros(big.shape[:2], bool)
        for _ in range(clicks):
            found = next_click(pred, up)
            if found is None:
                break
            placed.append(found[0])
            t = time.perf_counter()
            pred = engine.segment(session, placed)
            per_click.append(time.perf_counter() - t)
        session.segmenters.clear()
        t = time.perf_counter()
        engine.segment(session, placed)
        replay.append(time.perf_counter() - t)
        t = time.perf_counter()
        engine.warm(session)
        sam_embed.append(time.perf_counter() - t)
        engine.segment(session, [], Box(100, 100, 400, 400))  # the decoder's first call
        t = time.perf_counter()
        engine.segment(session, [], Box(300, 200, 600, 500))
        box_s.append(time.perf_counter() - t)
    q = np.quantile
    return {"encode_new_image_s": statistics.median(enc),
            "click_warm_median_s": float(q(per_click, 0.5)),
            "click_warm_p90_s": float(q(per_click, 0.9)), "click_warm_max_s": max(per_click),
            "replay_10_clicks_s": statistics.median(replay),
            "sam_embedding_s": statistics.median(sam_embed),
            "rectangle_warm_s": statistics.median(box_s)}  # fmt: skip


def table(results: dict) -> str:
    lines = ["| method | CamVid NoC@85 | NoC@90 | fail@90 | VOC NoC@85 | NoC@90 | fail@90 |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    cam, voc = results["camvid"], results["voc"]
    for name in cam:
        if name == "rectangles":
            continue
        cells = [f"{r['noc85']:.2f} | {r['noc90']:.2f} | {r['fail90_pct']:.0f} %"
                 for r in (cam[name], voc[name])]  # fmt: skip
        lines.append(f"| {name} | {cells[0]} | {cells[1]} |")
    for name, v in cam["rectangles"].items():
        lines.append(f"| {name}: IoU of one tight box | {v:.3f} | | | "
                     f"{voc['rectangles'][name]:.3f} | | |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-area", type=float, default=0.005, help="share of the image")
    ap.add_argument("--max-clicks", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--latency-images", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    config = InteractiveConfig()
    engine = InteractiveEngine(load_backbone("packaged:dinov2-s", layers=config.layers), config,
                               sam=build_teacher("litemedsam"),
                               cache_dir=cache_dir("interactive-bench"), sessions=2)  # fmt: skip
    camvid = sample_objects(DATA / "camvid", "val", args.objects, args.seed, args.min_area)
    voc = sample_objects(DATA / "pascal-voc-subset", "train", args.objects, args.seed,
                         args.min_area, keep=lambda s: in_val(s, 0.2))  # fmt: skip
    results: dict = {"settings": {**vars(args), "out": str(args.out), "config": repr(config)}}
    for name, objects in (("camvid", camvid), ("voc", voc)):
        print(f"{name}: {len(objects)} objects", flush=True)
        results[name] = run_rows(objects, engine, args.max_clicks)
    torch.set_num_threads(2)  # the latency target is for this 2-core machine
    results["latency_960x720"] = latency(engine, camvid[: args.latency_images])
    print(table(results))
    print(json.dumps(results["latency_960x720"], indent=1))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

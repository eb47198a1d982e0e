"""One incremental labelling round for the served head: wall time and what it buys (issue 18 §2).

The previous round's head was trained on 10 one-class labels per class for every CamVid class
but one (``--new-class``, absent from the base labels: its pixels ignore, its name unknown).
The round brings 10 annotator labels of that class under a new name (a labels folder of its own,
as ``data/labels``). Timed, each as one process would run it (2 CPU cores shared, 1 thread):

* ``warm``: ``train_head`` from the previous head (``init``; the new class gets a new row) with a
  short schedule (``--warm-steps``) = features (disk cache; the 10 new images' encoder cost is
  reported apart) + fit + held-back validation + checkpoint written;
* ``cold``: the same labels from scratch with the full schedule;
* ``evaluate``: the new head on 300 seeded 1-shot val episodes of every class.

Usage::

    OMP_NUM_THREADS=1 python bench/heads_round.py --out runs/heads/round.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from dinoseg.data import EpisodeSampler, FolderDataset
from dinoseg.heads.compare import compare, head_learner
from dinoseg.heads.predict import HeadPredictor
from dinoseg.heads.train import HeadTrainConfig, train_head
from dinoseg.io import load_label_map


def labels_folder(pool: FolderDataset, picks: dict[str, set[int]], names: dict[int, str],
                  out: Path) -> Path:
    """A labels folder: classes.json of ``names`` (pool ids), one-class masks of the picks."""
    shutil.rmtree(out, ignore_errors=True)
    (out / "train" / "images").mkdir(parents=True)
    (out / "train" / "masks").mkdir(parents=True)
    ignore = pool.ignore_index if pool.ignore_index is not None else 255
    (out / "classes.json").write_text(json.dumps(
        {"classes": {str(c): n for c, n in names.items()}, "ignore_index": ignore}))
    for stem, classes in picks.items():
        image = pool.image_path(stem).resolve()
        (out / "train" / "images" / image.name).symlink_to(image)
        labels = load_label_map(pool.mask_path(stem))
        mask = np.where(np.isin(labels, sorted(classes)), labels, ignore).astype(np.uint8)
        Image.fromarray(mask).save(out / "train" / "masks" / f"{stem}.png")
    return out


def draws(pool: FolderDataset, classes: list[int], start: int, n: int) -> dict[str, set[int]]:
    """Images ``start .. start + n`` of each class's seeded order -> the classes they label."""
    out: dict[str, set[int]] = {}
    for c in classes:
        stems = pool.images_with_class(c)
        order = np.random.default_rng([0, c]).permutation(len(stems))
        for j in order[start:start + n]:
            out.setdefault(stems[int(j)], set()).add(c)
    return out


def timed_eval(ckpt: Path, sampler: EpisodeSampler, names: dict[int, str],
               cache_dir: Path) -> tuple[dict[str, Any], float]:
    from dinoseg.feature_cache import FeatureCache

    start = time.perf_counter()
    head = HeadPredictor.load(ckpt, cache=FeatureCache(disk_dir=cache_dir))
    m = compare({"head": head_learner(head)}, sampler, names)["models"]["head"]
    per = {v["name"]: v["iou"] for v in m["per_class"].values()}
    return {"miou": m["miou"], "iou": per}, time.perf_counter() - start


def merged(pool: FolderDataset, labels: Path, out: Path) -> Path:
    """The pool's train split plus the labels (``label-<stem>``) as one dataset folder, its
    val split the pool's (what mlops/merge.py builds for the pipeline)."""
    shutil.rmtree(out, ignore_errors=True)
    for sub in ("images", "masks"):
        (out / "train" / sub).mkdir(parents=True)
    shutil.copy(pool.root / "classes.json", out / "classes.json")
    (out / "val").symlink_to((pool.root / "val").resolve())
    for stem in pool.stems:
        img = pool.image_path(stem)
        (out / "train" / "images" / img.name).symlink_to(img.resolve())
        (out / "train" / "masks" / f"{stem}.png").symlink_to(pool.mask_path(stem).resolve())
    for sub in ("images", "masks"):
        for f in (labels / "train" / sub).iterdir():
            (out / "train" / sub / f"label-{f.name}").symlink_to(f.resolve())
    return out


def fsdino_round(args: argparse.Namespace, pool: FolderDataset, labels: Path,
                 sampler: EpisodeSampler, names: dict[int, str]) -> dict[str, object]:
    """The segmenter's round: every weight of ``--fsdino`` (fold -1), ``--warm-steps`` steps."""
    from dinoseg.feature_cache import CachedPredictor, FeatureCache
    from dinoseg.heads.compare import fewshot_learner
    from dinoseg.predictor import load_predictor
    from dinoseg.train.loop import TrainConfig
    from dinoseg.train.run import run_training

    data = merged(pool, labels, args.work / "fs-merged")
    cfg = TrainConfig(data=str(data), fold=-1, init=str(args.fsdino), init_weights="all",
                      image_size=336, steps=args.warm_steps, epoch_steps=args.warm_steps // 2,
                      batch_size=4, val_episodes=150, warmup_steps=0, threads=1,
                      feature_cache=str(args.feature_cache))
    start = time.perf_counter()
    ckpt = run_training(cfg, args.work / "fsdino-warm")
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    p = CachedPredictor(load_predictor(str(ckpt)), FeatureCache(disk_dir=args.feature_cache))
    m = compare({"fs": fewshot_learner(p)}, sampler, names)["models"]["fs"]
    eval_s = time.perf_counter() - start
    print(f"fsdino warm: train {train_s:.1f} s, evaluate {eval_s:.1f} s; val-all mIoU "
          f"{m['miou']:.1f}")
    return {"train_seconds": train_s, "eval_seconds": eval_s, "miou": m["miou"],
            "iou": {v["name"]: v["iou"] for v in m["per_class"].values()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pool", type=Path, default=Path("runs/heads/camvid-select"))
    p.add_argument("--report-data", type=Path, default=Path("../shared/data/camvid"))
    p.add_argument("--work", type=Path, default=Path("runs/heads/round"))
    p.add_argument("--new-class", default="bicyclist")
    p.add_argument("--warm-steps", type=int, default=100)
    p.add_argument("--feature-cache", type=Path, default=Path("runs/cache/features"))
    p.add_argument("--fsdino", type=Path, default=None,
                   help="also the segmenter's warm round from this all-classes checkpoint")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    torch.set_num_threads(1)
    pool = FolderDataset(args.pool, "train")
    new = next(c for c, n in pool.class_names.items() if n == args.new_class)
    old = [c for c in pool.class_ids if c != new]
    base = labels_folder(pool, draws(pool, old, 0, 10),
                         {c: n for c, n in pool.class_names.items() if c != new},
                         args.work / "base")
    labels = labels_folder(pool, draws(pool, [new], 0, 10), {new: args.new_class},
                           args.work / "labels")
    cfg = HeadTrainConfig(data=(str(base),), threads=1, feature_cache=str(args.feature_cache))
    previous = train_head(cfg, args.work / "previous")
    both = replace(cfg, data=(str(base), str(labels)))
    report = FolderDataset(args.report_data, "val")
    sampler = EpisodeSampler(report, None, 1, 300, seed=0)
    out: dict[str, object] = {"settings": {k: str(v) for k, v in vars(args).items()}}
    for name, run in (("warm", replace(both, init=str(previous), steps=args.warm_steps)),
                      ("cold", both)):
        start = time.perf_counter()
        ckpt = train_head(run, args.work / name)
        train_s = time.perf_counter() - start
        scores, eval_s = timed_eval(ckpt, sampler, report.class_names, args.feature_cache)
        metrics = json.loads((ckpt / "metrics.json").read_text())
        out[name] = {"train_seconds": train_s, "eval_seconds": eval_s,
                     "fit_seconds": metrics["fit_seconds"],
                     "feature_seconds": metrics["feature_seconds"],
                     "val": metrics["val"], "episodes": scores}
        print(f"{name}: train {train_s:.1f} s (features {metrics['feature_seconds']:.1f}, fit "
              f"{metrics['fit_seconds']:.1f}), evaluate {eval_s:.1f} s; val-all mIoU "
              f"{scores['miou']:.1f}, {args.new_class} {scores['iou'].get(args.new_class)}")
    known = [c for c, n in report.class_names.items() if n != args.new_class]
    out["previous"] = timed_eval(previous, EpisodeSampler(report, known, 1, 300, seed=0),
                                 report.class_names, args.feature_cache)[0]
    if args.fsdino is not None:
        out["fsdino"] = fsdino_round(args, pool, labels, sampler, report.class_names)
    args.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

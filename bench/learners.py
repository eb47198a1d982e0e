"""Which learner should serve a labelled class? Supervised heads vs few-shot (+ memory) vs their
fusion, by labels per class, on the same seeded 1-shot episodes (issue 18 §2).

Labels are simulated as annotators produce them: for every class, ``n`` images drawn (seeded,
nested: the 3 include the 1) from the images of a *fit pool* where the class covers at least
0.5 %; each drawn image labels ONE class, every other pixel ignore (an image drawn for two
classes carries both); ``--full`` variants label the same images fully, for reference. Every
label set is a dataset folder under ``--work`` (images symlinked), read by the heads
(:mod:`dinoseg.heads`) and built into the support memory of the served few-shot side, the
prototype + memory (:mod:`dinoseg.memory`, ``MemoryMode`` defaults), so all learners learn from
the same labels. ``--fewshot`` checkpoints (FS-DINO) and the plain prototype run once per
episode and are fused with every head (``--weights``); ``--thresholds`` adds each head and
fusion at other foreground thresholds.

Splits (honest measurement): ``--pool`` (CamVid train minus a hash-held-back fifth, ``dinoseg
split``) gives the labels; ``--table select`` chooses the head, its schedule, the threshold and
the fusion weight on 1-shot episodes of the held-back fifth (``--select-data``); ``--table
curve`` reports on CamVid val (never used for a choice), fold 0's classes (300 episodes, seed
0 = the benchmark's) and all 11 (300 episodes, seed 0).

Usage::

    OMP_NUM_THREADS=1 python bench/learners.py --table select --out runs/heads/select.json \\
        --counts 1,10,0 --draws 1 --weights 0.25 0.5 0.75 --thresholds 0.3 0.4
    OMP_NUM_THREADS=1 python bench/learners.py --table curve --out runs/heads/curve.json \\
        --counts 1,3,10,30,0 --draws 3 --full --weights 0.75 --thresholds 0.25 0.3 \\
        --fewshot runs/heads/fsdino-fold0 --fewshot runs/heads/fsdino-all

(docs/training-notes.md, "Served classes", has every command and table.)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dinoseg.backbone import load_backbone
from dinoseg.data import EpisodeSampler, FolderDataset
from dinoseg.feature_cache import CachedPredictor, FeatureCache
from dinoseg.heads.compare import Fusion, ProbFn, compare, fewshot_learner, head_learner
from dinoseg.heads.data import (
    LabelledImage,
    content_hash,
    grow_classes,
    load_labelled,
    split_held_back,
)
from dinoseg.heads.features import BlockFeatures
from dinoseg.heads.fit import fit_head
from dinoseg.heads.predict import HeadPredictor
from dinoseg.heads.train import HeadTrainConfig, make_head
from dinoseg.models.build import build_segmenter
from dinoseg.predictor import FewShotPredictor, load_predictor
from dinoseg.preprocess import Geometry

FOLD0 = ("sky", "road", "sign_symbol", "pedestrian")
SIZE = 336


def draw(pool: FolderDataset, n: int, seed: int) -> dict[str, set[int]]:
    """stem -> classes it is labelled for: ``n`` images per class (0 = all), nested in ``n``."""
    out: dict[str, set[int]] = {}
    for c in pool.class_ids:
        stems = pool.images_with_class(c)
        order = np.random.default_rng([seed, c]).permutation(len(stems))
        for j in order if n == 0 else order[:n]:
            out.setdefault(stems[int(j)], set()).add(c)
    return out


def write_labels(pool: FolderDataset, draws: dict[str, set[int]], out: Path, full: bool) -> Path:
    """A dataset folder of the drawn labels (one-class masks, or the full masks)."""
    from PIL import Image

    from dinoseg.io import load_label_map

    if (out / "classes.json").is_file():
        return out
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "train" / "images").mkdir(parents=True)
    (tmp / "train" / "masks").mkdir(parents=True)
    shutil.copy(pool.root / "classes.json", tmp / "classes.json")
    ignore = pool.ignore_index if pool.ignore_index is not None else 255
    for stem, classes in draws.items():
        image = pool.image_path(stem).resolve()
        os.symlink(image, tmp / "train" / "images" / image.name)
        labels = load_label_map(pool.mask_path(stem))
        if not full:
            labels = np.where(np.isin(labels, sorted(classes)), labels, ignore)
        Image.fromarray(labels.astype(np.uint8)).save(tmp / "train" / "masks" / f"{stem}.png")
    tmp.rename(out)
    return out


class Setup:
    """The shared backbone, feature cache and an in-process store of every image's blocks."""

    def __init__(self, feature_cache: Path):
        self.backbone = load_backbone("packaged:dinov2-s")
        self.cache = FeatureCache(max_bytes=1 << 30, disk_dir=feature_cache)
        self.all = BlockFeatures(self.backbone, self.backbone.layers, SIZE, self.cache)
        self._store: dict[str, tuple[list[Tensor], Geometry]] = {}

    def encoder(self, blocks: Iterable[int]) -> Callable[[np.ndarray], tuple[list[Tensor],
                                                                           Geometry]]:
        idx = [self.backbone.layers.index(b) for b in blocks]

        def encode(image: np.ndarray) -> tuple[list[Tensor], Geometry]:
            key = content_hash(image)
            if key not in self._store:
                self._store[key] = self.all(image)
            feats, geom = self._store[key]
            return [feats[i] for i in idx], geom

        return encode

    def head(self, folder: Path, cfg: HeadTrainConfig) -> tuple[HeadPredictor, dict[str, Any]]:
        """A head fit on a label folder (no checkpoint written)."""
        sources = [(folder, "train")]
        classes = grow_classes([], sources)
        images: list[LabelledImage] = load_labelled(sources, self.encoder(cfg.blocks), classes,
                                                    self.backbone.patch_size)
        fit, val = split_held_back(images, cfg.val_fraction, min_images=cfg.min_val_images)
        head, _ = make_head(cfg, classes, self.backbone.embed_dim, fit)
        result = fit_head(head, fit, val, cfg.schedule)
        encoder = BlockFeatures(self.backbone, cfg.blocks, SIZE, self.cache)
        info = {"fit_images": len(fit), "val_images": len(val), "best_step": result["best_step"],
                "fit_seconds": round(result["seconds"], 2)}
        return HeadPredictor(head, encoder, threshold=cfg.threshold), info

    def fewshot(self, model: str, memory: Path | None = None) -> ProbFn:
        if model in ("prototype", "knn"):
            p = FewShotPredictor(build_segmenter(model), self.backbone, image_size=SIZE,
                                 model_id=model)
        else:
            p = load_predictor(model, image_size=SIZE)
            p.backbone = self.backbone
        if memory is not None:
            from dinoseg.memory import SupportMemory

            p.attach_memory(SupportMemory.open(memory))
        return fewshot_learner(CachedPredictor(p, self.cache))

    def memory(self, folder: Path) -> Path:
        from dinoseg.memory import MemoryEncoder, Source, build_memory

        out = folder.with_name(folder.name + ".memory")
        enc = MemoryEncoder(self.backbone, image_size=SIZE, layer=10,
                            encode=lambda x: self.cache.encode(self.backbone, x))
        build_memory(out, [Source(folder, "train")], enc)
        return out


def head_variants(table: str, names: str | None = None) -> dict[str, HeadTrainConfig]:
    """The heads of a table (``select``: the grid, or the ``names`` of it; ``curve``: the
    selected head = the defaults)."""
    base = HeadTrainConfig(threads=1, val_fraction=0.0)
    if table == "curve":
        return {"head": base}
    b10 = replace(base, blocks=(10,))
    grid = {"linear b10": b10, "linear b6-10": replace(base, blocks=(6, 7, 8, 9, 10)),
            "mlp b10": replace(b10, kind="mlp"), "conv b10": replace(b10, kind="conv")}
    grid |= {f"linear b10 balance {b:g}": replace(b10, balance=b) for b in (0.0, 1.0)}
    grid |= {f"linear b10 {s} steps": replace(b10, steps=s) for s in (100, 1000)}
    return {n: grid[n] for n in names.split(",")} if names else grid


def memo(fn: ProbFn) -> ProbFn:
    """``fn`` computed once per episode (query, supports, class), kept as float16."""
    store: dict[tuple[str, tuple[str, ...], str], np.ndarray] = {}

    def prob(ep: Any, class_name: str) -> np.ndarray:
        key = (ep["query_name"], tuple(ep["support_names"]), class_name)
        if key not in store:
            store[key] = fn(ep, class_name).astype(np.float16)
        return store[key].astype(np.float32)

    return prob


def fusions_of(heads: Iterable[str], others: Iterable[str], weights: Iterable[float],
               thresholds: Iterable[float]) -> tuple[dict[str, Fusion], dict[str, float]]:
    """Every head fused with every other learner at every weight, and every head and fusion
    also at other thresholds (a head alone = a weight-1 "fusion" with itself); and those
    thresholds by name."""
    heads, others, thresholds = list(heads), list(others), list(thresholds)
    fusions = {f"{h}*{w:g}+{o}": Fusion(h, o, w) for h in heads for o in others for w in weights}
    fusions |= {h: Fusion(h, h, 1.0) for h in heads}
    out, cuts = {}, {}
    for name, f in fusions.items():
        if name not in heads:
            out[name] = f
        for t in thresholds:
            out[f"{name} (threshold {t:g})"] = f
            cuts[f"{name} (threshold {t:g})"] = t
    return out, cuts


def run_counts(setup: Setup, args: argparse.Namespace, samplers: dict[str, EpisodeSampler],
               class_names: dict[int, str]) -> list[dict[str, Any]]:
    """Every label count x draw x labelling: heads, kNN + memory, the fixed learners (the
    prototype and ``--fewshot`` checkpoints, computed once) and the fusions, on every sampler."""
    pool = FolderDataset(args.pool, "train")
    fixed = {"prototype": memo(setup.fewshot("prototype"))}
    fixed |= {Path(m).name: memo(setup.fewshot(m)) for m in args.fewshot or []}
    rows = []
    for n in [int(c) for c in args.counts.split(",")]:
        for d in range(args.draws if n in (1, 3, 10) else 1):
            draws = draw(pool, n, seed=d)
            for full in (False, True) if args.full else (False,):
                tag = f"n{n or 'all'}-d{d}-{'full' if full else 'one'}"
                folder = write_labels(pool, draws, args.work / tag, full)
                learners: dict[str, ProbFn] = {}
                infos = {}
                for name, cfg in head_variants(args.table, args.heads).items():
                    hp, infos[name] = setup.head(folder, cfg)
                    learners[name] = head_learner(hp)
                if not full:  # the served few-shot side: the prototype with the memory
                    learners["prototype+memory"] = setup.fewshot("prototype",
                                                                 setup.memory(folder))
                others = [o for o in learners if o not in infos] + list(fixed)
                fusions, thresholds = fusions_of(infos, others, args.weights, args.thresholds)
                for sname, sampler in samplers.items():
                    start = time.perf_counter()
                    r = compare(learners | fixed, sampler, class_names, fusions=fusions,
                                thresholds=thresholds)
                    rows.append({"labels": n, "draw": d, "full": full, "episodes": sname,
                                 "heads": infos, "seconds": time.perf_counter() - start,
                                 "models": summarise(r["models"])})
                    print_rows(rows[-1])
                    args.out.write_text(json.dumps({"rows": rows}, indent=1))
    return rows


def summarise(models: dict[str, Any]) -> dict[str, Any]:
    return {name: {"miou": m["miou"], "fb_iou": m["fb_iou"],
                   "iou": {v["name"]: v["iou"] for v in m["per_class"].values()}}
            for name, m in models.items()}


def print_rows(row: dict[str, Any]) -> None:
    print(f"\n== {row['labels'] or 'all'} labels/class, draw {row['draw']}, "
          f"{'full' if row['full'] else 'one-class'} labels, episodes {row['episodes']} "
          f"({row['seconds']:.0f} s)")
    for name, m in row["models"].items():
        fold0 = np.mean([m["iou"][c] for c in FOLD0 if m["iou"].get(c) is not None])
        per = " ".join(f"{k[:5]} {v:4.1f}" for k, v in m["iou"].items() if v is not None)
        print(f"{name:36s} mIoU {m['miou']:5.1f} fold0 {fold0:5.1f} FB {m['fb_iou']:5.1f} | {per}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--table", default="curve", help="select | curve")
    p.add_argument("--pool", type=Path, default=Path("runs/heads/camvid-select"),
                   help="dataset whose train split gives the labels (`dinoseg split` output)")
    p.add_argument("--select-data", type=Path, default=Path("runs/heads/camvid-select"))
    p.add_argument("--report-data", type=Path, default=Path("../shared/data/camvid"))
    p.add_argument("--work", type=Path, default=Path("runs/heads/labels"))
    p.add_argument("--counts", default="1,3,10,30,0", help="labels per class (0 = all)")
    p.add_argument("--draws", type=int, default=3, help="label draws for 1 / 3 / 10 per class")
    p.add_argument("--full", action="store_true", help="also the fully labelled variants")
    p.add_argument("--weights", type=float, nargs="*", default=[0.5])
    p.add_argument("--thresholds", type=float, nargs="*", default=[])
    p.add_argument("--heads", default=None, help="select: only these heads (comma-separated)")
    p.add_argument("--fewshot", action="append", default=None, help="checkpoint dirs")
    p.add_argument("--episodes", type=int, default=300)
    p.add_argument("--feature-cache", type=Path, default=Path("runs/cache/features"))
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    torch.set_num_threads(1)
    setup = Setup(args.feature_cache)
    if args.table == "select":
        ds = FolderDataset(args.select_data, "val")
        samplers = {"select-all": EpisodeSampler(ds, None, 1, args.episodes, seed=0)}
    else:
        ds = FolderDataset(args.report_data, "val")
        fold0 = [c for c, n in ds.class_names.items() if n in FOLD0]
        samplers = {"val-fold0": EpisodeSampler(ds, fold0, 1, args.episodes, seed=0),
                    "val-all": EpisodeSampler(ds, None, 1, args.episodes, seed=0)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows = run_counts(setup, args, samplers, ds.class_names)
    args.out.write_text(json.dumps({"settings": {k: str(v) for k, v in vars(args).items()},
                                    "rows": rows}, indent=1))


if __name__ == "__main__":
    main()

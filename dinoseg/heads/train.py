"""A whole head training run: label sources -> cached features -> fit -> checkpoint directory.

Config layers as everywhere: :class:`HeadTrainConfig` defaults <- ``params.yaml`` section
``heads`` <- flags / ``KEY=VALUE``; the resolved config is saved beside the checkpoint.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dinoseg.backbone import DEFAULT_BACKBONE, DEFAULT_LAYERS
from dinoseg.heads.data import LabelledImage, grow_classes, load_labelled, split_held_back
from dinoseg.heads.fit import Schedule, feature_statistics, fit_head
from dinoseg.heads.model import HeadSpec, SegHead, build_head, grow_from
from dinoseg.io import InputError

log = logging.getLogger(__name__)


@dataclass
class HeadTrainConfig:
    """Everything a head training run reads (``params.yaml`` section ``heads``)."""

    # label sources DIR[:SPLIT] (split default train), increasing priority
    data: tuple[str, ...] = ("../shared/data/camvid:train",)
    kind: str = "linear"  # linear | mlp | conv (dinoseg.heads.model)
    # backbone blocks the head reads (concatenated): 6-10 beat block 10 alone, an MLP and a 3x3
    # conv head on the selection split over 1 / 10 / all labels per class (training-notes)
    blocks: tuple[int, ...] = (6, 7, 8, 9, 10)
    hidden: int = 256
    dropout: float = 0.1
    backbone: str = DEFAULT_BACKBONE
    layers: tuple[int, ...] = DEFAULT_LAYERS  # blocks run (as the few-shot models: shared cache)
    image_size: int = 336
    # foreground = the class's softmax probability above it (0.2-0.3 equal, 0.5 -3 mIoU: the
    # softmax spreads over many classes; selection split, training-notes)
    threshold: float = 0.25
    steps: int = 300
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    balance: float = 0.5  # class weights (mean mass / class mass) ** balance
    val_fraction: float = 0.2  # held-back labelled images, by content hash
    min_val_images: int = 5  # a class needs this many labelled images before any is held back
    eval_every: int = 50
    seed: int = 0
    threads: int = 2
    init: str = ""  # a head checkpoint to continue from (its classes a subset of the new ones)
    feature_cache: str = ""  # directory of cached backbone features ("" = none)

    @property
    def schedule(self) -> Schedule:
        return Schedule(steps=self.steps, batch_size=self.batch_size, lr=self.lr,
                        weight_decay=self.weight_decay, balance=self.balance,
                        eval_every=self.eval_every, seed=self.seed)


def parse_source(text: str) -> tuple[str, str]:
    """``DIR[:SPLIT]`` -> ``(DIR, SPLIT)``, split default ``train``."""
    base, sep, split = text.rpartition(":")
    if sep and base and "/" not in split:
        return base, split or "train"
    return text, "train"


def make_head(cfg: HeadTrainConfig, classes: Sequence[str], dim: int,
              fit: Sequence[LabelledImage]) -> tuple[SegHead, int]:
    """A new head over ``classes``, warm-started from ``cfg.init`` when given (else with the
    fit images' feature statistics); returns it and the number of classes carried over."""
    spec = HeadSpec(kind=cfg.kind, blocks=tuple(cfg.blocks), dim=dim, classes=tuple(classes),
                    hidden=cfg.hidden, dropout=cfg.dropout)
    head = build_head(spec, seed=cfg.seed)
    if cfg.init:
        from dinoseg.heads.checkpoint import load_head

        old, _ = load_head(cfg.init)
        return head, grow_from(head, old)
    head.set_statistics(*feature_statistics(fit))
    return head, 0


def label_counts(images: Sequence[LabelledImage], classes: Sequence[str]) -> dict[str, int]:
    """Class name -> labelled images showing it."""
    counts = Counter(k for im in images for k in im.classes)
    return {name: counts.get(k, 0) for k, name in enumerate(classes)}


def model_card(cfg: HeadTrainConfig, metrics: dict[str, Any]) -> str:
    val = metrics["val"]
    score = "none held back" if val is None else f"{val['miou']:.1f} mIoU (patch grid)"
    return (
        f"# dinoseg supervised head `{cfg.kind}` on blocks {list(cfg.blocks)}\n\n"
        f"- Backbone: `{cfg.backbone}` (frozen), image long side {cfg.image_size} px\n"
        f"- Classes ({len(metrics['classes'])}): {', '.join(metrics['classes'])}\n"
        f"- Labels: {', '.join(cfg.data)}; {metrics['fit_images']} images fit, "
        f"{metrics['val_images']} held back by content hash ({cfg.val_fraction:.0%})\n"
        f"- Schedule: {cfg.steps} steps x {cfg.batch_size} images, AdamW lr {cfg.lr}, "
        f"class balance {cfg.balance}, seed {cfg.seed}; best step {metrics['best_step']}\n"
        f"- Warm start: {cfg.init or 'none'}\n"
        f"- Held-back validation: {score}\n"
        f"- Time: {metrics['seconds']:.1f} s (features {metrics['feature_seconds']:.1f} s, "
        f"fit {metrics['fit_seconds']:.1f} s) on {cfg.threads} CPU threads\n"
    )


def train_head(cfg: HeadTrainConfig, out_dir: str | Path, *,
               on_eval: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """Train a head per ``cfg`` and write its checkpoint directory to ``out_dir``."""
    from dinoseg.backbone import load_backbone
    from dinoseg.config import save_resolved
    from dinoseg.feature_cache import FeatureCache
    from dinoseg.heads.checkpoint import load_head, save_head
    from dinoseg.heads.features import BlockFeatures

    start = time.perf_counter()
    torch.set_num_threads(cfg.threads)
    sources = [parse_source(s) for s in cfg.data]
    if not sources:
        raise InputError("give at least one label source (data=DIR[:SPLIT],...)")
    start_classes = list(load_head(cfg.init)[0].classes) if cfg.init else []
    classes = grow_classes(start_classes, sources)
    if not classes:
        raise InputError(f"no class named in {list(cfg.data)}: nothing to train")
    backbone = load_backbone(cfg.backbone, layers=cfg.layers)
    cache = FeatureCache(max_bytes=0, disk_dir=cfg.feature_cache or None)
    encode = BlockFeatures(backbone, cfg.blocks, cfg.image_size, cache)
    images = load_labelled(sources, encode, classes, backbone.patch_size)
    feature_seconds = time.perf_counter() - start
    fit, val = split_held_back(images, cfg.val_fraction, min_images=cfg.min_val_images,
                               seed=cfg.seed)
    head, carried = make_head(cfg, classes, backbone.embed_dim, fit)
    result = fit_head(head, fit, val, cfg.schedule, on_eval=on_eval)
    metrics = {
        "classes": classes, "carried_classes": carried,
        "labels_per_class": label_counts(fit, classes),
        "val_labels_per_class": label_counts(val, classes),
        "fit_images": len(fit), "val_images": len(val), "val": result["val"],
        "best_step": result["best_step"], "history": result["history"],
        "class_weights": result["class_weights"], "feature_seconds": feature_seconds,
        "fit_seconds": result["seconds"], "seconds": time.perf_counter() - start,
    }  # fmt: skip
    out = save_head(out_dir, head, backbone=cfg.backbone, layers=list(cfg.layers),
                    image_size=cfg.image_size, threshold=cfg.threshold, metrics=metrics,
                    card=model_card(cfg, metrics))
    save_resolved(cfg, out)
    return out

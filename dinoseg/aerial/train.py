"""``dinoseg aerial train``: a light supervised head for aerial maps, on DINOv2 tiles.

The aerial article's recommendation (§9.2-9.3): DINOv2 features + a light head (linear, MLP
or a small CNN: :mod:`dinoseg.heads.model`) with one of three transfer strategies
(:mod:`dinoseg.heads.finetune`): ``frozen`` (the head on cached features; minutes on 2 cores),
``finetune`` (the last ``tune_blocks`` blocks up to the last one the head reads, at
``backbone_lr``), ``progressive`` (those blocks unfrozen one by one on a schedule), with
optional augmentation views (crop, rotate, jitter, blur: :mod:`dinoseg.aerial.views`).

Training images are cut into the tiles the pipeline uses (``tile``, ``overlap``, encoder scale
``image_size / tile``), so the head sees at training what it sees on a map. The checkpoint is a
head checkpoint directory (:mod:`dinoseg.heads.checkpoint`) + ``tuned_blocks.safetensors`` for
the tuned strategies + ``pixel_head.safetensors`` / ``pixel_head.json`` (the pixel head fitted
beside it: :mod:`dinoseg.aerial.pixels`) + ``resolved_config.json``; ``metrics.json`` records
``aerial`` (tile, scale, strategy, tuned blocks) for :func:`load_aerial_head`. Config layers:
code defaults <- params file section ``aerial_train`` <- flags <- ``KEY=VALUE``.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from dinoseg.aerial.views import ViewPlan
from dinoseg.backbone import DEFAULT_BACKBONE, DinoBackbone
from dinoseg.heads.fit import Schedule
from dinoseg.heads.model import HeadSpec, SegHead, build_head
from dinoseg.io import InputError

if TYPE_CHECKING:
    from dinoseg.aerial.pixels import PixelHead
    from dinoseg.aerial.trainset import TrainImage
    from dinoseg.heads.finetune import TuneItem, TunePlan
    from dinoseg.heads.split import SplitBackbone

log = logging.getLogger(__name__)


@dataclass
class AerialTrainConfig:
    """Everything ``dinoseg aerial train`` reads."""

    # label sources DIR[:SPLIT] (split default train), increasing priority
    data: tuple[str, ...] = ("../shared/data/dubai:train",)
    images: tuple[str, ...] = ()  # only these image stems ("" = all)
    strategy: str = "frozen"  # frozen | finetune | progressive
    kind: str = "linear"  # linear | mlp | conv (3x3 conv, the small CNN)
    # every other block from 2: chosen over 6-10 on the aerial gate, 3 seeds (docs/aerial.md)
    blocks: tuple[int, ...] = (2, 4, 6, 8, 10)
    hidden: int = 256
    dropout: float = 0.1
    backbone: str = DEFAULT_BACKBONE
    tile: int = 518  # as the pipeline (AerialConfig.tile / overlap / image_size)
    overlap: int = 96
    image_size: int = 0  # encoder px per tile side; 0 = native resolution
    augment: tuple[str, ...] = ()  # crop, rotate, jitter, blur (or "all")
    views: int = 4  # augmented views per image (with augment)
    strength: float = 0.25
    steps: int = 300  # held-back mIoU plateaus from ~100 steps (frozen linear, Dubai train)
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    balance: float = 0.5
    tune_blocks: int = 2  # finetune / progressive: last blocks (up to max(blocks)) trained
    backbone_lr: float = 2e-5
    val_fraction: float = 0.2  # held-back labelled images (content hash), for the best step
    min_val_images: int = 3
    eval_every: int = 50
    seed: int = 0
    threads: int = 2
    feature_cache: str = ""  # directory of cached prefix features ("" = none)
    # steps of the pixel head (colour and texture per pixel, dinoseg.aerial.pixels) fitted
    # beside the patch head on the fit images (0 = none); maps multiply in its evidence with
    # the aerial config's head_pixel_weight
    pixel_steps: int = 600

    @property
    def scale(self) -> float:
        return self.image_size / self.tile if self.image_size else 1.0

    @property
    def views_plan(self) -> ViewPlan:
        from dinoseg.aerial.views import parse_augment

        return ViewPlan(self.tile, self.overlap, parse_augment(self.augment), self.views,
                        self.strength, self.seed)  # fmt: skip

    @property
    def schedule(self) -> Schedule:
        return Schedule(steps=self.steps, batch_size=self.batch_size, lr=self.lr,
                        weight_decay=self.weight_decay, balance=self.balance,
                        eval_every=self.eval_every, seed=self.seed)  # fmt: skip

    def check(self) -> None:
        """:class:`InputError` for settings no run could use (before anything is read)."""
        from dinoseg.heads.finetune import TunePlan

        TunePlan(self.strategy, self.tune_blocks, self.backbone_lr)
        self.views_plan.check()
        HeadSpec(self.kind, tuple(self.blocks), 1, ("a", "b"), self.hidden, self.dropout)
        for key in ("steps", "batch_size", "eval_every", "threads"):
            if getattr(self, key) < 1:
                raise InputError(f"{key} must be positive, got {getattr(self, key)}")
        if self.pixel_steps < 0:
            raise InputError(f"pixel_steps must be 0 (no pixel head) or more, got "
                             f"{self.pixel_steps}")  # fmt: skip
        if not self.lr > 0:
            raise InputError(f"lr must be positive, got {self.lr}")
        if not self.data:
            raise InputError("give at least one label source (--data DIR[:SPLIT])")


def model_card(cfg: AerialTrainConfig, metrics: dict[str, Any]) -> str:
    val = metrics["val"]
    score = "none held back" if val is None else f"{val['miou']:.1f} mIoU (patch grid)"
    tuned = metrics["aerial"]["tuned_blocks"]
    stopped = f"- **Stopped early**: {metrics['stopped']}\n" if metrics.get("stopped") else ""
    px = metrics.get("pixel_head")
    pixel = (f"- Pixel head (colour and texture per pixel): {px['samples']} labelled pixels, "
             f"{px['steps']} steps, {px['seconds']:.1f} s\n" if px else "- Pixel head: none\n")
    return (
        f"# dinoseg aerial head `{cfg.kind}` on blocks {list(cfg.blocks)}, `{cfg.strategy}`\n\n"
        f"- Backbone: `{cfg.backbone}`, tuned blocks {tuned or 'none (frozen)'}"
        f"{f' at lr {cfg.backbone_lr}' if tuned else ''}\n"
        f"- Tiles: {cfg.tile} px overlapping {cfg.overlap}, encoder scale {cfg.scale:g}\n"
        f"- Classes ({len(metrics['classes'])}): {', '.join(metrics['classes'])}\n"
        f"- Labels: {', '.join(cfg.data)}; {metrics['fit_images']} images "
        f"({metrics['fit_views']} views) fit, {metrics['val_images']} held back by content "
        f"hash\n"
        f"- Augmentation: {', '.join(metrics['aerial']['augment']) or 'none'}"
        f"{f' ({cfg.views} views per image)' if metrics['aerial']['augment'] else ''}\n"
        f"- Schedule: {cfg.steps} steps x {cfg.batch_size} views, AdamW lr {cfg.lr}, class "
        f"balance {cfg.balance}, seed {cfg.seed}; best step {metrics['best_step']}\n"
        f"- Held-back validation: {score}\n{pixel}{stopped}"
        f"- Time: {metrics['seconds']:.1f} s (features {metrics['feature_seconds']:.1f} s, fit "
        f"{metrics['fit_seconds']:.1f} s) on {cfg.threads} CPU threads\n"
    )


def _write(out: Path, head: SegHead, split: Any, cfg: AerialTrainConfig,
           metrics: dict[str, Any], pixel: PixelHead | None = None) -> Path:  # fmt: skip
    """The checkpoint directory, all files or none (built beside ``out``, then moved)."""
    from dinoseg.aerial.pixels import save_pixel_head
    from dinoseg.config import save_resolved
    from dinoseg.heads.checkpoint import save_head
    from dinoseg.heads.split import save_tuned_blocks

    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        built = save_head(stage / out.name, head, backbone=split.backbone.spec,
                          layers=sorted(set(cfg.blocks)), image_size=round(cfg.tile * cfg.scale),
                          threshold=0.5, metrics=metrics, card=model_card(cfg, metrics))
        save_tuned_blocks(split, built)
        if pixel is not None:
            save_pixel_head(pixel, built, metrics.get("pixel_head", {}))
        save_resolved(cfg, built)
        shutil.rmtree(out, ignore_errors=True)
        built.rename(out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return out


def train_aerial_head(cfg: AerialTrainConfig, out_dir: str | Path, *,
                      backbone: DinoBackbone | None = None,
                      on_eval: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """Train per ``cfg`` and write the checkpoint directory ``out_dir`` (see the module
    docstring). ``backbone``: a loaded one to use instead of ``cfg.backbone``."""
    from dinoseg.aerial.trainset import PrefixCache, encode_views, read_labelled, split_images
    from dinoseg.heads.finetune import TunePlan, head_statistics, standardize_items
    from dinoseg.heads.split import SplitBackbone
    from dinoseg.heads.train import parse_source

    start = time.perf_counter()
    cfg.check()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a directory")
    torch.set_num_threads(cfg.threads)
    sources = [parse_source(s) for s in cfg.data]
    plan = TunePlan(cfg.strategy, cfg.tune_blocks, cfg.backbone_lr)
    if backbone is None:
        backbone = _load_backbone(cfg)
    classes, images = read_labelled(sources, patch=backbone.patch_size, only=cfg.images)
    split = SplitBackbone(backbone, cfg.blocks, plan.blocks)
    fit_im, val_im = split_images(images, cfg.val_fraction, min_images=cfg.min_val_images,
                                  seed=cfg.seed)  # fmt: skip
    cache = PrefixCache(split, cfg.feature_cache or None)
    views = cfg.views_plan
    fit = encode_views(fit_im, len(classes), views, cfg.scale, cache, progress=True)
    val = encode_views(val_im, len(classes), ViewPlan(cfg.tile, cfg.overlap), cfg.scale, cache)
    feature_seconds = time.perf_counter() - start
    spec = HeadSpec(cfg.kind, tuple(cfg.blocks), backbone.embed_dim, tuple(classes), cfg.hidden,
                    cfg.dropout)  # fmt: skip
    head = build_head(spec, seed=cfg.seed)
    head.set_statistics(*head_statistics(split, fit))
    standardize_items(head, [*fit, *val])  # frozen: once, not at every step
    metrics: dict[str, Any] = {
        "classes": classes, "fit_images": len(fit_im), "val_images": len(val_im),
        "fit_views": len(fit), "images": [im.source for im in fit_im],
        "held_back": [im.source for im in val_im], "feature_seconds": feature_seconds,
        "cache": {"hits": cache.hits, "misses": cache.misses},
        "aerial": {"tile": cfg.tile, "overlap": cfg.overlap, "scale": cfg.scale,
                   "strategy": cfg.strategy, "tuned_blocks": split.tuned_numbers,
                   "augment": list(views.augment)},
    }  # fmt: skip
    result = _fit(head, split, fit, val, cfg, plan, metrics, out, start, on_eval)
    metrics.update(val=result["val"], best_step=result["best_step"],
                   history=result["history"], class_weights=result["class_weights"],
                   fit_seconds=result["seconds"])
    pixel = _fit_pixels(fit_im, classes, cfg, metrics)
    metrics["seconds"] = time.perf_counter() - start
    return _write(out, head, split, cfg, metrics, pixel)


def _fit_pixels(images: Sequence[TrainImage], classes: list[str], cfg: AerialTrainConfig,
                metrics: dict[str, Any]) -> PixelHead | None:  # fmt: skip
    """The pixel head on the fit images (their full-resolution pixels, not augmented), or
    None when ``cfg.pixel_steps`` is 0; its fit goes into ``metrics["pixel_head"]``."""
    from dinoseg.aerial.pixels import PixelFit, fit_pixel_head

    if cfg.pixel_steps == 0:
        return None
    began = time.perf_counter()
    fit = PixelFit(steps=cfg.pixel_steps, seed=cfg.seed)
    pixel = fit_pixel_head([(im.image, im.labels) for im in images], classes, fit)
    metrics["pixel_head"] = {"samples": fit.samples, "steps": fit.steps, "seed": fit.seed,
                             "seconds": time.perf_counter() - began}  # fmt: skip
    return pixel


def _load_backbone(cfg: AerialTrainConfig) -> DinoBackbone:
    """``cfg.backbone`` returning the blocks the head reads (:class:`InputError` for a spec it
    does not understand)."""
    from dinoseg.backbone import load_backbone

    try:
        return load_backbone(cfg.backbone, layers=sorted(set(cfg.blocks)))
    except ValueError as e:
        raise InputError(str(e)) from e


def _fit(
    head: SegHead,
    split: SplitBackbone,
    fit: list[TuneItem],
    val: list[TuneItem],
    cfg: AerialTrainConfig,
    plan: TunePlan,
    metrics: dict[str, Any],
    out: Path,
    start: float,
    on_eval: Callable[[dict[str, Any]], None] | None,
) -> dict[str, Any]:
    """:func:`~dinoseg.heads.finetune.fit_tuned`'s result. A diverged fit raises
    :class:`InputError`, after writing the last good weights (if any) to ``out``."""
    from dinoseg.heads.finetune import TrainingDiverged, fit_tuned

    try:
        return fit_tuned(head, split, fit, val, cfg.schedule, plan, on_eval=on_eval)
    except TrainingDiverged as e:
        if e.state is not None:
            from dinoseg.heads.finetune import load_state

            load_state(head, split, e.state)
            metrics.update(val=None, best_step=e.good_step, history=[], fit_seconds=0.0,
                           seconds=time.perf_counter() - start, stopped=str(e))
            _write(out, head.eval(), split, cfg, metrics)
            raise InputError(f"{e}, written to {out}") from e
        raise InputError(f"{e}; nothing written to {out}") from e


def load_aerial_head(ckpt_dir: str | Path, backbone: DinoBackbone | None = None
                     ) -> tuple[SegHead, DinoBackbone, dict[str, Any]]:  # fmt: skip
    """A trained aerial head, the backbone to run it on (its tuned blocks applied: a copy of
    ``backbone`` when given, else the checkpoint's backbone) and its ``aerial`` settings."""
    from dinoseg.heads.checkpoint import head_metrics, load_head
    from dinoseg.heads.split import apply_tuned_blocks

    if not Path(ckpt_dir).is_dir():
        raise InputError(f"{ckpt_dir}: no such head checkpoint directory")
    head, config = load_head(ckpt_dir)
    if backbone is None:
        from dinoseg.backbone import load_backbone

        try:
            backbone = load_backbone(config.backbone, layers=config.layers)
        except ValueError as e:
            raise InputError(f"{ckpt_dir}: {e}") from e
    missing = [b for b in head.spec.blocks if b not in backbone.layers]
    if missing or backbone.embed_dim != head.spec.dim:
        raise InputError(f"{ckpt_dir}: the head reads {head.spec.dim}-channel blocks "
                         f"{list(head.spec.blocks)}; the backbone gives {backbone.embed_dim}-"
                         f"channel blocks {list(backbone.layers)}")
    aerial = head_metrics(ckpt_dir).get("aerial") or {"scale": 1.0, "tile": config.image_size}
    return head, apply_tuned_blocks(backbone, ckpt_dir), dict(aerial)


def config_dict(cfg: AerialTrainConfig) -> dict[str, Any]:
    """The config as a flat JSON-able dict (tracking)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}

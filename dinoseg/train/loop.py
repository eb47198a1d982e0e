"""Episodic meta-training of a few-shot segmenter on frozen, cached DINOv2 features."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from dinoseg.backbone import DEFAULT_BACKBONE, DEFAULT_LAYERS
from dinoseg.device import autocast, module_device, to_device
from dinoseg.models import SERVED_ARCH
from dinoseg.train.episodes import TrainEpisodes
from dinoseg.train.losses import bce_dice_loss
from dinoseg.train.validate import BankValidator

log = logging.getLogger(__name__)
STATE = "train_state.pt"


@dataclass
class TrainConfig:
    """Everything a training run reads (``params.yaml`` section ``train``)."""

    data: str = "../shared/data/camvid"
    train_split: str = "train"
    val_split: str = "val"
    fold: int = 0  # held-out classes of the benchmark; -1 = none, every class trained (served)
    arch: str = SERVED_ARCH  # a dinoseg.models.SEGMENTER_REGISTRY entry
    backbone: str = DEFAULT_BACKBONE
    layers: tuple[int, ...] = DEFAULT_LAYERS
    image_size: int = 448
    shots: int = 1
    steps: int = 3000
    epoch_steps: int = 250
    batch_size: int = 8
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup_steps: int = 100
    dice_weight: float = 1.0
    min_area: float = 0.005
    # The view source of the episodes: 0 = the cached bank; in (0, 1) = fresh encoder views of
    # pixel-augmented images of this strength (dinoseg.train.augment; ~4x slower per step)
    augment: float = 0.0
    val_episodes: int = 300
    seed: int = 0
    threads: int = 2
    init: str = ""  # a distilled checkpoint directory whose adapter weights start the run
    # what init gives: "adapter" (a distilled checkpoint's) | "all" (warm start: every weight of
    # a trained checkpoint of the same arch, e.g. the champion, when the classes stay or grow)
    init_weights: str = "adapter"
    feature_cache: str = ""  # directory for cached backbone features ("" = memory only)
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda[:N] | mps; bf16 autocast on GPU
    smoke: bool = False

    def smoke_overrides(self) -> TrainConfig:
        """A schedule that finishes in well under a minute (tests, CI)."""
        from dataclasses import replace

        return replace(self, steps=6, epoch_steps=3, batch_size=2, val_episodes=4,
                       warmup_steps=1, image_size=min(self.image_size, 224))


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up then cosine decay to 0."""
    if step < warmup:
        return (step + 1) / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _save_state(out: Path, model: nn.Module, opt: torch.optim.Optimizer, step: int,
                best: float, history: list[dict[str, Any]]) -> None:
    tmp = out / (STATE + ".tmp")
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                "best": best, "history": json.dumps(history)}, tmp)
    tmp.replace(out / STATE)


def _load_state(out: Path, model: nn.Module, opt: torch.optim.Optimizer
                ) -> tuple[int, float, list[dict[str, Any]]]:
    state = torch.load(out / STATE, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    return int(state["step"]), float(state["best"]), json.loads(state["history"])


def _step(model: nn.Module, opt: torch.optim.Optimizer, params: list[nn.Parameter],
          episodes: TrainEpisodes, cfg: TrainConfig, step: int) -> float:
    """One optimiser step over ``cfg.batch_size`` episodes; returns the batch's mean loss."""
    for g in opt.param_groups:
        g["lr"] = cfg.lr * lr_factor(step, cfg.warmup_steps, cfg.steps)
    opt.zero_grad(set_to_none=True)
    batches = episodes.sample(step, cfg.batch_size)
    n = sum(len(b.class_ids) for b in batches)
    total, device = 0.0, module_device(model)
    for b in batches:
        q, s = to_device(b.query_feats, device), to_device(b.support_feats, device)
        masks, target, valid = to_device((b.support_masks, b.target, b.valid), device)
        with autocast(device, training=True):
            logits = model(q, s, masks)
        loss = bce_dice_loss(logits.float(), target, valid, dice_weight=cfg.dice_weight)
        (loss * len(b.class_ids) / n).backward()
        total += loss.item() * len(b.class_ids) / n
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    return total


def _keep_best(model: nn.Module, out: Path) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "best.safetensors"))


def train_steps(
    model: nn.Module,
    episodes: TrainEpisodes,
    validator: BankValidator,
    cfg: TrainConfig,
    out: Path,
    *,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    resume: bool = True,
) -> dict[str, Any]:
    """Run the schedule; keep the best-validating weights in ``out/best.safetensors``.

    Returns:
        ``{"best_miou", "history", "seconds", "config"}``.
    """
    out.mkdir(parents=True, exist_ok=True)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    step, best = 0, -1.0
    history: list[dict[str, Any]] = []
    if resume and (out / STATE).is_file():
        step, best, history = _load_state(out, model, opt)
        log.info("resumed at step %d (best val mIoU %.2f)", step, best)
    start = time.perf_counter()
    model.train()
    bar = tqdm(total=cfg.steps, initial=step, desc="train", leave=False)
    running = 0.0
    while step < cfg.steps:
        running += _step(model, opt, params, episodes, cfg, step)
        step += 1
        bar.update(1)
        if step % cfg.epoch_steps == 0 or step == cfg.steps:
            val = validator.run(model)
            record = {"step": step, "loss": running / cfg.epoch_steps, **val,
                      "lr": opt.param_groups[0]["lr"], "seconds": time.perf_counter() - start}
            running = 0.0
            history.append(record)
            bar.set_postfix(loss=f"{record['loss']:.3f}", val_miou=f"{val['miou']:.1f}")
            if val["miou"] > best:
                best = val["miou"]
                _keep_best(model, out)
            _save_state(out, model, opt, step, best, history)
            if on_epoch:
                on_epoch(record)
    bar.close()
    return {"best_miou": best, "history": history, "seconds": time.perf_counter() - start,
            "config": asdict(cfg)}

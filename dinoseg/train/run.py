"""A whole training run: data, fold, cached features, model, schedule, checkpoint directory."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dinoseg.backbone import DinoBackbone, load_backbone
from dinoseg.checkpoint import CheckpointConfig, arch_config, save_checkpoint
from dinoseg.config import save_resolved
from dinoseg.data import FolderDataset
from dinoseg.data.folds import Fold, dataset_fold
from dinoseg.device import resolve_device
from dinoseg.feature_cache import FeatureCache
from dinoseg.io import InputError
from dinoseg.models import build_segmenter, count_parameters
from dinoseg.train.augment import PixelAugmenter
from dinoseg.train.bank import FeatureBank
from dinoseg.train.episodes import TrainEpisodes, ViewSource
from dinoseg.train.loop import TrainConfig, train_steps
from dinoseg.train.validate import BankValidator

log = logging.getLogger(__name__)


def init_from(model: nn.Module, ckpt_dir: str, prefix: str = "adapter.") -> int:
    """Copy the ``prefix`` weights of a checkpoint (e.g. a distilled adapter) into ``model``;
    ``prefix=""`` copies every weight (a warm start: the checkpoint must be of the same arch).

    Returns:
        the number of tensors copied.
    """
    from safetensors.torch import load_file

    state = load_file(str(Path(ckpt_dir) / "model.safetensors"))
    wanted = {k: v for k, v in state.items() if k.startswith(prefix)}
    if not wanted:
        raise ValueError(f"{ckpt_dir}: no {prefix}* weights to start from")
    missing, unexpected = model.load_state_dict(wanted, strict=False)
    if unexpected or (not prefix and missing):
        raise ValueError(f"{ckpt_dir}: weights do not fit this model: "
                         f"{(unexpected or missing)[:5]}")
    return len(wanted)


#: What ``TrainConfig.init_weights`` copies from ``init``: the weight-name prefix.
INIT_PREFIXES = {"adapter": "adapter.", "all": ""}


def run_fold(cfg: TrainConfig, ds: FolderDataset) -> Fold:
    """``cfg.fold`` of the dataset; fold -1 trains every class and holds none out (validation
    then runs on every class)."""
    if cfg.fold == -1:
        return Fold("all", -1, 0, ds.class_ids, ())
    return dataset_fold(ds.class_names, ds.class_ids, cfg.fold)


def view_source(cfg: TrainConfig, bank: FeatureBank, backbone: DinoBackbone) -> ViewSource:
    """What the episodes see of the training images: ``bank``'s cached features, or fresh
    encoder views of pixel-augmented images when ``cfg.augment`` > 0."""
    if not cfg.augment:
        return bank
    return PixelAugmenter(bank, backbone, cfg.augment, cfg.min_area)


def _teacher_line(init: str) -> str:
    """The distillation teacher of an ``--init`` checkpoint and what it implies."""
    import json

    from dinoseg.teachers import TEACHER_NOTES

    if not init:
        return "none (adapter trained from scratch)"
    try:
        teacher = json.loads((Path(init) / "metrics.json").read_text()).get("teacher")
    except (OSError, ValueError):
        teacher = None
    if not teacher:
        return f"unknown (the adapter comes from {init})"
    return f"`{teacher}` (via {init}) — {TEACHER_NOTES.get(teacher, '')}".rstrip(" —")


def model_card(cfg: TrainConfig, fold: Any, names: dict[int, str], result: dict[str, Any],
               n_params: int) -> str:
    base = ", ".join(names[c] for c in fold.base)
    novel = ", ".join(names[c] for c in fold.novel) or "none (fold -1, every class trained)"
    views = (f"fresh encoder features of pixel-augmented images (augment {cfg.augment})"
             if cfg.augment else "cached encoder features")
    return (
        f"# dinoseg segmenter `{cfg.arch}` — {Path(cfg.data).name} fold {cfg.fold}\n\n"
        f"- Backbone: `{cfg.backbone}` (frozen), layers {list(cfg.layers)}, "
        f"image long side {cfg.image_size} px\n"
        f"- Trainable parameters: {n_params:,}\n"
        f"- Data: {cfg.data} (train: {cfg.train_split}, validation: {cfg.val_split})\n"
        f"- Trained on base classes: {base}\n- Held out (novel) classes: {novel}; training "
        "images showing one: used, novel pixels as background\n"
        f"- Training views: {views}\n"
        f"- Schedule: {cfg.steps} steps x {cfg.batch_size} episodes, {cfg.shots}-shot, AdamW "
        f"lr {cfg.lr}, cosine, seed {cfg.seed}\n"
        f"- {'Every weight' if cfg.init_weights == 'all' else 'Adapter'} initialised from: "
        f"{cfg.init or 'scratch (no distillation)'}\n"
        f"- Teacher: {_teacher_line(cfg.init)}\n"
        f"- Best validation mIoU on {'novel' if fold.novel else 'all'} classes (bank grid, "
        f"{cfg.val_episodes} episodes): "
        f"{result['best_miou']:.1f}\n"
        f"- Training time: {result['seconds'] / 60:.1f} min on "
        f"{_where(cfg)}\n\n"
        "Use `dinoseg eval --model DIR` for exact full-resolution figures.\n"
    )


def _where(cfg: TrainConfig) -> str:
    """The hardware a run used, for its model card."""
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} ({device})"
    return f"{cfg.threads} CPU threads" if device.type == "cpu" else str(device)


def run_training(cfg: TrainConfig, out_dir: str | Path, *,
                 on_epoch: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """Train per ``cfg`` and write a checkpoint directory (best validation weights) to
    ``out_dir``; intermediate state lives in ``out_dir/work`` so a rerun resumes."""
    from safetensors.torch import load_file

    if cfg.init_weights not in INIT_PREFIXES:
        raise InputError(f"init_weights={cfg.init_weights!r}: use {' or '.join(INIT_PREFIXES)}")
    if not 0.0 <= cfg.augment < 1.0:  # checked before the feature banks are built
        raise InputError(f"augment must be in [0, 1) (0 = off), got {cfg.augment}")
    if cfg.smoke:
        cfg = cfg.smoke_overrides()
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    out = Path(out_dir)
    work = out.with_name(out.name + ".work")
    save_resolved(cfg, work)
    train_ds = FolderDataset(cfg.data, cfg.train_split)
    val_ds = FolderDataset(cfg.data, cfg.val_split)
    fold = run_fold(cfg, train_ds)
    device = resolve_device(cfg.device)
    backbone = load_backbone(cfg.backbone, layers=cfg.layers).to(device)
    cache = FeatureCache(max_bytes=0, disk_dir=cfg.feature_cache or None)
    banks = [FeatureBank(ds, backbone, image_size=cfg.image_size, cache=cache)
             for ds in (train_ds, val_ds)]
    model = build_segmenter(cfg.arch, backbone_dim=backbone.embed_dim,
                            num_layers=len(cfg.layers))
    if cfg.init:
        copied = init_from(model, cfg.init, INIT_PREFIXES[cfg.init_weights])
        log.info("%s: %d tensors from %s", cfg.init_weights, copied, cfg.init)
    model.to(device)
    episodes = TrainEpisodes(banks[0], fold.base, shots=cfg.shots, min_area=cfg.min_area,
                             seed=cfg.seed, views=view_source(cfg, banks[0], backbone))
    validator = BankValidator(banks[1], fold.novel or fold.base, shots=cfg.shots,
                              episodes=cfg.val_episodes, seed=cfg.seed, min_area=cfg.min_area)
    result = train_steps(model, episodes, validator, cfg, work, on_epoch=on_epoch)
    model.load_state_dict(load_file(str(work / "best.safetensors")))
    n_params = count_parameters(model)
    ck = CheckpointConfig(
        arch=cfg.arch, backbone=cfg.backbone, layers=list(cfg.layers), image_size=cfg.image_size,
        arch_kwargs=arch_config(model),
        version=out.name,
    )
    metrics = {"val_miou_bank": result["best_miou"], "history": result["history"],
               "train_seconds": result["seconds"], "fold": cfg.fold,
               "novel_classes": list(fold.novel), "base_classes": list(fold.base)}
    card = model_card(cfg, fold, train_ds.class_names, result, n_params)
    save_checkpoint(out, model, ck, metrics=metrics, card=card)
    save_resolved(cfg, out)
    return out

"""A whole distillation run: teacher embeddings (cached), staged schedule, checkpoint."""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from dinoseg.backbone import load_backbone
from dinoseg.cache import cache_dir
from dinoseg.checkpoint import CheckpointConfig, arch_config, save_checkpoint
from dinoseg.config import save_resolved
from dinoseg.data import FolderDataset
from dinoseg.device import module_device, resolve_device
from dinoseg.distill.loop import DistillConfig, distill_loss, embedding_agreement, object_box
from dinoseg.feature_cache import FeatureCache
from dinoseg.models import build_segmenter
from dinoseg.train.bank import FeatureBank

log = logging.getLogger(__name__)


def teacher_targets(teacher: Any, ds: FolderDataset, cache: str, limit: int = 0) -> torch.Tensor:
    """(N, C, g, g) teacher embeddings of the first ``limit`` (0 = all) images of ``ds``
    (cached on disk)."""
    from dinoseg.teachers.cache import cached_embeddings

    n = min(limit, len(ds)) if limit > 0 else len(ds)
    images = [ds.load(i)[0] for i in range(n)]
    return cached_embeddings(teacher, images, cache)


def _stage(adapter: torch.nn.Module, bank: FeatureBank, targets: torch.Tensor, teacher: Any,
           cfg: DistillConfig, stage: int, embed_layer: int) -> list[float]:
    opt = torch.optim.AdamW(adapter.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.steps_per_size)
    losses, device = [], module_device(adapter)
    for step in tqdm(range(cfg.steps_per_size), desc=f"distill {bank.image_size}px", leave=False):
        rng = np.random.default_rng([cfg.seed, stage, step])
        idx = rng.choice(len(bank), size=min(cfg.batch_size, len(bank)), replace=False)
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for i in idx:
            item = bank.items[int(i)]
            out = adapter(item.feats[embed_layer].float()[None].to(device))[0]
            box = object_box(item, rng, teacher.image_size, cfg.min_box_area)
            box = None if box is None else box.to(device)
            target = targets[int(i)].to(device)
            loss, _ = distill_loss(out, item, target, teacher, box, cfg.mask_weight)
            (loss / len(idx)).backward()
            total += loss.item() / len(idx)
        opt.step()
        sched.step()
        losses.append(total)
    return losses


def run_distillation(cfg: DistillConfig, out_dir: str | Path) -> Path:
    """Distil the adapter of a fresh ``cfg.arch`` segmenter and write a checkpoint directory
    (the other parts keep their initialisation; ``dinoseg train --init DIR`` starts from it)."""
    if cfg.smoke:
        cfg = cfg.smoke_overrides()
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    out = Path(out_dir)
    start = time.perf_counter()
    device = resolve_device(cfg.device)
    teacher = _teacher(cfg, device)
    tcache = cfg.teacher_cache or str(cache_dir("teacher"))
    train_ds, val_ds = FolderDataset(cfg.data, cfg.split), FolderDataset(cfg.data, cfg.val_split)
    targets = teacher_targets(teacher, train_ds, tcache, cfg.max_images)
    val_targets = teacher_targets(teacher, val_ds, tcache, cfg.max_val_images)
    teacher_seconds = time.perf_counter() - start
    backbone = load_backbone(cfg.backbone, layers=cfg.layers).to(device)
    model = build_segmenter(cfg.arch, backbone_dim=backbone.embed_dim,
                            num_layers=len(cfg.layers)).to(device)
    embed_layer = int(getattr(getattr(model, "config", None), "embed_layer", -1))
    adapter: torch.nn.Module = model.adapter  # type: ignore[assignment]
    fcache = FeatureCache(max_bytes=0, disk_dir=cfg.feature_cache or None)
    history: list[dict[str, Any]] = []
    for stage, size in enumerate(cfg.sizes):
        bank = FeatureBank(train_ds, backbone, image_size=size, cache=fcache,
                           limit=cfg.max_images)
        losses = _stage(adapter, bank, targets, teacher, cfg, stage, embed_layer)
        history.append({"size": size, "first_loss": losses[0], "last_loss": losses[-1]})
        log.info("stage %dpx: loss %.4f -> %.4f", size, losses[0], losses[-1])
    val_bank = FeatureBank(val_ds, backbone, image_size=cfg.sizes[-1], cache=fcache,
                           limit=cfg.max_val_images)
    distilled, untrained = _agreement(adapter, cfg, backbone.embed_dim, val_bank, val_targets,
                                      teacher, embed_layer, device)  # fmt: skip
    metrics = {
        "val_distilled": distilled, "val_untrained": untrained,
        "stages": history, "teacher": cfg.teacher, "teacher_seconds": teacher_seconds,
        "total_seconds": time.perf_counter() - start,
    }
    _save(out, model, cfg, metrics, _card(cfg, distilled, untrained))
    return out


def _teacher(cfg: DistillConfig, device: torch.device) -> Any:
    """``cfg.teacher``, moved to ``device`` when it is a torch module."""
    from dinoseg.teachers import build_teacher

    teacher = build_teacher(cfg.teacher, checkpoint=cfg.teacher_checkpoint or None,
                            **cfg.teacher_options)
    if isinstance(teacher, torch.nn.Module):
        teacher.to(device)  # embeddings come back to the CPU (the teacher cache)
    return teacher


def _agreement(adapter: torch.nn.Module, cfg: DistillConfig, backbone_dim: int,
               val_bank: FeatureBank, val_targets: torch.Tensor, teacher: Any, embed_layer: int,
               device: torch.device) -> tuple[dict[str, float], dict[str, float]]:  # fmt: skip
    """Embedding agreement with the teacher's (N, C, g, g) ``val_targets``: of the distilled
    ``adapter``, then of a freshly initialised one (built here, after training: it draws from
    the seeded generator after the segmenter)."""
    fresh: torch.nn.Module = copy.deepcopy(build_segmenter(  # type: ignore[assignment]
        cfg.arch, backbone_dim=backbone_dim, num_layers=len(cfg.layers)
    ).adapter).to(device)
    distilled = embedding_agreement(adapter, val_bank, val_targets, teacher.image_size,
                                    embed_layer)
    untrained = embedding_agreement(fresh, val_bank, val_targets, teacher.image_size, embed_layer)
    return distilled, untrained


def _save(out: Path, model: torch.nn.Module, cfg: DistillConfig, metrics: dict[str, Any],
          card: str) -> None:  # fmt: skip
    """The checkpoint directory (the adapter trained, the rest at initialisation) and the
    resolved config."""
    ck = CheckpointConfig(
        arch=cfg.arch, backbone=cfg.backbone, layers=list(cfg.layers), image_size=cfg.sizes[-1],
        arch_kwargs=arch_config(model),
        version=out.name,
    )
    save_checkpoint(out, model, ck, metrics=metrics, card=card)
    save_resolved(cfg, out)


def _card(cfg: DistillConfig, distilled: dict[str, float], untrained: dict[str, float]) -> str:
    """The distilled checkpoint's model card."""
    from dinoseg.teachers import TEACHER_NOTES

    return (f"# Distilled adapter ({cfg.arch}) from teacher `{cfg.teacher}`\n\n"
            f"- Data: {cfg.data} ({cfg.split}, at most {cfg.max_images} images; labels "
            "unused)\n"
            f"- Teacher: {TEACHER_NOTES.get(cfg.teacher, cfg.teacher)}\n"
            f"- Stages (DINOv2 input px): {list(cfg.sizes)}, {cfg.steps_per_size} steps each.\n"
            f"- Validation embedding cosine: {distilled['cosine']:.3f} (untrained adapter "
            f"{untrained['cosine']:.3f}); MSE {distilled['mse']:.3f} "
            f"({untrained['mse']:.3f}).\n\n"
            "Only the adapter is trained; the rest of the segmenter is at initialisation — "
            "start `dinoseg train --init` from this directory.\n")

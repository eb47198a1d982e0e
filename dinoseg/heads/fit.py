"""Fitting a head on cached labelled patches: class-balanced soft cross-entropy, seeded
batches, the best held-back validation step kept.

Loss per patch: ``-sum_m target_m log softmax(logits)_m``, weighted by the patch's labelled
share times its classes' weight ``w_m = (mean mass / mass_m) ** balance`` (mass = labelled
patch share of class m over the fit images; ``balance`` 0 = plain, 1 = inverse frequency).
Step ``s`` draws its images from ``np.random.default_rng([seed, s])`` alone.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dinoseg.heads.data import LabelledImage
from dinoseg.heads.model import SegHead

#: A patch is scored in validation when at least this share of it is labelled.
SCORED_COVER = 0.5


@dataclass(frozen=True)
class Schedule:
    """Optimisation settings of one fit."""

    steps: int = 300
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    balance: float = 0.5
    eval_every: int = 50
    seed: int = 0


def feature_statistics(images: Sequence[LabelledImage]) -> tuple[Tensor, Tensor]:
    """Per-channel mean and std (C_in,) of the concatenated features over labelled patches."""
    total, sq, n = None, None, 0
    for im in images:
        x = torch.cat([f.float() for f in im.feats]).flatten(1)[:, im.cover.flatten() > 0]
        s, s2 = x.sum(1), (x * x).sum(1)
        total = s if total is None else total + s
        sq = s2 if sq is None else sq + s2
        n += x.shape[1]
    if total is None or sq is None or n == 0:
        raise ValueError("no labelled patch to take statistics from")
    mean = total / n
    return mean, (sq / n - mean * mean).clamp_min(0).sqrt()


def inverse_frequency(mass: Tensor, balance: float) -> Tensor:
    """(M,) class masses (labelled patches, pixels...) -> (M,) loss weights ``(mean mass /
    mass) ** balance`` over the present classes (absent classes: 0)."""
    present = mass > 0
    w = torch.zeros(len(mass))
    w[present] = (mass[present].mean() / mass[present]) ** balance
    return w


def class_weights(images: Sequence[LabelledImage], n_classes: int, balance: float) -> Tensor:
    """(M,) loss weight per class: ``(mean mass / mass) ** balance`` (absent classes: 0)."""
    mass = torch.zeros(n_classes)
    for im in images:
        mass += (im.target * im.cover).sum((1, 2))
    return inverse_frequency(mass, balance)


def _batch(images: Sequence[LabelledImage], idx: Sequence[int]) -> tuple[list[Tensor], Tensor,
                                                                          Tensor]:
    feats = [torch.stack([images[i].feats[b] for i in idx]).float()
             for b in range(len(images[idx[0]].feats))]
    return feats, torch.stack([images[i].target for i in idx]), torch.stack(
        [images[i].cover for i in idx])


class BatchDraw:
    """The fit images of step ``s``: a grid size drawn in proportion to its images, then up to
    ``batch_size`` of its images, from ``np.random.default_rng([seed, s])`` alone."""

    def __init__(self, images: Sequence[LabelledImage], schedule: Schedule):
        buckets: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(images):
            buckets.setdefault(im.grid, []).append(i)
        self.groups = list(buckets.values())
        sizes = np.array([len(g) for g in self.groups], float)
        self.p = sizes / sizes.sum()
        self.schedule = schedule

    def __call__(self, step: int) -> list[int]:
        rng = np.random.default_rng([self.schedule.seed, step])
        group = self.groups[int(rng.choice(len(self.groups), p=self.p))]
        take = min(self.schedule.batch_size, len(group))
        return [group[int(j)] for j in rng.choice(len(group), size=take, replace=False)]


def soft_ce(logits: Tensor, target: Tensor, cover: Tensor, weights: Tensor) -> Tensor:
    """Weighted soft cross-entropy: logits / target (B, M, h, w), cover (B, h, w), weights (M,)."""
    per_patch = -(target * F.log_softmax(logits, dim=1)).sum(1)
    w = cover * (target * weights.view(1, -1, 1, 1)).sum(1)
    return (per_patch * w).sum() / w.sum().clamp_min(1e-6)


@torch.inference_mode()
def patch_iou(head: SegHead, images: Sequence[LabelledImage]) -> dict[str, Any]:
    """Validation on the patch grid: a patch at least half labelled is scored as its majority
    class; per class IoU = TP / (TP + FP + FN) over scored patches (partial labels: a class's
    false positives come only from patches labelled with another class).

    Returns:
        ``{"miou": percent or None, "iou": {class name: percent}}`` (classes with labels).
    """
    m = len(head.classes)
    tp, fp, fn = np.zeros(m), np.zeros(m), np.zeros(m)
    was = head.training
    head.eval()
    for im in images:
        pred = head([f[None].float() for f in im.feats])[0].argmax(0)
        scored = im.cover >= SCORED_COVER
        gt, pr = im.target.argmax(0)[scored].numpy(), pred[scored].numpy()
        np.add.at(tp, gt[gt == pr], 1)
        np.add.at(fn, gt[gt != pr], 1)
        np.add.at(fp, pr[gt != pr], 1)
    head.train(was)
    labelled = tp + fn > 0
    iou = {head.classes[k]: float(100 * tp[k] / (tp[k] + fp[k] + fn[k]))
           for k in range(m) if labelled[k]}
    return {"miou": float(np.mean(list(iou.values()))) if iou else None, "iou": iou}


def _lr(step: int, total: int, base: float) -> float:
    return base * 0.5 * (1.0 + math.cos(math.pi * step / max(1, total)))


def fit_head(
    head: SegHead,
    fit: Sequence[LabelledImage],
    val: Sequence[LabelledImage],
    schedule: Schedule,
    *,
    on_eval: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train ``head`` in place; with ``val`` images it ends on the best-validating step's
    weights (checked every ``eval_every`` steps and at the end), else on the last step's.

    Returns:
        ``{"history", "best_step", "val", "seconds", "class_weights"}``.
    """
    if not fit:
        raise ValueError("no labelled image to fit the head on")
    start = time.perf_counter()
    weights = class_weights(fit, len(head.classes), schedule.balance)
    draw = BatchDraw(fit, schedule)
    params = [p for p in head.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=schedule.lr, weight_decay=schedule.weight_decay)
    history: list[dict[str, Any]] = []
    best: tuple[float, int, dict[str, Tensor], dict[str, Any]] | None = None
    head.train()
    for step in range(schedule.steps):
        feats, target, cover = _batch(fit, draw(step))
        for g in opt.param_groups:
            g["lr"] = _lr(step, schedule.steps, schedule.lr)
        loss = soft_ce(head(feats), target, cover, weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        done = step + 1
        if val and (done % schedule.eval_every == 0 or done == schedule.steps):
            score = patch_iou(head, val)
            record = {"step": done, "loss": float(loss.detach()), "val_miou": score["miou"],
                      "seconds": time.perf_counter() - start}
            history.append(record)
            if on_eval:
                on_eval(record)
            if best is None or (score["miou"] or 0.0) > best[0]:
                best = (score["miou"] or 0.0, done, copy.deepcopy(head.state_dict()), score)
    if best is not None:
        head.load_state_dict(best[2])
    head.eval()
    return {"history": history, "best_step": best[1] if best else schedule.steps,
            "val": best[3] if best else None, "seconds": time.perf_counter() - start,
            "class_weights": {n: float(w) for n, w in zip(head.classes, weights, strict=True)}}

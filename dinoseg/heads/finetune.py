"""Fitting a head with the last backbone blocks frozen, fine-tuned, or unfrozen block by block.

The three transfer strategies of the aerial article on one loop (the head, its loss, batches
and validation are :mod:`dinoseg.heads.fit`'s):

- ``frozen``: the head alone, on the cached features (``tune`` ignored);
- ``finetune``: the last ``tune`` blocks the head reads train from the first step, at
  ``backbone_lr`` (the head at ``lr``);
- ``progressive``: the steps are cut into ``tune + 1`` equal phases; phase 0 trains the head
  alone, phase ``j`` also the last ``j`` blocks.

Every item carries the :class:`~dinoseg.heads.split.SplitBackbone` prefix (features of the
frozen blocks and the tokens entering the first tuned block), cached once; a step runs only the
tuned blocks. A step whose loss is not finite stops the fit with :class:`TrainingDiverged`,
which carries the last good weights (the last validation point's).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from dinoseg.heads.data import LabelledImage
from dinoseg.heads.fit import BatchDraw, Schedule, class_weights, patch_iou, soft_ce
from dinoseg.heads.model import SegHead
from dinoseg.heads.split import Prefix, SplitBackbone
from dinoseg.io import InputError

STRATEGIES = ("frozen", "finetune", "progressive")
#: Fit items whose features give the head's standardisation (tuned strategies).
STAT_ITEMS = 64

State = dict[str, dict[str, Tensor]]
#: The best validation point so far: (mIoU or 0, step, weights, validation).
Best = tuple[float, int, State, dict[str, Any]]


@dataclass
class TuneItem(LabelledImage):
    """A :class:`LabelledImage` whose ``feats`` are the prefix's (the frozen blocks, ascending)
    and ``tokens`` (T, C) float16 the tokens entering the first tuned block (None: frozen).
    ``standardized``: ``feats`` is one (C_in, h, w) tensor, the head's standardised input
    (:func:`standardize_items`: frozen features are standardised once, not at every step)."""

    tokens: Tensor | None = None
    standardized: bool = False


class _Classify(nn.Module):
    """A head reading standardised items (what :func:`~dinoseg.heads.fit.patch_iou` calls)."""

    def __init__(self, head: SegHead):
        super().__init__()
        self.head = head

    @property
    def classes(self) -> tuple[str, ...]:
        return self.head.classes

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        return self.head.classify(feats[0])


@torch.no_grad()
def standardize_items(head: SegHead, items: Sequence[TuneItem]) -> None:
    """Replace frozen items' block features by the head's standardised input, in place
    (float16; the head's statistics must be set and stay fixed)."""
    for it in items:
        if it.tokens is not None or it.standardized:
            continue
        it.feats = [head.standardize([f[None] for f in it.feats])[0].to(torch.float16)]
        it.standardized = True


def logits(head: SegHead, split: SplitBackbone, items: Sequence[TuneItem]) -> Tensor:
    """(B, M, h, w) logits of equal-grid items."""
    if items[0].standardized:
        return head.classify(torch.stack([it.feats[0] for it in items]))
    return head(features(split, items))


@dataclass(frozen=True)
class TunePlan:
    """Which blocks train when: ``strategy`` in :data:`STRATEGIES`, ``tune`` blocks,
    ``backbone_lr`` their learning rate."""

    strategy: str = "frozen"
    tune: int = 2
    backbone_lr: float = 2e-5

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise InputError(f"strategy {self.strategy!r}: use one of {', '.join(STRATEGIES)}")
        if self.strategy != "frozen" and self.tune < 1:
            raise InputError(f"the {self.strategy} strategy needs tune_blocks >= 1")
        if not self.backbone_lr > 0:
            raise InputError(f"backbone_lr must be positive, got {self.backbone_lr}")

    @property
    def blocks(self) -> int:
        """Blocks given trainable copies (0 when frozen)."""
        return 0 if self.strategy == "frozen" else self.tune

    def training(self, step: int, steps: int) -> int:
        """How many of the tuned blocks train at ``step`` (0-based) of ``steps``."""
        if self.strategy == "progressive":
            return min(self.tune, step * (self.tune + 1) // max(1, steps))
        return self.blocks


class TrainingDiverged(InputError):
    """The loss stopped being finite. ``state`` holds the last good weights (or None)."""

    def __init__(self, step: int, loss: float, state: State | None, good_step: int):
        kept = f"the last good weights (step {good_step})" if state else "no good weights yet"
        super().__init__(f"step {step}: the loss is {loss} (try a lower lr / backbone_lr); "
                         f"training stopped, {kept}")
        self.step, self.state, self.good_step = step, state, good_step


def features(split: SplitBackbone, items: Sequence[TuneItem]) -> list[Tensor]:
    """The head's blocks (B, C, h, w) float32 of equal-grid items (gradients through the tuned
    blocks that train)."""
    feats = [torch.stack([it.feats[b] for it in items]).float()
             for b in range(len(items[0].feats))]
    tokens = None
    if split.tune_count:
        tokens = torch.stack([it.tokens for it in items])  # type: ignore[misc]
    return split.features(Prefix(feats, tokens), items[0].grid)


@torch.no_grad()
def head_statistics(split: SplitBackbone, items: Sequence[TuneItem]) -> tuple[Tensor, Tensor]:
    """Per-channel mean and std (C_in,) of the head's input over up to :data:`STAT_ITEMS`
    items' labelled patches."""
    step = max(1, len(items) // STAT_ITEMS)
    total, sq, n = None, None, 0
    for it in list(items)[::step]:
        x = torch.cat(features(split, [it]), 1)[0].flatten(1)[:, it.cover.flatten() > 0]
        total = x.sum(1) if total is None else total + x.sum(1)
        sq = (x * x).sum(1) if sq is None else sq + (x * x).sum(1)
        n += x.shape[1]
    if total is None or sq is None or n == 0:
        raise InputError("no labelled patch to train on")
    mean = total / n
    return mean, (sq / n - mean * mean).clamp_min(0).sqrt()


@torch.no_grad()
def validate(head: SegHead, split: SplitBackbone, items: Sequence[TuneItem]) -> dict[str, Any]:
    """:func:`~dinoseg.heads.fit.patch_iou` with the current tuned blocks."""
    if items and items[0].standardized:
        return patch_iou(_Classify(head), items)  # type: ignore[arg-type]
    current = [LabelledImage(it.hash, it.source, [f[0] for f in features(split, [it])],
                             it.target, it.cover, it.classes) for it in items]  # fmt: skip
    return patch_iou(head, current)


def _state(head: SegHead, split: SplitBackbone) -> State:
    return {"head": copy.deepcopy(head.state_dict()), "tuned": copy.deepcopy(split.state_dict())}


def load_state(head: SegHead, split: SplitBackbone, state: State) -> None:
    head.load_state_dict(state["head"])
    split.load_state_dict(state["tuned"])


def fit_tuned(
    head: SegHead,
    split: SplitBackbone,
    fit: Sequence[TuneItem],
    val: Sequence[TuneItem],
    schedule: Schedule,
    plan: TunePlan,
    *,
    on_eval: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train ``head`` (and ``split``'s tuned blocks per ``plan``) in place; ends on the best
    held-back step's weights when ``val`` is given, else on the last step's.

    Returns:
        ``{"history", "best_step", "val", "seconds", "class_weights"}`` as
        :func:`~dinoseg.heads.fit.fit_head`.

    Raises:
        TrainingDiverged: a non-finite loss (the caller may keep ``state``).
    """
    if not fit:
        raise InputError("no labelled image to fit the head on")
    start = time.perf_counter()
    weights = class_weights(fit, len(head.classes), schedule.balance)
    draw = BatchDraw(fit, schedule)
    opt = _optimizer(head, split, schedule, plan)
    bases = [g["lr"] for g in opt.param_groups]
    history: list[dict[str, Any]] = []
    best: Best | None = None
    good: tuple[int, State | None] = (0, None)
    head.train()
    for step in range(schedule.steps):
        split.set_trainable(plan.training(step, schedule.steps))
        batch = [fit[i] for i in draw(step)]
        loss = _train_step(head, split, opt, bases, batch, weights, step, schedule.steps)
        if not torch.isfinite(loss):
            raise TrainingDiverged(step + 1, float(loss.detach()), good[1], good[0])
        done = step + 1
        if done % schedule.eval_every == 0 or done == schedule.steps:
            state = _state(head, split)
            good = (done, state)
            record = {"step": done, "loss": float(loss.detach()), "training_blocks":
                      plan.training(step, schedule.steps),
                      "seconds": time.perf_counter() - start}  # fmt: skip
            best = _validate_point(head, split, val, record, best, state)
            history.append(record)
            if on_eval:
                on_eval(record)
    return _finish(head, split, best, history, schedule, weights, start)


def _optimizer(head: SegHead, split: SplitBackbone, schedule: Schedule,
               plan: TunePlan) -> torch.optim.AdamW:  # fmt: skip
    """AdamW over the head (at ``schedule.lr``) and the tuned blocks (at ``plan.backbone_lr``)."""
    groups = [{"params": list(head.parameters()), "lr": schedule.lr}]
    if split.tune_count:
        groups.append({"params": list(split.tuned.parameters()), "lr": plan.backbone_lr})
    return torch.optim.AdamW(groups, weight_decay=schedule.weight_decay)


def _train_step(
    head: SegHead,
    split: SplitBackbone,
    opt: torch.optim.Optimizer,
    bases: list[float],
    batch: list[TuneItem],
    weights: Tensor,
    step: int,
    steps: int,
) -> Tensor:
    """One step at the cosine-decayed learning rates (``bases`` at step 0); returns the scalar
    loss. A loss that is not finite is returned before any gradient is taken."""
    cosine = 0.5 * (1.0 + math.cos(math.pi * step / max(1, steps)))
    for g, base in zip(opt.param_groups, bases, strict=True):
        g["lr"] = base * cosine
    loss = soft_ce(logits(head, split, batch), torch.stack([b.target for b in batch]),
                   torch.stack([b.cover for b in batch]), weights)  # fmt: skip
    if not torch.isfinite(loss):
        return loss
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss


def _validate_point(
    head: SegHead,
    split: SplitBackbone,
    val: Sequence[TuneItem],
    record: dict[str, Any],
    best: Best | None,
    state: State,
) -> Best | None:
    """Score ``val`` (when given) into ``record["val_miou"]``; the new best point, ``state``
    being the current weights."""
    if not val:
        return best
    score = validate(head, split, val)
    record["val_miou"] = score["miou"]
    if best is None or (score["miou"] or 0.0) > best[0]:
        return (score["miou"] or 0.0, record["step"], state, score)
    return best


def _finish(head: SegHead, split: SplitBackbone, best: Best | None,
            history: list[dict[str, Any]], schedule: Schedule, weights: Tensor,
            start: float) -> dict[str, Any]:  # fmt: skip
    """Load the best point's weights (if any), back to eval mode, and the summary."""
    if best is not None:
        load_state(head, split, best[2])
    head.eval()
    split.set_trainable(0)
    return {"history": history, "best_step": best[1] if best else schedule.steps,
            "val": best[3] if best else None, "seconds": time.perf_counter() - start,
            "class_weights": {n: float(w) for n, w in zip(head.classes, weights, strict=True)}}

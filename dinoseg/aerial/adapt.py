"""Test-time self-training of a trained head on the photo it is about to segment.

A head trained on some scenes meets a new photo with other class shares and other looks (the
Dubai val scenes hold 2.4x the train images' share of buildings, and mangroves where the train
images have lawns). Before scoring, :func:`self_train` fits a copy of the head to its own
confident predictions on that photo: every patch whose top class probability reaches
``confidence`` becomes a pseudo-label, and the copy takes ``steps`` full-batch AdamW steps of
cross-entropy on them (unweighted: the photo's own class shares); then it labels the patches
again with what it has learnt and takes ``steps`` more, ``rounds`` rounds in all. The head given
is never changed, so one loaded head serves every photo; no labels and no training data are
needed.

The features are the head's standardised input (:meth:`~dinoseg.heads.model.SegHead.standardize`)
of tiles spread over the photo (:class:`~dinoseg.aerial.methods.head.HeadMethod` picks them).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from dinoseg.heads.model import SegHead
from dinoseg.io import InputError

#: pseudo-label of a patch below the confidence (ignored by the loss)
IGNORED = -1


@dataclass(frozen=True)
class AdaptSettings:
    """How a head adapts to a photo (``steps`` = 0: not at all).

    Attributes:
        steps: AdamW steps on the photo's pseudo-labels, per round.
        rounds: labelling rounds: after the first, the copy labels the patches again with what
            it has learnt and takes ``steps`` more steps.
        confidence: top class probability a patch needs to become a pseudo-label (0-1).
        tiles: tiles spread over the photo whose patches are used (at most).
        lr: AdamW learning rate (weight decay 1e-4, as the head's training; 3e-4 chosen over
            1e-4 / 1e-3 / 3e-3 on the aerial gate, docs/aerial.md).
        seed: seeds the copy's dropout (``mlp`` / ``conv`` heads).
    """

    steps: int = 0
    confidence: float = 0.7
    tiles: int = 16
    rounds: int = 3
    lr: float = 3e-4
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 0 or self.tiles < 1 or self.rounds < 1:
            raise InputError(f"head_adapt_steps must be >= 0, head_adapt_tiles and "
                             f"head_adapt_rounds >= 1, got {self.steps}, {self.tiles} and "
                             f"{self.rounds}")  # fmt: skip
        if not 0.0 < self.confidence < 1.0:
            raise InputError(f"head_adapt_confidence {self.confidence}: use a probability "
                             f"between 0 and 1 (e.g. 0.9)")  # fmt: skip
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise InputError(f"head_adapt_lr must be positive, got {self.lr}")


@dataclass(frozen=True)
class AdaptReport:
    """What one adaptation did: patches seen, pseudo-labels per class name, final loss
    (``nan`` when no step ran), and whether the adapted copy is the one in use."""

    patches: int
    pseudo: dict[str, int]
    loss: float
    adapted: bool

    def as_dict(self) -> dict[str, object]:
        loss = round(self.loss, 5) if math.isfinite(self.loss) else None
        return {"patches": self.patches, "pseudo_labels": self.pseudo, "loss": loss,
                "adapted": self.adapted}  # fmt: skip


def pseudo_labels(head: SegHead, x: Tensor, confidence: float) -> Tensor:
    """``(B, C_in, h, w)`` standardised features -> ``(B, h, w)`` int64 class indices of the
    head's confident patches, :data:`IGNORED` elsewhere."""
    with torch.no_grad():
        probs = head.eval().classify(x).softmax(1)
    top, label = probs.max(1)
    return torch.where(top >= confidence, label, torch.full_like(label, IGNORED))


def self_train(head: SegHead, x: Tensor, settings: AdaptSettings) -> tuple[SegHead, AdaptReport]:
    """A copy of ``head`` fitted to its own confident predictions on ``x``.

    Args:
        head: the trained head (left unchanged).
        x: ``(B, C_in, h, w)`` standardised features of the photo's tiles.
        settings: steps, confidence, learning rate.

    Returns:
        the adapted copy in eval mode (or ``head`` itself when there is nothing to learn
        from: no step, no confident patch, or a loss that stops being finite) and the report.
    """
    if x.is_inference():  # features made under inference mode cannot be saved for backward
        x = x.clone()
    target = pseudo_labels(head, x, settings.confidence)
    names = head.classes
    counts = torch.bincount(target[target != IGNORED].flatten(), minlength=len(names))
    pseudo = {name: int(n) for name, n in zip(names, counts.tolist(), strict=True)}
    patches = int(target.numel())
    if settings.steps == 0 or int(counts.sum()) == 0:
        return head, AdaptReport(patches, pseudo, float("nan"), False)
    tuned = copy.deepcopy(head)
    opt = torch.optim.AdamW(tuned.parameters(), lr=settings.lr, weight_decay=1e-4)
    loss_value = float("nan")
    with torch.random.fork_rng(devices=[]), torch.enable_grad():
        torch.manual_seed(settings.seed)
        for round_ in range(settings.rounds):
            if round_:  # the copy labels again what it now predicts with confidence
                target = pseudo_labels(tuned, x, settings.confidence)
            tuned.train()
            for _ in range(settings.steps):
                loss = F.cross_entropy(tuned.classify(x), target, ignore_index=IGNORED)
                if not torch.isfinite(loss):
                    return head, AdaptReport(patches, pseudo, float(loss.detach()), False)
                opt.zero_grad()
                loss.backward()
                opt.step()
                loss_value = float(loss.detach())
    return tuned.eval(), AdaptReport(patches, pseudo, loss_value, True)

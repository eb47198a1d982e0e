"""Coarse-to-fine distillation of the embedding adapter from a SAM-family teacher.

The adapter maps frozen DINOv2 features to a 256-d embedding. It is trained so that this
embedding matches the teacher's image embedding (MSE over the image content, the student
resized onto the teacher's grid), plus a mask term: both embeddings are decoded by the
teacher's own prompt encoder and mask decoder with a box around an object, and the student's
mask logits are pulled toward the teacher's mask probabilities (BCE). The schedule walks
through growing DINOv2 input sizes (``sizes``), as in FS-DINO's coarse-to-fine recipe.
Teacher embeddings are computed once and cached on disk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dinoseg.backbone import DEFAULT_BACKBONE, DEFAULT_LAYERS
from dinoseg.models import SERVED_ARCH
from dinoseg.train.bank import BankItem, FeatureBank


@dataclass
class DistillConfig:
    """Everything a distillation run reads (``params.yaml`` section ``distill``)."""

    data: str = "../shared/data/camvid"
    split: str = "train"
    val_split: str = "val"
    teacher: str = "litemedsam"
    teacher_checkpoint: str = ""
    teacher_options: dict[str, Any] = field(default_factory=dict)  # e.g. tiny-random's embed_dim
    arch: str = SERVED_ARCH  # a SEGMENTER_REGISTRY entry; only its adapter is trained
    backbone: str = DEFAULT_BACKBONE
    layers: tuple[int, ...] = DEFAULT_LAYERS
    sizes: tuple[int, ...] = (224, 280, 336)  # DINOv2 input long side, coarse to fine
    steps_per_size: int = 300
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.01
    mask_weight: float = 0.5
    min_box_area: float = 0.01
    max_images: int = 0  # distil on the first N training images (0 = all); teacher cost per image
    max_val_images: int = 40
    seed: int = 0
    threads: int = 2
    feature_cache: str = ""
    teacher_cache: str = ""
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda[:N] | mps; every model runs there
    smoke: bool = False

    def smoke_overrides(self) -> DistillConfig:
        from dataclasses import replace

        return replace(self, sizes=self.sizes[:2], steps_per_size=3, batch_size=2)


def _content_cells(resized: tuple[int, int], stride: float) -> tuple[int, int]:
    """Grid cells covering the image content of a padded input (partial cells count)."""
    return max(1, math.ceil(resized[0] / stride)), max(1, math.ceil(resized[1] / stride))


def teacher_content(orig: tuple[int, int], teacher_size: int, grid: int) -> tuple[int, int]:
    """Cells of the teacher's ``grid x grid`` embedding that cover the image content."""
    h, w = orig
    scale = teacher_size / max(h, w)
    stride = teacher_size / grid
    return _content_cells((round(h * scale), round(w * scale)), stride)


def student_on_teacher_grid(student: Tensor, item: BankItem, target: Tensor,
                            teacher_size: int, patch: int = 14) -> tuple[Tensor, tuple[int, int]]:
    """Resize the student's content cells onto the teacher's content cells.

    Args:
        student: (C, h, w) adapter output on the padded DINOv2 grid.
        target: (C, g, g) teacher embedding.

    Returns:
        ((C, th, tw) student on the teacher's content grid, (th, tw)).
    """
    sh, sw = _content_cells(item.resized, patch)
    th, tw = teacher_content(item.orig, teacher_size, target.shape[-1])
    up = F.interpolate(student[None, :, :sh, :sw], size=(th, tw), mode="bilinear",
                       align_corners=False)[0]
    return up, (th, tw)


def object_box(item: BankItem, rng: np.random.Generator, teacher_size: int,
               min_area: float) -> Tensor | None:
    """A box (XYXY, teacher input pixels) around a random labelled class of ``item``."""
    labels = item.labels
    cells = labels.numel()
    classes = [c for c, n in item.counts.items() if n >= min_area * cells]
    if not classes:
        return None
    c = classes[int(rng.integers(len(classes)))]
    ys, xs = torch.nonzero(labels == c, as_tuple=True)
    lh, lw = labels.shape  # label grid = 4 cells per feature cell
    gh, gw = item.grid
    px_per_label = (gh * 14 / lh) * (item.orig[0] / item.resized[0])  # image px per label row
    scale = teacher_size / max(item.orig)
    f = px_per_label * scale
    fx = (gw * 14 / lw) * (item.orig[1] / item.resized[1]) * scale
    return torch.tensor([xs.min() * fx, ys.min() * f, (xs.max() + 1) * fx, (ys.max() + 1) * f],
                        dtype=torch.float32)


def distill_loss(adapter_out: Tensor, item: BankItem, target: Tensor, teacher: Any,
                 box: Tensor | None, mask_weight: float) -> tuple[Tensor, float]:
    """Embedding MSE (+ ``mask_weight`` x teacher-decoded mask BCE) for one image.

    Args:
        adapter_out: (C, h, w) student embedding.
        target: (C, g, g) teacher embedding (float32).

    Returns:
        (loss, embedding MSE as a float).
    """
    up, (th, tw) = student_on_teacher_grid(adapter_out, item, target, teacher.image_size)
    mse = F.mse_loss(up, target[:, :th, :tw])
    loss = mse
    if box is not None and mask_weight > 0:
        canvas = target.clone()
        canvas[:, :th, :tw] = up
        with torch.no_grad():
            t_logits, _ = teacher.decode(target[None], boxes=box[None])
        s_logits, _ = teacher.decode(canvas[None], boxes=box[None])
        lh, lw = th * 4, tw * 4  # decoder output is 4x the embedding grid
        bce = F.binary_cross_entropy_with_logits(
            s_logits[..., :lh, :lw], torch.sigmoid(t_logits[..., :lh, :lw]))
        loss = loss + mask_weight * bce
    return loss, mse.item()


@torch.no_grad()
def embedding_agreement(adapter: nn.Module, bank: FeatureBank, targets: Tensor,
                        teacher_size: int, embed_layer: int) -> dict[str, float]:
    """Mean MSE and cosine similarity between student and teacher over a bank."""
    mses, coss = [], []
    device = next(adapter.parameters()).device
    for item, target in zip(bank.items, targets, strict=True):
        out = adapter(item.feats[embed_layer].float()[None].to(device))[0].cpu()
        up, (th, tw) = student_on_teacher_grid(out, item, target, teacher_size)
        t = target[:, :th, :tw]
        mses.append(float(F.mse_loss(up, t)))
        coss.append(float(F.cosine_similarity(up, t, dim=0).mean()))
    return {"mse": float(np.mean(mses)), "cosine": float(np.mean(coss))}

"""Importing segment-anything where torchvision cannot be installed.

``segment_anything`` imports four torchvision functions at module level:
``torchvision.transforms.functional.{resize, to_pil_image}`` (``utils/transforms.py``) and
``torchvision.ops.boxes.{batched_nms, box_area}`` (``automatic_mask_generator.py``). Only
:func:`import_segment_anything` touches this: when torchvision is installed it simply imports
segment_anything; when it is not, it registers small stand-in modules built from the torch/PIL
functions below in ``sys.modules`` for the duration of that one import, then removes them
again. segment_anything keeps the names it bound, and the rest of the process still sees no
torchvision (``importlib.util.find_spec("torchvision") is None`` afterwards), so libraries that
probe for torchvision are not misled. Nothing happens when dinoseg is imported.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
import types
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

#: Marks the stand-in modules (``torchvision.__dinoseg_stand_in__``).
STAND_IN_FLAG = "__dinoseg_stand_in__"


def box_area(boxes: Tensor) -> Tensor:
    """Areas of ``boxes (N, 4)`` in XYXY: ``(N,)``."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise IoU of ``boxes1 (N, 4)`` and ``boxes2 (M, 4)`` (XYXY): ``(N, M)``."""
    top_left = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
    bottom_right = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (box_area(boxes1)[:, None] + box_area(boxes2)[None, :] - inter)


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression, as ``torchvision.ops.nms``.

    Visits ``boxes (N, 4)`` (XYXY) by decreasing ``scores (N,)``, keeps a box unless it
    overlaps an already kept one with IoU > ``iou_threshold``. Returns the kept indices
    ``(K,)`` int64, by decreasing score.
    """
    order = torch.argsort(scores, descending=True, stable=True)
    iou = box_iou(boxes[order], boxes[order]) > iou_threshold  # (N, N) in visiting order
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    keep: list[int] = []
    for i in range(len(order)):
        if not suppressed[i]:
            keep.append(i)
            suppressed |= iou[i]
    return order[torch.tensor(keep, dtype=torch.long)]


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """NMS run independently per category, as ``torchvision.ops.batched_nms``.

    ``boxes (N, 4)`` XYXY, ``scores (N,)``, ``idxs (N,)`` integer categories. Boxes are shifted
    by ``category * span`` (``span`` = coordinate range + 1), so boxes of different categories
    never overlap and one NMS pass does all categories. Returns kept indices ``(K,)`` int64 by
    decreasing score.
    """
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.long, device=boxes.device)
    span = boxes.max() - boxes.min() + 1
    shifted = boxes + (idxs.to(boxes) * span)[:, None]
    return nms(shifted, scores, iou_threshold)


def to_pil_image(pic: np.ndarray | Tensor) -> Image.Image:
    """``(H, W, C)`` / ``(H, W)`` uint8 array, or ``(C, H, W)`` tensor (float in 0..1 or uint8)."""
    if isinstance(pic, Tensor):
        arr = pic.detach().cpu()
        if arr.is_floating_point():
            arr = (arr * 255).round().clamp(0, 255)
        pic = arr.to(torch.uint8).permute(1, 2, 0).numpy() if arr.ndim == 3 else arr.numpy()
    pic = np.asarray(pic)
    if pic.ndim == 3 and pic.shape[2] == 1:
        pic = pic[:, :, 0]
    return Image.fromarray(pic.astype(np.uint8))


def resize(img: Image.Image | Tensor, size: int | Sequence[int]) -> Image.Image | Tensor:
    """Bilinear (antialiased) resize to ``size = (h, w)``, or shorter side to ``size`` if an int.

    Accepts a PIL image or a ``(..., C, H, W)`` tensor, and returns the same kind.
    """
    height, width = (img.height, img.width) if isinstance(img, Image.Image) else img.shape[-2:]
    if isinstance(size, int):
        scale = size / min(height, width)
        out_hw = (max(1, round(height * scale)), max(1, round(width * scale)))
    else:
        out_hw = (int(size[0]), int(size[1]))
    if isinstance(img, Image.Image):
        return img.resize((out_hw[1], out_hw[0]), Image.Resampling.BILINEAR)
    flat = img.reshape(-1, *img.shape[-3:]).float()
    out = F.interpolate(flat, size=out_hw, mode="bilinear", align_corners=False, antialias=True)
    out = out.reshape(*img.shape[:-2], *out_hw)
    return out.round().clamp(0, 255).to(img.dtype) if not img.is_floating_point() else out


def _module(name: str, **attrs: object) -> types.ModuleType:
    """A stand-in module with a spec (so ``importlib.util.find_spec`` does not raise on it)."""
    module = types.ModuleType(name, "dinoseg stand-in for a piece of torchvision")
    module.__spec__ = importlib.machinery.ModuleSpec(name, loader=None)
    setattr(module, STAND_IN_FLAG, True)
    for key, value in attrs.items():
        setattr(module, key, value)
    return module


def stand_in_modules() -> dict[str, types.ModuleType]:
    """The ``torchvision`` stand-in modules segment_anything imports from, by name."""
    functional = _module(
        "torchvision.transforms.functional", resize=resize, to_pil_image=to_pil_image
    )
    transforms = _module("torchvision.transforms", functional=functional)
    box_ops = dict(batched_nms=batched_nms, box_area=box_area, box_iou=box_iou, nms=nms)
    boxes = _module("torchvision.ops.boxes", **box_ops)
    ops = _module("torchvision.ops", boxes=boxes, **box_ops)
    root = _module("torchvision", transforms=transforms, ops=ops, __version__="0+dinoseg.stand_in")
    return {m.__name__: m for m in (root, transforms, functional, ops, boxes)}


@contextmanager
def torchvision_stand_in() -> Iterator[None]:
    """Registers the stand-in modules in ``sys.modules`` inside the block, removes them after."""
    added = {k: v for k, v in stand_in_modules().items() if k not in sys.modules}
    sys.modules.update(added)
    try:
        yield
    finally:
        for name, module in added.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]


def import_segment_anything() -> types.ModuleType:
    """Imports and returns ``segment_anything``, with the torchvision stand-in if needed.

    Real torchvision is used whenever it is installed. Raises ``ImportError`` naming the pip
    requirement when segment-anything itself is missing.
    """
    if "segment_anything" in sys.modules:
        return sys.modules["segment_anything"]
    if importlib.util.find_spec("segment_anything") is None:
        raise ImportError("segment-anything is not installed: pip install segment-anything==1.0")
    if importlib.util.find_spec("torchvision") is not None:
        return importlib.import_module("segment_anything")
    with torchvision_stand_in():
        return importlib.import_module("segment_anything")

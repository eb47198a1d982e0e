"""Automatic masks for box-prompted SAM models (LiteMedSAM).

LiteMedSAM was trained on box prompts only: a point prompt gives it an (almost) empty mask
with a stability score near 0, so segment-anything's point-grid generator finds nothing. This
generator follows the same recipe with boxes: a multi-scale grid of square boxes (``per_side``
boxes along the long side at the finest scale, then 2x, 4x ... larger), one decoder call per
box on a single image embedding, masks kept when the predicted IoU and the stability score
(segment-anything's ``calculate_stability_score``) pass their thresholds, duplicates removed
by box NMS. Records have segment-anything's keys (``segmentation``, ``area``, ``bbox`` XYWH,
``predicted_iou``, ``stability_score``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dinoseg.teachers import SamTeacher
from dinoseg.teachers.tv_compat import batched_nms, import_segment_anything


def grid_boxes(height: int, width: int, per_side: int, scales: tuple[int, ...]) -> np.ndarray:
    """``(N, 4)`` XYXY square boxes tiling the image at each scale (side = long side /
    ``per_side`` x scale), clipped to the image."""
    out = []
    for scale in scales:
        side = max(4.0, max(height, width) / per_side * scale)
        ny, nx = max(1, round(height / side)), max(1, round(width / side))
        for cy in (np.arange(ny) + 0.5) * height / ny:
            for cx in (np.arange(nx) + 0.5) * width / nx:
                out.append([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2])
    boxes = np.array(out, np.float32)
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    return boxes


class BoxGridMaskGenerator:
    """Args:
    teacher: a box-prompted SAM-family model.
    per_side: boxes along the long side at the finest scale.
    scales: box size multipliers.
    """

    def __init__(
        self,
        teacher: SamTeacher,
        *,
        per_side: int = 6,
        scales: tuple[int, ...] = (1, 2),
        pred_iou_thresh: float = 0.6,
        stability_score_thresh: float = 0.6,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        batch: int = 16,
    ):
        self.teacher = teacher
        self.per_side = per_side
        self.scales = scales
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.box_nms_thresh = box_nms_thresh
        self.batch = batch

    @torch.no_grad()
    def generate(self, image: np.ndarray) -> list[dict[str, Any]]:
        """Masks of an ``(H, W, 3)`` uint8 image (see the module docstring)."""
        amg = import_segment_anything().utils.amg
        h, w = image.shape[:2]
        t = self.teacher
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
        emb = t.embed(t.preprocess(x))
        prompts = torch.from_numpy(grid_boxes(h, w, self.per_side, self.scales))
        masks, ious, stab = [], [], []
        for i in range(0, len(prompts), self.batch):
            b = prompts[i : i + self.batch]
            embs = emb.expand(len(b), -1, -1, -1)
            logits, iou = t.decode(embs, boxes=t.to_input_coords(b, (h, w)))
            up = t.postprocess_masks(logits, (h, w))[:, 0]
            s = amg.calculate_stability_score(up, 0.0, self.stability_score_offset)
            keep = (iou[:, 0] > self.pred_iou_thresh) & (s >= self.stability_score_thresh)
            keep &= (up > 0).flatten(1).any(dim=1)
            masks.append(up[keep] > 0)
            ious.append(iou[keep, 0])
            stab.append(s[keep])
        mask = torch.cat(masks)
        if not len(mask):
            return []
        iou_all, stab_all = torch.cat(ious), torch.cat(stab)
        boxes = amg.batched_mask_to_box(mask)
        keep_idx = batched_nms(boxes.float(), iou_all, torch.zeros(len(boxes)), self.box_nms_thresh)
        return [
            {
                "segmentation": mask[i].numpy(),
                "area": int(mask[i].sum()),
                "bbox": amg.box_xyxy_to_xywh(boxes[i]).tolist(),
                "predicted_iou": float(iou_all[i]),
                "stability_score": float(stab_all[i]),
            }
            for i in keep_idx.tolist()
        ]

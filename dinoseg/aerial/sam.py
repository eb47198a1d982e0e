"""SAM-family models for the aerial methods: automatic masks and prompted decoding.

:func:`load_sam` gives the packaged LiteMedSAM offline, or the real SAM (or MobileSAM) from a
checkpoint file. :func:`mask_generator` wraps a :class:`~dinoseg.teachers.SamTeacher` in
segment-anything's ``Sam`` so that its ``SamAutomaticMaskGenerator`` (grid of point prompts,
predicted-IoU and stability filtering, box NMS) runs on it unchanged; box-prompted models
(LiteMedSAM: point prompts give it empty masks) get the same recipe over a grid of boxes
(:mod:`dinoseg.aerial.boxgrid`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from torch import Tensor, nn

from dinoseg.io import InputError
from dinoseg.teachers import MissingCheckpointError, SamTeacher, build_teacher
from dinoseg.teachers.tv_compat import import_segment_anything

#: checkpoint file name prefix -> teacher name
CHECKPOINT_NAMES: Mapping[str, str] = MappingProxyType(
    {
        "sam_vit_b": "sam_vit_b",
        "sam_vit_l": "sam_vit_l",
        "sam_vit_h": "sam_vit_h",
        "mobile_sam": "mobilesam",
        "lite_medsam": "litemedsam",
    }
)


def load_sam(name: str = "litemedsam", checkpoint: str | Path | None = None) -> SamTeacher:
    """A frozen SAM-family model.

    Args:
        name: a teacher name (``litemedsam``, ``mobilesam``, ``sam_vit_b|l|h``,
            ``tiny-random``) or ``auto``: from the checkpoint's file name, else LiteMedSAM.
        checkpoint: weights file (needed by every model but the packaged LiteMedSAM).
    """
    if name == "auto":
        name = "litemedsam"
        if checkpoint:
            stem = Path(checkpoint).name.lower()
            found = [v for k, v in CHECKPOINT_NAMES.items() if stem.startswith(k)]
            if not found:
                raise InputError(
                    f"{checkpoint}: cannot tell the SAM model from the file name; pass "
                    f"--sam-model (one of {', '.join(sorted(set(CHECKPOINT_NAMES.values())))})"
                )
            name = found[0]
    try:
        return build_teacher(name, checkpoint or None)
    except (MissingCheckpointError, ValueError) as e:
        raise InputError(str(e)) from e


class _SizedEncoder(nn.Module):
    """An image encoder with the ``img_size`` attribute segment-anything's code reads."""

    def __init__(self, encoder: nn.Module, img_size: int):
        super().__init__()
        self.encoder = encoder
        self.img_size = img_size

    def forward(self, x: Tensor) -> Tensor:
        return self.encoder(x)


def as_segment_anything(teacher: SamTeacher) -> Any:
    """The teacher's parts (shared, not copied) as a ``segment_anything.modeling.Sam``."""
    sa = import_segment_anything()
    encoder = teacher.image_encoder
    if not hasattr(encoder, "img_size"):
        encoder = _SizedEncoder(encoder, teacher.image_size)
    sam = sa.modeling.Sam(
        image_encoder=encoder,
        prompt_encoder=teacher.prompt_encoder,
        mask_decoder=teacher.mask_decoder,
        pixel_mean=teacher.pixel_mean.flatten().tolist(),
        pixel_std=teacher.pixel_std.flatten().tolist(),
    )
    return sam.eval()


#: SAM-family models trained on box prompts only (their automatic masks use a box grid)
BOX_PROMPTED = frozenset({"litemedsam"})


def mask_generator(
    teacher: SamTeacher,
    *,
    prompts: str = "auto",
    points_per_side: int = 16,
    pred_iou_thresh: float = 0.6,
    stability_score_thresh: float = 0.6,
    box_nms_thresh: float = 0.7,
) -> Any:
    """An automatic mask generator over ``teacher``.

    ``prompts="points"``: segment-anything's ``SamAutomaticMaskGenerator`` (a
    ``points_per_side`` x ``points_per_side`` point grid), for SAM and MobileSAM.
    ``"boxes"``: :class:`~dinoseg.aerial.boxgrid.BoxGridMaskGenerator` (``points_per_side``
    boxes along the long side, two scales), for box-prompted models (LiteMedSAM).
    ``"auto"`` picks by the model. Both filter by predicted IoU and stability, then box NMS;
    ``generate(image (H, W, 3) uint8)`` returns records with ``segmentation`` ((H, W) bool),
    ``area``, ``bbox`` (XYWH), ``predicted_iou``, ``stability_score``.
    """
    if points_per_side < 1:
        raise InputError(f"points per side must be at least 1, got {points_per_side}")
    if prompts == "auto":
        prompts = "boxes" if teacher.name in BOX_PROMPTED else "points"
    if prompts == "boxes":
        from dinoseg.aerial.boxgrid import BoxGridMaskGenerator

        return BoxGridMaskGenerator(
            teacher, per_side=points_per_side, pred_iou_thresh=pred_iou_thresh,
            stability_score_thresh=stability_score_thresh, box_nms_thresh=box_nms_thresh,
        )
    if prompts != "points":
        raise InputError(f"SAM prompts {prompts!r}: use auto, points or boxes")
    sa = import_segment_anything()
    return sa.SamAutomaticMaskGenerator(
        as_segment_anything(teacher),
        points_per_side=points_per_side,
        pred_iou_thresh=pred_iou_thresh,
        stability_score_thresh=stability_score_thresh,
        box_nms_thresh=box_nms_thresh,
    )

"""SAM-family teachers: a frozen image encoder plus SAM's prompt encoder and mask decoder.

``build_teacher(name, checkpoint=None)`` builds one (names in :data:`TEACHER_REGISTRY`; the
default ``litemedsam`` ships with its weights). Every teacher follows :class:`Teacher`:

    x = teacher.preprocess(images)            # (B, 3, H, W) 0..255 -> (B, 3, S, S)
    emb = teacher.embed(x)                    # (B, 256, 64, 64) for the real teachers
    logits, iou = teacher.decode(emb, boxes)  # boxes (B, 4) XYXY in input pixels
                                              # -> (B, 1, 256, 256), (B, 1)

Embeddings are cached on disk by :func:`dinoseg.teachers.cache.cached_embeddings`.
Nothing here imports segment-anything until a teacher is built.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor

from dinoseg.teachers.build import TEACHER_NOTES, TEACHER_REGISTRY, build_teacher
from dinoseg.teachers.sam import SamTeacher
from dinoseg.teachers.tv_compat import import_segment_anything
from dinoseg.teachers.weights import MissingCheckpointError

__all__ = [
    "TEACHER_NOTES",
    "TEACHER_REGISTRY",
    "MissingCheckpointError",
    "SamTeacher",
    "Teacher",
    "build_teacher",
    "import_segment_anything",
]


@runtime_checkable
class Teacher(Protocol):
    """What a distillation teacher offers (implemented by :class:`SamTeacher`).

    ``name`` / ``weights_id`` / ``image_size`` identify the embeddings it produces.
    """

    name: str
    weights_id: str
    image_size: int

    @property
    def embed_shape(self) -> tuple[int, int, int]:
        """``(C, h, w)`` of one embedding, e.g. ``(256, 64, 64)``."""
        ...

    def preprocess(self, images: Tensor) -> Tensor:
        """``(B, 3, H, W)`` 0..255 -> ``(B, 3, S, S)``: long side resized to ``S``, SAM's
        normalisation, zero padding at bottom/right."""
        ...

    def embed(self, x: Tensor) -> Tensor:
        """``(B, 3, S, S)`` -> ``(B, C, h, w)`` image embedding."""
        ...

    def decode(
        self,
        embeddings: Tensor,
        boxes: Tensor | None = None,
        points: Tensor | None = None,
        point_labels: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``(B, C, h, w)`` + boxes ``(B, 4)`` XYXY / points ``(B, N, 2)`` with labels
        ``(B, N)``, in input pixels -> ``(logits (B, 1, 4h, 4w), iou (B, 1))``."""
        ...

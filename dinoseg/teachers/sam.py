"""A SAM-family model behind the teacher interface: encode once, prompt many times.

:class:`SamTeacher` holds an image encoder (SAM's ViT or a TinyViT) and segment-anything's
``PromptEncoder`` and ``MaskDecoder``, under SAM's parameter names (``image_encoder.*``,
``prompt_encoder.*``, ``mask_decoder.*``), so a SAM-format state dict loads into it directly.

Coordinates: "input pixels" are pixels of the ``S x S`` encoder input (``S = image_size``) after
:meth:`SamTeacher.preprocess` resized the long side of the image to ``S``; use
:meth:`SamTeacher.to_input_coords` to map image pixels there. Boxes are XYXY.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:
    from segment_anything.modeling import MaskDecoder, PromptEncoder

#: SAM's normalisation, in 0..255 RGB.
SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)


def resized_shape(height: int, width: int, long_side: int) -> tuple[int, int]:
    """``(h, w)`` after resizing the long side to ``long_side`` (SAM's rounding)."""
    scale = long_side / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


class SamTeacher(nn.Module):
    """A frozen SAM-like teacher.

    ``name`` is the registry name, ``weights_id`` identifies the weights (e.g. a checkpoint
    fingerprint), and together with ``image_size`` they key cached embeddings. ``pixel_mean`` /
    ``pixel_std`` (0..255 RGB) are SAM's by default; LiteMedSAM was trained on ``x / 255``.
    """

    pixel_mean: Tensor  # (1, 3, 1, 1), a non-persistent buffer
    pixel_std: Tensor  # (1, 3, 1, 1)

    def __init__(
        self,
        image_encoder: nn.Module,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
        *,
        name: str,
        image_size: int,
        weights_id: str = "",
        pixel_mean: tuple[float, float, float] = SAM_PIXEL_MEAN,
        pixel_std: tuple[float, float, float] = SAM_PIXEL_STD,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.name = name
        self.image_size = image_size
        self.weights_id = weights_id
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(1, 3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(1, 3, 1, 1), False)

    @property
    def embed_shape(self) -> tuple[int, int, int]:
        """``(C, h, w)`` of one image embedding, e.g. ``(256, 64, 64)``."""
        h, w = self.prompt_encoder.image_embedding_size
        return int(self.prompt_encoder.embed_dim), int(h), int(w)

    @property
    def mask_shape(self) -> tuple[int, int]:
        """``(4h, 4w)``: the side of the low-resolution mask logits (256 x 256 for SAM)."""
        _, h, w = self.embed_shape
        return 4 * h, 4 * w

    def preprocess(self, images: Tensor) -> Tensor:
        """``(B, 3, H, W)`` RGB in 0..255 (uint8 or float) -> ``(B, 3, S, S)`` encoder input.

        Resizes the long side to ``S`` (bilinear, antialiased), normalises with the teacher's
        pixel mean/std (SAM's unless built otherwise) and zero-pads bottom/right.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        x = images.to(self.pixel_mean.device, torch.float32)
        size = resized_shape(x.shape[2], x.shape[3], self.image_size)
        if size != tuple(x.shape[2:]):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        x = (x - self.pixel_mean) / self.pixel_std
        return F.pad(x, (0, self.image_size - size[1], 0, self.image_size - size[0]))

    def embed(self, x: Tensor) -> Tensor:
        """Image embedding: ``(B, 3, S, S)`` preprocessed input -> ``(B, C, h, w)``."""
        return self.image_encoder(x)

    def decode(
        self,
        embeddings: Tensor,
        boxes: Tensor | None = None,
        points: Tensor | None = None,
        point_labels: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Mask logits for one prompt per image (``multimask_output=False``).

        Args:
            embeddings: ``(B, C, h, w)`` image embeddings from :meth:`embed`.
            boxes: ``(B, 4)`` XYXY in input pixels, or None.
            points: ``(B, N, 2)`` XY in input pixels, or None; needs ``point_labels (B, N)``
                (1 foreground, 0 background, -1 padding).

        Returns:
            ``(logits (B, 1, 4h, 4w), iou (B, 1))``; the logits cover the padded ``S x S`` input
            (see :meth:`postprocess_masks`).
        """
        if boxes is None and points is None:
            raise ValueError("decode needs a prompt: pass boxes (B, 4) and/or points (B, N, 2)")
        point_prompt: tuple[Tensor, Tensor] | None = None
        if points is not None:
            if point_labels is None:
                raise ValueError("points need point_labels (B, N): 1 foreground, 0 background")
            point_prompt = (points.float(), point_labels.long())
        dense_pe = self.prompt_encoder.get_dense_pe()  # (1, C, h, w)
        masks, ious = [], []
        for i in range(embeddings.shape[0]):  # SAM's decoder takes one image per call
            sparse, dense = self.prompt_encoder(
                points=None if point_prompt is None else tuple(p[i : i + 1] for p in point_prompt),
                boxes=None if boxes is None else boxes[i : i + 1].float(),
                masks=None,
            )
            mask, iou = self.mask_decoder(
                image_embeddings=embeddings[i : i + 1],
                image_pe=dense_pe,
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=False,
            )
            masks.append(mask)
            ious.append(iou)
        return torch.cat(masks), torch.cat(ious)

    def to_input_coords(self, coords: Tensor, original_size: tuple[int, int]) -> Tensor:
        """Image pixels -> input pixels: ``(..., 2k)`` XY(XY...) for an image of ``(H, W)``."""
        height, width = original_size
        new_h, new_w = resized_shape(height, width, self.image_size)
        scale = torch.tensor([new_w / width, new_h / height], dtype=torch.float32)
        flat = coords.float().reshape(*coords.shape[:-1], -1, 2) * scale.to(coords.device)
        return flat.reshape(coords.shape)

    def postprocess_masks(self, logits: Tensor, original_size: tuple[int, int]) -> Tensor:
        """``(B, 1, 4h, 4w)`` logits -> ``(B, 1, H, W)`` logits over the original image."""
        side = (self.image_size, self.image_size)
        x = F.interpolate(logits, side, mode="bilinear", align_corners=False)
        new_h, new_w = resized_shape(*original_size, self.image_size)
        x = x[..., :new_h, :new_w]
        return F.interpolate(x, original_size, mode="bilinear", align_corners=False)

    @torch.no_grad()
    def segment(self, images: Tensor, boxes: Tensor) -> Tensor:
        """Convenience: ``images (B, 3, H, W)`` 0..255 and image-pixel ``boxes (B, 4)`` XYXY ->
        mask logits ``(B, 1, H, W)``."""
        size = (images.shape[2], images.shape[3])
        embeddings = self.embed(self.preprocess(images))
        logits, _ = self.decode(embeddings, boxes=self.to_input_coords(boxes, size))
        return self.postprocess_masks(logits, size)

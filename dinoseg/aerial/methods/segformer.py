"""SegFormer (supervised on ADE20K, 150 classes) mapped onto city categories.

Through transformers' ``SegformerForSemanticSegmentation``: the hub id
``nvidia/segformer-b5-finetuned-ade-640-640`` (:data:`SEGFORMER_B5`) or a local directory. Per
tile: ImageNet-normalised pixels at the encoder scale, logits at 1/4 resolution upsampled to the
tile, softmax over the 150 classes, and the probabilities summed per city category with
:func:`dinoseg.aerial.ade20k.mapping_matrix` (plus an "other" column). Log-probabilities are
blended across tiles; a pixel whose best column is "other" is unknown.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dinoseg.aerial.ade20k import ADE20K_CLASSES, mapping_matrix
from dinoseg.aerial.categories import UNKNOWN
from dinoseg.aerial.methods.base import AerialMethod, TileSettings
from dinoseg.backbone import IMAGENET_MEAN, IMAGENET_STD
from dinoseg.io import InputError

SEGFORMER_B5 = "nvidia/segformer-b5-finetuned-ade-640-640"


def load_segformer(spec: str = SEGFORMER_B5) -> nn.Module:
    """``SegformerForSemanticSegmentation`` from a local directory or a hub id (eval mode).

    Raises:
        InputError: the weights cannot be had (offline, unknown id, missing directory).
    """
    from transformers import SegformerForSemanticSegmentation

    local = Path(spec).expanduser()
    if spec.startswith((".", "/", "~")) and not local.is_dir():
        raise InputError(f"SegFormer directory {spec} not found")
    try:
        model = SegformerForSemanticSegmentation.from_pretrained(
            str(local) if local.is_dir() else spec, local_files_only=local.is_dir()
        )
    except (OSError, ValueError) as e:
        raise InputError(
            f"cannot load SegFormer {spec!r} ({str(e).splitlines()[0]}); download "
            f"{SEGFORMER_B5} where there is network access and pass its directory"
        ) from e
    return model.eval()


class SegformerMethod(AerialMethod):
    """Args:
    model: a ``SegformerForSemanticSegmentation`` with ADE20K's 150 labels.
    class_names: the city categories to map onto (ADE classes of other categories -> other).
    scale: encoder pixels per image pixel.
    """

    name = "segformer"

    def __init__(
        self,
        model: nn.Module,
        class_names: list[str],
        *,
        scale: float = 1.0,
        tiles: TileSettings | None = None,
    ):
        super().__init__(tiles)
        cfg: Any = getattr(model, "config", None)
        n = int(getattr(cfg, "num_labels", 0))
        if n != len(ADE20K_CLASSES):
            raise InputError(
                f"the SegFormer has {n} labels; the city mapping is for ADE20K's 150 classes"
            )
        self.model = model.eval()
        self.names = list(class_names)
        self.scale = scale
        self.matrix = torch.from_numpy(mapping_matrix(self.names))  # (150, C + 1)

    @property
    def class_names(self) -> list[str]:
        return list(self.names)

    @torch.inference_mode()
    def tile_scores(self, tiles: np.ndarray) -> np.ndarray:
        """Log-probabilities ``(B, C + 1, th, tw)`` of the city categories and "other"."""
        th, tw = tiles.shape[1:3]
        x = torch.from_numpy(np.ascontiguousarray(tiles)).permute(0, 3, 1, 2).float() / 255.0
        size = (max(32, round(th * self.scale)), max(32, round(tw * self.scale)))
        if size != (th, tw):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(
            1, 3, 1, 1
        )
        logits = self.model(pixel_values=x).logits  # (B, 150, h/4, w/4)
        logits = F.interpolate(logits, size=(th, tw), mode="bilinear", align_corners=False)
        probs = torch.einsum("bahw,ac->bchw", logits.softmax(dim=1), self.matrix)
        return torch.log(probs.clamp_min(1e-6)).numpy()

    def decide(self, scores: np.ndarray) -> np.ndarray:
        labels = np.argmax(scores, axis=0).astype(np.uint8)
        labels[labels == len(self.names)] = UNKNOWN
        return labels

"""Online pixel augmentation for episodic training: fresh backbone features per view.

A cached :class:`~dinoseg.train.bank.FeatureBank` shows the segmenter the same feature map of
an image every time it is drawn, and with a small dataset it fits those maps (PASCAL subset:
+8 mIoU over the prototype on its training images, +1 on new images; docs/training-notes.md).
Interpolating cached features was no substitute (feature-grid crops, removed: −10 mIoU, a
different distribution from the encoder's). :class:`PixelAugmenter` instead re-encodes each
drawn image after a random colour jitter, crop and rescale — what the encoder would see of a new
photo of the scene — at the cost of a backbone forward per view (~0.15 s at 336 px on one CPU
thread).

It is a view source of :class:`~dinoseg.train.episodes.TrainEpisodes` in place of the bank it
wraps. Every random choice comes from the generator passed in, which the episode sampler seeds
from ``(seed, step)``: a resumed run sees the same views as an uninterrupted one.
"""

from __future__ import annotations

import numpy as np
import torch

from dinoseg.backbone import DinoBackbone
from dinoseg.preprocess import image_to_tensor, plan_geometry
from dinoseg.train.bank import BankItem, FeatureBank, make_item

#: Crop attempts that must keep the episode class before the whole image is used.
CROP_TRIES = 5


def jitter_colour(image: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """(H, W, 3) uint8 -> same, with brightness, contrast and saturation each scaled by a
    factor drawn from [1 - strength, 1 + strength]."""
    x = image.astype(np.float32)
    b, c, s = rng.uniform(1.0 - strength, 1.0 + strength, size=3)
    x = x * b
    mean = x.mean()
    x = (x - mean) * c + mean
    gray = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    x = gray[..., None] + (x - gray[..., None]) * s
    return np.clip(x, 0, 255).astype(np.uint8)


def random_crop(labels: np.ndarray, class_id: int, rng: np.random.Generator, min_side: float,
                min_pixels: int) -> tuple[slice, slice]:
    """A crop window keeping each side >= ``min_side`` of the image and >= ``min_pixels`` of
    ``class_id``; the whole image after :data:`CROP_TRIES` failed draws."""
    h, w = labels.shape
    for _ in range(CROP_TRIES):
        fh, fw = rng.uniform(min_side, 1.0, size=2)
        ch, cw = max(1, round(h * fh)), max(1, round(w * fw))
        y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        window = (slice(y0, y0 + ch), slice(x0, x0 + cw))
        if int((labels[window] == class_id).sum()) >= min_pixels:
            return window
    return slice(0, h), slice(0, w)


class PixelAugmenter:
    """Random views of a bank's images, encoded by the frozen backbone.

    Args:
        bank: the training bank (its dataset gives the pixels, its image size the scale).
        backbone: the frozen encoder (the bank's).
        strength: s in (0, 1): colour factors in [1-s, 1+s], encoder long side scaled by a
            factor in [1-s/2, 1+s/2], crops keeping at least 1-s of each side.
        min_area: the episode class must keep this fraction of the crop.
    """

    def __init__(self, bank: FeatureBank, backbone: DinoBackbone, strength: float,
                 min_area: float = 0.005):
        if not 0.0 < strength < 1.0:
            raise ValueError(f"augmentation strength must be in (0, 1), got {strength}")
        self.bank, self.backbone, self.strength, self.min_area = bank, backbone, strength, min_area

    @torch.inference_mode()
    def view(self, index: int, class_id: int, rng: np.random.Generator) -> BankItem:
        """A fresh augmented :class:`BankItem` of ``bank.items[index]`` that shows
        ``class_id`` (features float16, labels on the new grid)."""
        bank = self.bank
        image, labels = bank.dataset.load(index)
        s = self.strength
        rows, cols = random_crop(labels, class_id, rng, 1.0 - s,
                                 max(1, int(self.min_area * labels.size)))
        image, labels = jitter_colour(image[rows, cols], rng, s), labels[rows, cols]
        h, w = labels.shape
        size = max(56, round(bank.image_size * rng.uniform(1.0 - s / 2, 1.0 + s / 2)))
        geom = plan_geometry(h, w, image_size=size, patch=self.backbone.patch_size)
        feats = self.backbone(image_to_tensor(image, geom)[None])
        return make_item(bank.items[index].stem, feats, labels, geom, bank.dataset.ignore_index)

"""HeadPredictor: a trained head's class probabilities at each image's own resolution.

Serving calls it beside a few-shot predictor. To encode an image once for both: give the head
the few-shot predictor's backbone object and a shared :class:`~dinoseg.feature_cache.FeatureCache`
(the few-shot side wrapped in :class:`~dinoseg.feature_cache.CachedPredictor` over the same
cache) — the second reader of an image at the same working size finds its features in memory —
or pass features already computed (``feats=``, what ``backbone(pixels)`` returned for that
image at :meth:`HeadPredictor.geometry`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from dinoseg.backbone import DinoBackbone
from dinoseg.confidence import mask_confidence
from dinoseg.data.classnames import normalize_class_name
from dinoseg.device import module_device, resolve_device
from dinoseg.feature_cache import FeatureCache
from dinoseg.heads.features import BlockFeatures
from dinoseg.heads.model import SegHead
from dinoseg.inputs import check_image
from dinoseg.io import InputError
from dinoseg.predictor import Prediction
from dinoseg.preprocess import Geometry, logits_at_image_size

#: Labelled images of a class from which the head serves it (measured: bench/learners.py).
SWITCH_LABELS = 10
#: The measured fusion with the few-shot side (the prototype with the support memory):
#: ``p = FUSION_WEIGHT * p_head + (1 - FUSION_WEIGHT) * p_fewshot``, the class where
#: ``p > FUSION_THRESHOLD`` (selection split, bench/learners.py).
FUSION_WEIGHT = 0.75
FUSION_THRESHOLD = 0.3
#: Per-image features as a backbone returns them: one (1, C, h, w) tensor per backbone layer.
Features = Sequence[Tensor]


def logits_to_probs(logits: Tensor, geom: Geometry) -> Tensor:
    """Class logits on the padded patch grid -> softmax probabilities at the original size.

    Args:
        logits: (M, h, w) covering the padded input.

    Returns:
        (M, H, W) float32.
    """
    return logits_at_image_size(logits, geom).softmax(1)[0]


def fuse(head_prob: np.ndarray, fewshot_prob: np.ndarray,
         weight: float = FUSION_WEIGHT) -> np.ndarray:
    """``weight * head_prob + (1 - weight) * fewshot_prob``: two (H, W) probabilities of the
    same image and class (threshold the result at :data:`FUSION_THRESHOLD`)."""
    if head_prob.shape != fewshot_prob.shape:
        raise InputError(f"probabilities of {head_prob.shape} and {fewshot_prob.shape} pixels")
    if not 0.0 <= weight <= 1.0:
        raise InputError(f"fusion weight {weight}: give a value in [0, 1]")
    return (weight * head_prob + (1.0 - weight) * fewshot_prob).astype(np.float32)


class HeadPredictor:
    """A head with its encoder.

    Args:
        head: the trained head.
        encoder: its :class:`BlockFeatures` (backbone, blocks, working size, optional cache).
        threshold: a pixel is the class when its probability is above it.
        model_id: a name for the head (recorded in outputs).
    """

    def __init__(self, head: SegHead, encoder: BlockFeatures, *, threshold: float = 0.5,
                 model_id: str = "head", label_counts: dict[str, int] | None = None):
        if not 0.0 < threshold < 1.0:
            raise InputError(f"threshold must be between 0 and 1, got {threshold}")
        self.head, self.encoder = head.eval(), encoder
        self.threshold, self.model_id = threshold, model_id
        self.label_counts = dict(label_counts or {})

    def serves(self, class_name: str, min_labels: int = SWITCH_LABELS) -> bool:
        """Whether the head should answer for ``class_name``: it knows the class and was trained
        on at least ``min_labels`` labelled images of it (fit + held back); below that the
        few-shot model with the support memory does better (README, "Served classes")."""
        name = normalize_class_name(class_name)
        return name in self.classes and self.label_counts.get(name, 0) >= min_labels

    @classmethod
    def load(
        cls,
        ckpt_dir: str | Path,
        backbone: DinoBackbone | str | None = None,
        *,
        cache: FeatureCache | None = None,
        image_size: int | None = None,
        device: str | torch.device | None = None,
    ) -> HeadPredictor:
        """A predictor for the head checkpoint ``ckpt_dir``.

        Args:
            backbone: a loaded backbone to share (e.g. the few-shot predictor's; it must return
                the head's blocks and have the checkpoint's weights), a spec to load, or
                ``None`` for the checkpoint's own backbone and layers.
            cache: a feature cache to share with other predictors.
            image_size: override of the checkpoint's working size.
            device: where the head (and a backbone it loads) runs; ``None`` = where the
                backbone is.
        """
        from dinoseg.backbone import load_backbone
        from dinoseg.heads.checkpoint import head_metrics, load_head

        head, config = load_head(ckpt_dir)
        if not isinstance(backbone, DinoBackbone):
            backbone = load_backbone(backbone or config.backbone, layers=config.layers)
        elif backbone.embed_dim != head.spec.dim:
            raise InputError(f"{ckpt_dir}: the head reads {head.spec.dim}-channel features, "
                             f"the given backbone gives {backbone.embed_dim}")
        target = module_device(backbone) if device is None else resolve_device(device)
        head.to(target)
        encoder = BlockFeatures(backbone.to(target), head.spec.blocks,
                                image_size or config.image_size, cache)
        metrics = head_metrics(ckpt_dir)
        counts = {name: metrics.get("labels_per_class", {}).get(name, 0)
                  + metrics.get("val_labels_per_class", {}).get(name, 0) for name in head.classes}
        return cls(head, encoder, threshold=config.threshold,
                   model_id=config.version or Path(ckpt_dir).name, label_counts=counts)

    @property
    def classes(self) -> tuple[str, ...]:
        """The class names the head knows (normalised)."""
        return self.head.classes

    @property
    def image_size(self) -> int:
        return self.encoder.image_size

    def geometry(self, image: np.ndarray) -> Geometry:
        return self.encoder.geometry(image)

    def class_index(self, class_name: str) -> int:
        """The output channel of ``class_name``; :class:`InputError` for a class it lacks."""
        name = normalize_class_name(class_name)
        if name not in self.classes:
            raise InputError(f"the head does not know class {name!r}; it knows "
                             f"{', '.join(self.classes)}")
        return self.classes.index(name)

    def features_of(self, image: np.ndarray) -> list[Tensor]:
        """Every backbone layer of ``image``: L x (1, C, h, w) (through the shared cache)."""
        check_image(image, "image")
        return self.encoder.encode(image)[0]

    @torch.inference_mode()
    def probs(self, images: Sequence[np.ndarray],
              feats: Sequence[Features] | None = None) -> list[np.ndarray]:
        """Every class's probability: N (M, H_i, W_i) float32 at the images' sizes.

        Args:
            images: N (H_i, W_i, 3) uint8.
            feats: optional per-image backbone outputs (see the module docstring).
        """
        if feats is not None and len(feats) != len(images):
            raise InputError(f"{len(images)} images but {len(feats)} feature sets")
        out = []
        for i, image in enumerate(images):
            check_image(image, f"image {i + 1}")
            layers = feats[i] if feats is not None else self.features_of(image)
            logits = self.head(self.encoder.select(layers))[0]
            out.append(logits_to_probs(logits, self.geometry(image)).cpu().numpy())
        return out

    def prob(self, images: Sequence[np.ndarray], class_name: str,
             feats: Sequence[Features] | None = None) -> list[np.ndarray]:
        """``class_name``'s probability: N (H_i, W_i) float32 at the images' sizes."""
        k = self.class_index(class_name)
        return [p[k] for p in self.probs(images, feats)]

    def predict(self, images: Sequence[np.ndarray], class_name: str,
                feats: Sequence[Features] | None = None) -> list[Prediction]:
        """N :class:`~dinoseg.predictor.Prediction` for ``class_name`` (as a few-shot
        predictor's: mask, probability, confidence)."""
        out = []
        for prob in self.prob(images, class_name, feats):
            mask = prob > self.threshold
            out.append(Prediction(mask, prob, mask_confidence(prob, threshold=self.threshold)))
        return out

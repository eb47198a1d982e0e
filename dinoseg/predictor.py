"""FewShotPredictor: encode the support once, segment many queries."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from dinoseg.backbone import DEFAULT_BACKBONE, DinoBackbone, load_backbone
from dinoseg.confidence import mask_confidence
from dinoseg.device import autocast, module_device, resolve_device
from dinoseg.inputs import check_image, check_support, shape_batches, support_tensors
from dinoseg.io import InputError
from dinoseg.memory.labels import image_hash
from dinoseg.memory.vote import MemoryMode, memory_vote, mix_vote
from dinoseg.models.knn import support_keys
from dinoseg.modelspec import parse_model_spec, resolve_model_spec
from dinoseg.preprocess import Geometry, image_to_tensor, logits_to_image, plan_geometry

if TYPE_CHECKING:
    from dinoseg.memory.store import SupportMemory

#: Default long side (px) images are resized to before encoding (see README, "Image size").
DEFAULT_IMAGE_SIZE = 448


@dataclass
class Prediction:
    """One query's result.

    Attributes:
        mask: (H, W) bool at the query's original resolution.
        prob: (H, W) float32 foreground probability.
        confidence: scalar in [0, 1] (:func:`dinoseg.confidence.mask_confidence`).
        retrieved: content hashes of the memory's labelled images that voted (best first;
            empty without a memory).
    """

    mask: np.ndarray
    prob: np.ndarray
    confidence: float
    retrieved: tuple[str, ...] = ()


class FewShotPredictor:
    """Stateful few-shot predictor (the support is encoded once and cached).

    With a support memory attached (:meth:`attach_memory`) and a class named in
    :meth:`set_support`, each query also retrieves the memory's most similar labelled images of
    that class (never the query itself nor the supports, by content hash) and mixes their
    nearest-neighbour vote into the model's output (:class:`dinoseg.memory.MemoryMode`).

    Args:
        model: a few-shot model (``forward(query_feats, support_feats, support_masks)``).
        backbone: the frozen encoder.
        image_size: long side (px) of the encoder's input.
        threshold: probability above which a pixel is foreground.
        batch_size: queries encoded together.
        model_id: a name for the model (recorded in outputs).
        device: where the model and the backbone run (:func:`dinoseg.device.resolve_device`;
            ``None`` = where the backbone is). Results come back on the CPU as numpy arrays.
    """

    def __init__(
        self,
        model: nn.Module,
        backbone: DinoBackbone,
        *,
        image_size: int = DEFAULT_IMAGE_SIZE,
        threshold: float = 0.5,
        batch_size: int = 4,
        model_id: str = "model",
        device: str | torch.device | None = None,
    ):
        if not 0.0 < threshold < 1.0:
            raise InputError(f"threshold must be between 0 and 1, got {threshold}")
        if device == "auto" and getattr(backbone, "cpu_only", False):
            device = "cpu"  # an ONNX Runtime backbone: auto = the CPU
        self.device = module_device(backbone) if device is None else resolve_device(device)
        self.model = model.eval().to(self.device)
        self.backbone = backbone.to(self.device)
        self.image_size = image_size
        self.threshold = threshold
        self.batch_size = max(1, batch_size)
        self.model_id = model_id
        self._support: tuple[list[Tensor], Tensor] | None = None
        self.memory: SupportMemory | None = None
        self.memory_mode = MemoryMode()
        self._memory_layer = -1
        self.class_name: str | None = None
        self._support_hashes: frozenset[str] = frozenset()
        self._support_keys: tuple[Tensor, Tensor] | None = None

    def attach_memory(self, memory: SupportMemory | None, mode: MemoryMode | None = None) -> None:
        """Use ``memory`` for requests that name a class (``None`` detaches it).

        Raises :class:`InputError` when the memory was built with another backbone or a block
        this predictor's backbone does not return.
        """
        if memory is not None:
            from dinoseg.backbone.encoder import weights_digest
            from dinoseg.memory.encoder import check_compatible

            self._memory_layer = check_compatible(
                memory.settings, self.backbone, weights_digest(self.backbone)
            )
        self.memory = memory
        if mode is not None:
            self.memory_mode = mode
        self._support_keys = None

    @property
    def uses_memory(self) -> bool:
        """Whether :meth:`predict` consults the memory (one is attached and a class is named)."""
        return self.memory is not None and self.class_name is not None

    def _geometry(self, image: np.ndarray) -> Geometry:
        h, w = image.shape[:2]
        return plan_geometry(h, w, image_size=self.image_size, patch=self.backbone.patch_size)

    def encode(self, pixels: Tensor) -> list[Tensor]:
        """(B, 3, Hp, Wp) normalised -> one (B, C, Hp/14, Wp/14) tensor per backbone layer,
        on :attr:`device`."""
        return self.backbone(pixels.to(self.device))

    def set_support(
        self,
        images: Sequence[np.ndarray],
        masks: Sequence[np.ndarray],
        class_name: str | None = None,
    ) -> None:
        """Encode and cache the support set.

        All supports are resized onto the geometry of the first one.

        Args:
            images: K (H_k, W_k, 3) uint8 images.
            masks: K (H_k, W_k) bool foreground masks (non-empty).
            class_name: what the masks mark (e.g. ``"road"``); with an attached memory the
                queries also use its labelled images of this class. ``None``: the support alone.
        """
        check_support(images, masks)
        pix, msk = support_tensors(images, masks, self._geometry(images[0]))
        feats = [f[None] for f in self.encode(pix)]  # (1, K, C, h, w)
        self._support = (feats, msk[None].to(self.device))  # masks (1, K, Hp, Wp)
        self.class_name = class_name
        self._support_hashes = frozenset(image_hash(i) for i in images if class_name)
        self._support_keys = None

    @property
    def has_support(self) -> bool:
        return self._support is not None

    @torch.inference_mode()
    def predict(self, queries: Sequence[np.ndarray]) -> list[Prediction]:
        """Segment queries with the cached support.

        Args:
            queries: N (H_i, W_i, 3) uint8 images (any sizes; equal sizes are batched).

        Returns:
            N :class:`Prediction` in input order.
        """
        if self._support is None:
            raise InputError("set the support (images and masks) before predicting")
        for i, q in enumerate(queries):
            check_image(q, f"query {i + 1}")
        if self.memory is not None and self.class_name is not None:
            self.memory.refresh()  # a label added since (by any process) helps at once
        geoms = [self._geometry(q) for q in queries]
        results: list[Prediction | None] = [None] * len(queries)
        for chunk in shape_batches(geoms, self.batch_size):
            batch = self._predict_batch([queries[i] for i in chunk], [geoms[i] for i in chunk])
            for i, p in zip(chunk, batch, strict=True):
                results[i] = p
        return [r for r in results if r is not None]

    def _predict_batch(self, images: list[np.ndarray], geoms: list[Geometry]) -> list[Prediction]:
        pix = torch.stack([image_to_tensor(img, g) for img, g in zip(images, geoms, strict=True)])
        q_feats = self.encode(pix)
        s_feats, s_masks = self._support  # type: ignore[misc]
        b = pix.shape[0]
        s_feats_b = [f.expand(b, *f.shape[1:]) for f in s_feats]
        with autocast(self.device):
            logits = self.model(q_feats, s_feats_b, s_masks.expand(b, *s_masks.shape[1:]))
        logits = logits.float()
        out = []
        retrieved: tuple[str, ...]
        for j, g in enumerate(geoms):
            logit, retrieved = logits[j], ()
            if self.uses_memory:
                logit, retrieved = self._with_memory(logit, q_feats, j, images[j], g)
            prob = logits_to_image(logit, g).cpu().numpy().astype(np.float32)
            conf = mask_confidence(prob, threshold=self.threshold)
            out.append(Prediction(prob > self.threshold, prob, conf, retrieved))
        return out

    def _with_memory(
        self, logit: Tensor, q_feats: list[Tensor], j: int, image: np.ndarray, geom: Geometry
    ) -> tuple[Tensor, tuple[str, ...]]:
        """Query ``j``'s (1, h', w') logits mixed with the memory vote (see :class:`MemoryMode`);
        the vote runs on the CPU, where the memory lives."""
        assert self.memory is not None and self.class_name is not None and self._support
        if self._support_keys is None:
            s_feats, s_masks = self._support
            self._support_keys = support_keys(s_feats[self._memory_layer][0].cpu(),
                                              s_masks[0].cpu())  # fmt: skip
        exclude = self._support_hashes | {image_hash(image)}
        query = q_feats[self._memory_layer][j].cpu()
        mode = self.memory_mode
        vote, hashes = memory_vote(
            query, geom, self._support_keys, self.memory, self.class_name, mode, exclude
        )
        if vote is None:
            return logit, ()
        return mix_vote(logit, vote, mode.weight), tuple(hashes)


def load_predictor(
    model_spec: str = "prototype",
    *,
    backbone: str | None = None,
    layers: Sequence[int] | None = None,
    image_size: int | None = None,
    threshold: float | None = None,
    memory: str | Path | SupportMemory | None = None,
    memory_mode: MemoryMode | None = None,
    device: str | torch.device | None = None,
) -> FewShotPredictor:
    """Build a predictor from a model spec.

    Args:
        model_spec: ``prototype`` or ``knn`` (training-free), a checkpoint directory, or a
            ``scheme:/...`` spec such as ``models:/dinoseg-segmenter@champion`` handed to a
            resolver plug-in (:func:`dinoseg.modelspec.resolve_model_spec`).
        backbone: override of the backbone spec (default: the checkpoint's, else
            ``packaged:dinov2-s``).
        memory: a support memory (or its directory) to attach (:meth:`attach_memory`).
        memory_mode: how to use it (default :class:`MemoryMode`).
        device: where it runs (``auto`` | ``cpu`` | ``cuda[:N]`` | ``mps``; ``None`` = the
            CPU). The weights are read on the CPU and moved there once.
    """
    predictor = _load_model(model_spec, backbone, layers, image_size, threshold, device)
    if memory is not None:
        from dinoseg.memory.store import SupportMemory

        mem = memory if isinstance(memory, SupportMemory) else SupportMemory.open(memory)
        predictor.attach_memory(mem, memory_mode)
    return predictor


def _load_model(
    model_spec: str,
    backbone: str | None,
    layers: Sequence[int] | None,
    image_size: int | None,
    threshold: float | None,
    device: str | torch.device | None = None,
) -> FewShotPredictor:
    spec = parse_model_spec(model_spec)
    if spec.kind in ("prototype", "knn"):
        from dinoseg.models.build import build_segmenter

        bb = load_backbone(backbone or DEFAULT_BACKBONE, layers=layers)
        return FewShotPredictor(
            build_segmenter(spec.kind),
            bb,
            image_size=image_size or DEFAULT_IMAGE_SIZE,
            threshold=threshold or 0.5,
            model_id=spec.kind,
            device=device,
        )
    model_id: str | None = None
    model_spec = spec.text
    if spec.is_registry:
        model_spec, model_id = resolve_model_spec(spec.text)
    if not Path(model_spec).is_dir():
        raise InputError(f"{model_spec}: no such checkpoint directory (or use 'prototype')")
    from dinoseg.backbone.onnxrt import OnnxBackbone
    from dinoseg.checkpoint import load_checkpoint

    model, cfg = load_checkpoint(model_spec)
    bb = load_backbone(backbone or cfg.backbone, layers=layers or cfg.layers)
    if isinstance(bb, OnnxBackbone):  # an export of the backbone the model was trained on?
        bb.check_source(cfg.backbone)
    return FewShotPredictor(
        model,
        bb,
        image_size=image_size or cfg.image_size,
        threshold=threshold or cfg.threshold,
        model_id=model_id or cfg.version or Path(model_spec).name,
        device=device,
    )

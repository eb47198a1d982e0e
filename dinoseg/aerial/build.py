"""The one place aerial methods are built from a config (a registry of builders).

``build_method(cfg, supports, class_names)`` loads what the config names (few-shot model and
backbone through :func:`dinoseg.predictor.load_predictor`, DINOv2, SAM, SegFormer, a trained
head through :func:`dinoseg.aerial.train.load_aerial_head`); the
``backbone`` / ``sam`` / ``segformer_model`` arguments replace them (tests, long-lived
services).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from dinoseg.aerial.config import AerialConfig
from dinoseg.aerial.features import Supports, TileEncoder
from dinoseg.aerial.methods.base import AerialMethod
from dinoseg.backbone import DEFAULT_BACKBONE, DinoBackbone, load_backbone
from dinoseg.io import InputError

#: methods that name the classes by annotated tiles (supports): they cannot run without one
NEEDS_SUPPORTS = ("fewshot", "sam-match")
#: methods that read annotated tiles when given (k-means names its clusters by them)
USES_SUPPORTS = (*NEEDS_SUPPORTS, "kmeans")


def check_supports(method: str, count: int,
                   what: str = "annotated tile (an image and its class-index mask)") -> None:
    """:class:`InputError` when ``method`` needs annotated tiles and ``count`` is 0; the
    message names the methods that need none (``what``: how the caller's user gives one)."""
    if count == 0 and method in NEEDS_SUPPORTS:
        raise InputError(f"{method} needs at least one {what}; the methods head (a trained "
                         "head) and kmeans (clusters left unnamed) need none")


@dataclass
class Parts:
    """What a builder gets: the config, the supports, the class names and given models."""

    cfg: AerialConfig
    supports: Supports | None
    class_names: list[str]
    backbone: DinoBackbone | None = None
    sam: Any = None
    segformer_model: Any = None

    def dino(self) -> TileEncoder:
        """The DINOv2 of k-means / sam-match (block ``feature_layer``) at the tiles' scale."""
        backbone = self.backbone
        if backbone is None:
            try:
                backbone = load_backbone(
                    self.cfg.backbone or DEFAULT_BACKBONE, layers=(self.cfg.feature_layer,)
                )
            except ValueError as e:
                raise InputError(str(e)) from e
        return TileEncoder(backbone, scale=self.cfg.scale, device=self.cfg.device)

    def need_supports(self, method: str) -> Supports:
        """The supports, or :func:`check_supports`' error when there are none."""
        if self.supports is not None and self.supports.images:
            return self.supports
        check_supports(method, 0)
        raise InputError(f"{method} needs at least one annotated tile")  # not in NEEDS_SUPPORTS


def _fewshot(p: Parts) -> AerialMethod:
    from dinoseg.aerial.methods.fewshot import FewShotMethod

    supports = p.need_supports("fewshot")
    if p.backbone is None:
        from dinoseg.predictor import load_predictor

        predictor = load_predictor(p.cfg.model, backbone=p.cfg.backbone or None)
        model, backbone = predictor.model, predictor.backbone
    elif p.cfg.model == "prototype":
        from dinoseg.models.prototype import PrototypeBaseline

        model, backbone = PrototypeBaseline(), p.backbone
    else:
        from dinoseg.checkpoint import load_checkpoint

        model, backbone = load_checkpoint(p.cfg.model)[0], p.backbone
    return FewShotMethod(
        model, TileEncoder(backbone, scale=p.cfg.scale, device=p.cfg.device), supports,
        unknown_threshold=p.cfg.unknown_threshold, tiles=p.cfg.tiles,
    )


def _kmeans(p: Parts) -> AerialMethod:
    from dinoseg.aerial.methods.kmeans import KMeansMethod

    return KMeansMethod(
        p.dino(), k=p.cfg.k, supports=p.supports, fit_tiles=p.cfg.fit_tiles, seed=p.cfg.seed,
        tiles=p.cfg.tiles,
    )


def _sam_match(p: Parts) -> AerialMethod:
    from dinoseg.aerial.methods.sam_match import SamMatchMethod
    from dinoseg.aerial.sam import load_sam, mask_generator

    supports = p.need_supports("sam-match")
    cfg = p.cfg
    generator = mask_generator(
        p.sam if p.sam is not None else load_sam(cfg.sam_model, cfg.sam_checkpoint or None),
        prompts=cfg.sam_prompts, points_per_side=cfg.points_per_side,
        pred_iou_thresh=cfg.pred_iou_thresh, stability_score_thresh=cfg.stability_thresh,
    )
    return SamMatchMethod(p.dino(), generator, supports, tiles=cfg.tiles)


def _segformer(p: Parts) -> AerialMethod:
    from dinoseg.aerial.methods.segformer import SegformerMethod, load_segformer

    model = p.segformer_model if p.segformer_model is not None else load_segformer(
        p.cfg.segformer
    )
    return SegformerMethod(model, p.class_names, scale=p.cfg.scale, tiles=p.cfg.tiles)


def head_spec(cfg: AerialConfig) -> str:
    """The head model of method ``head``: ``model``, or ``head_model`` when ``model`` is the
    few-shot default (``prototype`` / ``knn``)."""
    from dinoseg.modelspec import parse_model_spec

    spec = parse_model_spec(cfg.model)
    if spec.kind in ("prototype", "knn"):
        spec = parse_model_spec(cfg.head_model)
    if spec.kind in ("prototype", "knn"):
        raise InputError("--method head needs --model: a head trained by `dinoseg aerial train` "
                         "(a checkpoint directory or models:/NAME@ALIAS)")
    return spec.text


def head_path(cfg: AerialConfig) -> str:
    """The checkpoint folder of :func:`head_spec` (a registry spec resolved through its
    plug-in, which downloads the version once); :class:`InputError` when it cannot be."""
    from dinoseg.modelspec import parse_model_spec, resolve_model_spec

    spec = parse_model_spec(head_spec(cfg))
    return resolve_model_spec(spec.text)[0] if spec.is_registry else spec.text


def _head(p: Parts) -> AerialMethod:
    from dinoseg.aerial.methods.head import HeadMethod
    from dinoseg.aerial.pixels import load_pixel_head
    from dinoseg.aerial.train import load_aerial_head

    path = head_path(p.cfg)
    head, backbone, aerial = load_aerial_head(path, p.backbone)
    scale = p.cfg.scale if p.cfg.image_size else float(aerial.get("scale", 1.0))
    cache = None
    if p.cfg.feature_cache:
        from dinoseg.feature_cache import FeatureCache

        cache = FeatureCache(max_bytes=0, disk_dir=p.cfg.feature_cache)
    encoder = TileEncoder(backbone, scale=scale, cache=cache, device=p.cfg.device)
    return HeadMethod(head, encoder, tiles=p.cfg.tiles, views=p.cfg.head_views,
                      scales=p.cfg.head_scales, adapt=p.cfg.adapt_settings,
                      bias=p.cfg.class_bias, pixel=load_pixel_head(path),
                      pixel_weight=p.cfg.head_pixel_weight)  # fmt: skip


METHOD_BUILDERS: Mapping[str, Callable[[Parts], AerialMethod]] = MappingProxyType(
    {"fewshot": _fewshot, "kmeans": _kmeans, "sam-match": _sam_match, "segformer": _segformer,
     "head": _head}
)


def check_method(name: str) -> None:
    """:class:`InputError` unless ``name`` is a registered method."""
    if name not in METHOD_BUILDERS:
        raise InputError(f"unknown method {name!r}; use one of {', '.join(METHOD_BUILDERS)}")


def build_method(
    cfg: AerialConfig,
    supports: Supports | None,
    class_names: list[str],
    *,
    backbone: DinoBackbone | None = None,
    sam: Any = None,
    segformer_model: Any = None,
) -> AerialMethod:
    """The method ``cfg.method`` names (see the module docstring)."""
    check_method(cfg.method)
    cfg.check()
    parts = Parts(cfg, supports, list(class_names), backbone, sam, segformer_model)
    return METHOD_BUILDERS[cfg.method](parts)

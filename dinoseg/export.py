"""Export the frozen encoder to ONNX (any input size), verified against torch.

:func:`export_backbone` writes ``backbone.onnx`` — the blocks a predictor uses, each returned
as (B, C, H/p, W/p) after the final LayerNorm, exactly :meth:`DinoBackbone.forward` on inputs
whose H and W are multiples of the patch size — with dynamic batch, height and width; with
``int8`` also ``backbone.int8.onnx`` (ONNX Runtime dynamic quantisation: int8 weights, uint8
activations quantised per call); and ``dinoseg_export.json`` (see
:mod:`dinoseg.backbone.onnxrt`, which runs them). Each file is checked against the torch
backbone on a random input of another size than the one traced, and the largest absolute
difference is recorded. The few-shot model (prototypes, FS-DINO's head) stays in torch: it is a
small share of a query, and the TorchScript exporter cannot give it dynamic sizes (adaptive
pooling of the support masks needs a constant output size; README, "A faster CPU path").
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from dinoseg.backbone.encoder import DinoBackbone, weights_digest
from dinoseg.backbone.onnxrt import (
    EXPORT_FORMAT,
    FP32_NAME,
    INPUT_NAME,
    INT8_NAME,
    META_NAME,
    OnnxBackbone,
    dinoseg_version,
    file_sha256,
    output_name,
)
from dinoseg.io import InputError

DEFAULT_OPSET = 17
#: (H, W) traced; a multiple of 14 (any size runs afterwards).
DEFAULT_TRACE_SIZE = (224, 224)
#: (H, W) of the check against torch: another size than the traced one (448x336 grid 24x32).
DEFAULT_VERIFY_SIZE = (336, 448)
#: Largest absolute difference allowed between the fp32 graph and torch.
FP32_ATOL = 1e-3


class ExportError(RuntimeError):
    """The exported graph does not reproduce the torch backbone."""


@dataclass
class ExportResult:
    """What :func:`export_backbone` wrote: file name -> {sha256, precision, max_abs_diff,
    mean_abs_diff} and the metadata path."""

    out_dir: Path
    files: dict[str, dict[str, Any]]
    metadata: Path


class _LayerGraph(nn.Module):
    """The traced part of :class:`DinoBackbone`: (B, 3, H, W) with H, W multiples of the patch
    size -> a tuple of (B, C, H/p, W/p), one per layer."""

    def __init__(self, backbone: DinoBackbone):
        super().__init__()
        self.backbone = backbone

    def forward(self, pixel_values: Tensor) -> tuple[Tensor, ...]:
        bb = self.backbone
        found = bb._blocks(pixel_values)
        b, _, h, w = pixel_values.shape
        gh, gw = h // bb.patch_size, w // bb.patch_size
        outs = []
        for layer in bb.layers:
            tokens = bb.model.layernorm(found[layer]) if bb.norm else found[layer]  # type: ignore[operator]
            patches = tokens[:, bb.num_prefix_tokens :, :]
            outs.append(patches.transpose(1, 2).reshape(b, bb.embed_dim, gh, gw))
        return tuple(outs)


def _check_size(size: tuple[int, int], p: int, what: str) -> None:
    if len(size) != 2 or min(size) < p or any(s % p for s in size):
        raise InputError(f"{what} {size}: give height and width as multiples of {p} px")


def _trace(backbone: DinoBackbone, path: Path, size: tuple[int, int], opset: int) -> None:
    names = [output_name(layer) for layer in backbone.layers]
    axes = {INPUT_NAME: {0: "batch", 2: "height", 3: "width"}}
    axes.update({n: {0: "batch", 2: "grid_h", 3: "grid_w"} for n in names})
    x = torch.zeros(1, 3, *size)
    graph = _LayerGraph(backbone).eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings on the patch-size checks
        torch.onnx.export(graph, (x,), str(path), dynamo=False, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=names, dynamic_axes=axes,
                          do_constant_folding=True)  # fmt: skip


def _quantize(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=False)


def compare(backbone: DinoBackbone, onnx_model: OnnxBackbone, size: tuple[int, int],
            seed: int = 0) -> tuple[float, float]:  # fmt: skip
    """Max and mean absolute difference between the torch backbone and the ONNX one on a
    random (2, 3, H, W) input (every layer)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, *size, generator=gen)
    ref, got = backbone(x), onnx_model(x)
    diffs = [(r.cpu() - g).abs() for r, g in zip(ref, got, strict=True)]
    return max(float(d.max()) for d in diffs), float(np.mean([float(d.mean()) for d in diffs]))


def _metadata(backbone: DinoBackbone, opset: int, trace_size: tuple[int, int]) -> dict[str, Any]:
    """``dinoseg_export.json`` before the files are written (``files`` empty)."""
    return {
        "format": EXPORT_FORMAT, "dinoseg_version": dinoseg_version(), "opset": opset,
        "torch_version": torch.__version__, "trace_size": list(trace_size),
        "backbone": {
            "spec": backbone.spec, "weights_digest": weights_digest(backbone),
            "layers": list(backbone.layers), "norm": backbone.norm,
            "patch_size": backbone.patch_size, "embed_dim": backbone.embed_dim,
            "depth": backbone.depth, "num_prefix_tokens": backbone.num_prefix_tokens,
        },
        "input": {"name": INPUT_NAME, "shape": ["batch", 3, "height", "width"]},
        "files": {},
    }  # fmt: skip


def _verify(backbone: DinoBackbone, out: Path, names: list[str], meta: dict[str, Any],
            verify_size: tuple[int, int]) -> None:  # fmt: skip
    """Compare each written file with torch on a (2, 3, H, W) input of ``verify_size``; record
    the differences in ``meta["files"]``. The fp32 graph off by more than :data:`FP32_ATOL`
    removes the metadata file and raises :class:`ExportError`."""
    for name in names:
        model = OnnxBackbone(out / name, threads=torch.get_num_threads())
        worst, mean = compare(backbone, model, verify_size)
        meta["files"][name].update(verify_size=list(verify_size), max_abs_diff=worst,
                                   mean_abs_diff=mean)  # fmt: skip
        if name == FP32_NAME and not worst <= FP32_ATOL:
            (out / META_NAME).unlink()
            raise ExportError(f"{out / name} differs from torch by {worst:.2e} (> {FP32_ATOL:g})")


def export_backbone(
    backbone: DinoBackbone,
    out_dir: str | Path,
    *,
    int8: bool = False,
    opset: int = DEFAULT_OPSET,
    trace_size: tuple[int, int] = DEFAULT_TRACE_SIZE,
    verify_size: tuple[int, int] = DEFAULT_VERIFY_SIZE,
) -> ExportResult:
    """Export ``backbone``'s layers to ``out_dir`` and verify every file against torch.

    Args:
        backbone: a torch :class:`DinoBackbone` (on any device; traced on the CPU).
        int8: also write the dynamically quantised ``backbone.int8.onnx``.
        trace_size: (H, W) of the traced input; verify_size: (H, W) of the check (multiples
            of the patch size; they should differ so the dynamic axes are exercised).

    Raises:
        InputError: an ONNX backbone given, or sizes that are not patch multiples.
        ExportError: the fp32 graph differs from torch by more than :data:`FP32_ATOL`.
    """
    if isinstance(backbone, OnnxBackbone):
        raise InputError("the backbone is already an ONNX export: give a torch backbone spec")
    p = backbone.patch_size
    _check_size(trace_size, p, "trace size")
    _check_size(verify_size, p, "verify size")
    backbone = backbone.to("cpu")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = _metadata(backbone, opset, trace_size)
    (out / META_NAME).unlink(missing_ok=True)  # a half-written export is never loadable
    _trace(backbone, out / FP32_NAME, trace_size, opset)
    names = [FP32_NAME]
    if int8:
        _quantize(out / FP32_NAME, out / INT8_NAME)
        names.append(INT8_NAME)
    for name in names:
        meta["files"][name] = {"sha256": file_sha256(out / name),
                               "precision": "int8" if name == INT8_NAME else "fp32"}  # fmt: skip
    meta_path = out / META_NAME
    meta_path.write_text(json.dumps(meta, indent=2))
    _verify(backbone, out, names, meta, verify_size)
    meta_path.write_text(json.dumps(meta, indent=2))
    return ExportResult(out, meta["files"], meta_path)

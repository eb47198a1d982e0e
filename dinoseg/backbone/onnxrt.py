"""The frozen encoder on ONNX Runtime (CPU): ``onnx:DIR`` backbone specs.

``dinoseg export --format onnx --out DIR`` (:mod:`dinoseg.export`) writes ``DIR/backbone.onnx``
(fp32; with ``--int8`` also ``DIR/backbone.int8.onnx``, dynamic int8 quantisation) and
``DIR/dinoseg_export.json``: the dinoseg version and export format, the source backbone (spec,
weights digest, layers, final norm, patch size, width) and each file's SHA-256. The graph maps
``pixel_values`` (B, 3, H, W), H and W multiples of the patch size (any size: dynamic axes),
to one (B, C, H/p, W/p) tensor per exported layer, as :meth:`DinoBackbone.forward`.

A backbone spec ``onnx:DIR`` runs ``DIR/backbone.onnx``; ``onnx:DIR/backbone.int8.onnx`` names a
file. Loading checks the metadata and refuses, with one line, a file from another dinoseg
version or export format, a file that is not the one the metadata describes (another export,
model size or input size), layers that were not exported (any subset of them runs: only those
outputs are asked for) and another final-norm setting. It runs on the CPU only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dinoseg.backbone.encoder import DinoBackbone
from dinoseg.io import InputError

#: Bumped when the graph's inputs/outputs or the metadata change meaning.
EXPORT_FORMAT = 1
META_NAME = "dinoseg_export.json"
FP32_NAME = "backbone.onnx"
INT8_NAME = "backbone.int8.onnx"
INPUT_NAME = "pixel_values"
SPEC_PREFIX = "onnx:"
_SOURCE_KEYS = ("spec", "weights_digest", "layers", "norm", "patch_size", "embed_dim", "depth",
                "num_prefix_tokens")  # fmt: skip


def output_name(layer: int) -> str:
    """The graph output holding block ``layer``'s features."""
    return f"layer{layer}"


def file_sha256(path: Path) -> str:
    """SHA-256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def dinoseg_version() -> str:
    from dinoseg import __version__

    return str(__version__)


def resolve_onnx_path(target: str | Path) -> Path:
    """``DIR`` -> ``DIR/backbone.onnx``; a ``.onnx`` file as it is (:class:`InputError` when
    neither exists)."""
    path = Path(target).expanduser()
    if path.is_dir():
        path = path / FP32_NAME
    if not path.is_file():
        raise InputError(f"{path}: no such ONNX file; export one with "
                         "`dinoseg export --format onnx --out DIR`")  # fmt: skip
    return path


def read_metadata(onnx_path: Path) -> dict[str, Any]:
    """The export metadata beside ``onnx_path``, checked against this dinoseg and the file.

    Raises:
        InputError: no or unreadable metadata, another dinoseg version or export format, or a
            file whose SHA-256 is not the one recorded (another export, size or model).
    """
    meta_path = onnx_path.parent / META_NAME
    redo = "re-export it with `dinoseg export --format onnx`"
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise InputError(f"{onnx_path}: no {META_NAME} beside it (not a dinoseg export); "
                         f"{redo}") from None  # fmt: skip
    except (OSError, ValueError) as e:
        raise InputError(f"{meta_path}: unreadable export metadata ({e}); {redo}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("files"), dict):
        raise InputError(f"{meta_path}: not dinoseg export metadata; {redo}")
    fmt, version = meta.get("format"), meta.get("dinoseg_version")
    if fmt != EXPORT_FORMAT or version != dinoseg_version():
        raise InputError(f"{onnx_path} was exported by dinoseg {version} (export format {fmt}); "
                         f"this is dinoseg {dinoseg_version()} (format {EXPORT_FORMAT}): "
                         f"{redo}")  # fmt: skip
    src = meta.get("backbone")
    missing = [k for k in _SOURCE_KEYS if not isinstance(src, dict) or k not in src]
    if missing:
        raise InputError(f"{meta_path}: export metadata without backbone {', '.join(missing)}; "
                         f"{redo}")  # fmt: skip
    entry = meta["files"].get(onnx_path.name)
    if not isinstance(entry, dict):
        raise InputError(f"{onnx_path}: {meta_path.name} does not list this file; {redo}")
    if file_sha256(onnx_path) != entry.get("sha256"):
        raise InputError(f"{onnx_path} is not the file its {META_NAME} describes (another "
                         f"export, model or input size); {redo}")  # fmt: skip
    return meta


def _check_graph(sess: Any, path: Path, layers: Sequence[int], width: int) -> tuple[Any, Any]:
    """The graph's static height and width (``None`` = dynamic); :class:`InputError` when its
    input or outputs are not the exported backbone's."""
    inputs, outputs = sess.get_inputs(), sess.get_outputs()
    shape = inputs[0].shape if len(inputs) == 1 else []
    ok = inputs and inputs[0].name == INPUT_NAME and len(shape) == 4 and shape[1] == 3
    dims = [o.shape[1] for o in outputs]
    names = [o.name for o in outputs]
    if (
        not ok
        or names != [output_name(x) for x in layers]
        or any(isinstance(d, int) and d != width for d in dims)
    ):
        raise InputError(f"{path}: the graph is not the exported backbone its metadata "
                         "describes; re-export it with `dinoseg export --format onnx`")  # fmt: skip
    static = [d if isinstance(d, int) else None for d in shape[2:]]
    return static[0], static[1]


class OnnxBackbone(DinoBackbone):
    """:class:`DinoBackbone`'s interface over an ONNX Runtime session (CPU).

    Its identity (:func:`~dinoseg.backbone.encoder.weights_digest`, feature-cache keys) is the
    ONNX file's SHA-256, held as a buffer: features of the fp32 and int8 files, and of the
    torch backbone, are never mixed up.

    Args:
        path: the ``.onnx`` file (metadata beside it).
        layers: the layers asked for (``None`` = all exported ones); a subset of the exported
            ones, else :class:`InputError`.
        norm: the final-norm setting asked for (``None`` = the exported one).
        threads: ONNX Runtime intra-op threads (default: ``torch.get_num_threads()``).
    """

    #: ONNX Runtime's CPU provider only (``device="auto"`` picks the CPU for it)
    cpu_only = True

    def __init__(
        self,
        path: Path,
        *,
        layers: Sequence[int] | None = None,
        threads: int | None = None,
        norm: bool | None = None,
    ):
        nn.Module.__init__(self)
        import onnxruntime as ort

        meta = read_metadata(path)
        src = meta["backbone"]
        exported = tuple(int(x) for x in src["layers"])
        if layers and not set(layers) <= set(exported):
            raise InputError(f"{path} gives layers {list(exported)}, but layers {list(layers)} "
                             "were asked for: export those layers")  # fmt: skip
        if norm is not None and bool(norm) != bool(src["norm"]):
            raise InputError(f"{path} was exported with final norm {src['norm']}; {norm} was "
                             "asked for: export with that setting")  # fmt: skip
        self.layers = tuple(int(x) for x in layers) if layers else exported
        self.spec, self.path = f"{SPEC_PREFIX}{path}", path
        self.norm, self.patch_size = bool(src["norm"]), int(src["patch_size"])
        self.embed_dim, self.depth = int(src["embed_dim"]), int(src["depth"])
        self.num_prefix_tokens = int(src["num_prefix_tokens"])
        self.source_spec, self.source_digest = str(src["spec"]), str(src["weights_digest"])
        self.precision = str(meta["files"][path.name].get("precision", "fp32"))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, threads or torch.get_num_threads())
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.static_hw = _check_graph(self.session, path, exported, self.embed_dim)
        sha = bytes.fromhex(meta["files"][path.name]["sha256"])
        self.register_buffer("onnx_sha256", torch.tensor(list(sha), dtype=torch.uint8))

    @property
    def device(self) -> torch.device:
        sha: Tensor = self.onnx_sha256  # type: ignore[assignment]
        return sha.device

    def _apply(self, fn: Any, recurse: bool = True) -> OnnxBackbone:
        if fn(torch.zeros(0)).device.type != "cpu":
            raise InputError("the ONNX Runtime backbone runs on the CPU: use --device cpu, or "
                             "a torch backbone on a GPU")  # fmt: skip
        return self

    def check_source(self, spec: str) -> None:
        """:class:`InputError` unless it was exported from the backbone ``spec`` (a
        checkpoint's): a model trained on one backbone's features needs that backbone."""
        if spec != self.source_spec:
            raise InputError(f"{self.path} was exported from backbone {self.source_spec}, but "
                             f"the model was trained on {spec}: export {spec}")  # fmt: skip

    @torch.inference_mode()
    def forward(self, pixel_values: Tensor) -> list[Tensor]:
        """(B, 3, H, W) normalised -> one (B, C, H/p, W/p) float32 CPU tensor per layer (H, W
        padded up to a multiple of the patch size, as :meth:`DinoBackbone.forward`)."""
        x = pixel_values.detach().to("cpu", torch.float32)
        p = self.patch_size
        ph, pw = -x.shape[2] % p, -x.shape[3] % p
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        want = tuple(x.shape[2:])
        if any(s is not None and s != w for s, w in zip(self.static_hw, want, strict=True)):
            raise InputError(f"{self.path} takes {self.static_hw[0]}x{self.static_hw[1]} px "
                             f"input only, got {want[0]}x{want[1]}: re-export it with "
                             "`dinoseg export --format onnx` (any size)")  # fmt: skip
        names = [output_name(layer) for layer in self.layers]
        outs = self.session.run(names, {INPUT_NAME: np.ascontiguousarray(x.numpy())})
        return [torch.from_numpy(o) for o in outs]

    def extra_repr(self) -> str:
        return f"onnx={self.path}, {self.precision}, layers={self.layers}, dim={self.embed_dim}"


def load_onnx_backbone(
    target: str | Path,
    *,
    layers: Sequence[int] | None = None,
    threads: int | None = None,
    norm: bool | None = None,
) -> OnnxBackbone:
    """``onnx:DIR`` (or the part after ``onnx:``) -> :class:`OnnxBackbone`."""
    text = str(target)
    text = text[len(SPEC_PREFIX) :] if text.startswith(SPEC_PREFIX) else text
    return OnnxBackbone(resolve_onnx_path(text), layers=layers, threads=threads, norm=norm)

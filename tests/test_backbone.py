from __future__ import annotations

import json

import pytest
import torch

from dinoseg.backbone import DinoBackbone, default_layers, load_backbone
from dinoseg.backbone.packaged import (
    PackagedWeightsError,
    packaged_model_dir,
    packaged_onnx_path,
    verify_against_onnx,
)
from tests.conftest import tiny_dinov2


def test_multi_layer_shapes_and_padding(tiny_backbone):
    feats = tiny_backbone(torch.randn(2, 3, 50, 71))  # not multiples of 14 -> padded to 56x84
    assert [tuple(f.shape) for f in feats] == [(2, 32, 4, 6), (2, 32, 4, 6)]


def test_padding_equals_explicit_zero_padding(tiny_backbone):
    x = torch.randn(1, 3, 40, 40)
    padded = torch.nn.functional.pad(x, (0, 2, 0, 2))
    for a, b in zip(tiny_backbone(x), tiny_backbone(padded), strict=True):
        torch.testing.assert_close(a, b)


def test_layers_are_the_hidden_states_after_final_norm():
    model = tiny_dinov2(layers=3)
    bb = DinoBackbone(model, (2,), spec="tiny")
    x = torch.randn(1, 3, 28, 42)
    with torch.no_grad():
        ref = model(pixel_values=x, output_hidden_states=True).hidden_states[2]
    ref = model.layernorm(ref)[:, 1:, :].transpose(1, 2).reshape(1, 32, 2, 3)
    torch.testing.assert_close(bb(x)[0], ref)


def test_frozen_and_stays_in_eval(tiny_backbone):
    tiny_backbone.train()
    assert not tiny_backbone.training and not tiny_backbone.model.training
    assert not any(p.requires_grad for p in tiny_backbone.parameters())


def test_register_tokens_are_dropped():
    bb = DinoBackbone(tiny_dinov2(registers=4), (2,), spec="tiny-reg")
    assert bb.num_prefix_tokens == 5
    assert bb(torch.randn(1, 3, 28, 56))[0].shape == (1, 32, 2, 4)


def test_bad_layers_rejected():
    with pytest.raises(ValueError, match="out of range"):
        DinoBackbone(tiny_dinov2(), (3,), spec="tiny")


def test_local_directory_spec(tmp_path):
    model = tiny_dinov2(seed=3)
    model.save_pretrained(tmp_path / "ckpt")
    bb = load_backbone(str(tmp_path / "ckpt"), layers=(1, 2))
    x = torch.randn(1, 3, 28, 28)
    ref = DinoBackbone(model, (1, 2), spec="x")(x)
    for a, b in zip(bb(x), ref, strict=True):
        torch.testing.assert_close(a, b)


def test_bad_spec_message():
    with pytest.raises(ValueError, match="neither a directory"):
        load_backbone("no-such-thing")


def test_default_layers_scale_with_depth():
    assert default_layers(12) == (6, 7, 8, 9, 10)
    assert max(default_layers(24)) <= 24 and len(default_layers(24)) == 5


def test_packaged_backbone_is_verified_against_onnxruntime(packaged_backbone):
    info = json.loads((packaged_model_dir("dinov2-s") / "dinoseg_conversion.json").read_text())
    assert info["max_abs_diff_vs_onnxruntime"] < 1e-3
    assert packaged_backbone.embed_dim == 384 and packaged_backbone.patch_size == 14
    assert packaged_backbone.depth == 12


def test_verification_catches_a_wrong_conversion(packaged_backbone):
    model = packaged_backbone.model
    w = model.encoder.layer[3].mlp.fc1.weight
    saved = w.detach().clone()
    try:
        with torch.no_grad():
            w.mul_(1.05)
        with pytest.raises(PackagedWeightsError, match="differs from onnxruntime"):
            verify_against_onnx(model, packaged_onnx_path("dinov2-s"))
    finally:
        with torch.no_grad():
            w.copy_(saved)


def test_unknown_packaged_name():
    with pytest.raises(ValueError, match="unknown packaged backbone"):
        packaged_onnx_path("dinov2-x")


def test_two_processes_starting_together_convert_the_packaged_backbone_once(tmp_path):
    """Two workers on a new machine: before the lock, the second one's clean-up removed the
    first one's half-written folder (FileNotFoundError on its conversion marker)."""
    import os
    import subprocess
    import sys

    code = ("from dinoseg.backbone.packaged import packaged_model_dir as d;"
            "print((d('dinov2-s') / 'model.safetensors').stat().st_size)")  # fmt: skip
    env = {**os.environ, "DINOSEG_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]  # fmt: skip
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    assert outs[0][0] == outs[1][0] and int(outs[0][0]) > 80_000_000  # ViT-S/14 in fp32
    assert not list((tmp_path / "cache" / "backbones").glob("*.tmp"))

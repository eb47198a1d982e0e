"""Device plumbing, on the CPU (CI has no GPU): names, the clear errors, where tensors live,
the precision rule, and the flags of every command that runs a model."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dinoseg.backbone import DinoBackbone
from dinoseg.cli import main
from dinoseg.device import amp_dtype, autocast, module_device, resolve_device
from dinoseg.feature_cache import CachedPredictor, FeatureCache
from dinoseg.io import InputError
from dinoseg.models import build_segmenter
from dinoseg.predictor import FewShotPredictor
from tests.conftest import blob_image, tiny_dinov2


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine as one without CUDA, whatever it has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_auto_picks_cuda_when_present_else_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == resolve_device(None) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device(" CPU ") == torch.device("cpu")


@pytest.mark.parametrize("name", ["tpu", "gpu", "cuda:x", "cpu:1", "mps:0", ""])
def test_unknown_device_names_are_refused(name: str) -> None:
    if name == "":  # empty = auto
        assert resolve_device(name).type in ("cpu", "cuda")
        return
    with pytest.raises(InputError, match=f"unknown device '{name}': use auto, cpu, cuda"):
        resolve_device(name)


def test_cuda_asked_for_without_one_says_what_to_use(no_cuda: None) -> None:
    for name in ("cuda", "cuda:1"):
        message = rf"device {name}: CUDA is not available .*--device cpu"
        with pytest.raises(InputError, match=message):
            resolve_device(name)


def test_gpu_precision_rule_and_fp32_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    assert amp_dtype(cpu) is None and amp_dtype(cpu, training=True) is None
    assert isinstance(autocast(cpu), contextlib.nullcontext)
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert amp_dtype(cuda) is torch.bfloat16 and amp_dtype(cuda, training=True) is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert amp_dtype(cuda) is torch.float16 and amp_dtype(cuda, training=True) is None
    assert amp_dtype(torch.device("mps")) is torch.float16


def test_predictor_runs_where_asked_and_answers_on_the_cpu(tmp_path: Path) -> None:
    backbone = DinoBackbone(tiny_dinov2(), (1, 2), spec="tiny")
    p = FewShotPredictor(build_segmenter("prototype"), backbone, image_size=56, device="cpu")
    assert p.device == module_device(backbone) == module_device(p.model) == torch.device("cpu")
    img, mask = blob_image(56, 70, (10, 10, 40, 50))
    p.set_support([img], [mask])
    cached = CachedPredictor(p, FeatureCache())
    assert cached.device == p.device
    cached.set_support([img], [mask])
    for a, b in zip(p.predict([img, img]), cached.predict([img, img]), strict=True):
        assert isinstance(a.prob, np.ndarray) and a.prob.dtype == np.float32
        np.testing.assert_array_equal(a.prob, b.prob)  # batched through the cache: same answer
    # features enter the cache on the CPU, whatever device encoded them
    assert all(f.device.type == "cpu" for feats in cached.cache._memory.values() for f in feats)


def _images(tmp_path: Path) -> list[str]:
    img, mask = blob_image(56, 70, (10, 10, 40, 50))
    Image.fromarray(img).save(tmp_path / "s.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "m.png")
    return [str(tmp_path / "s.png"), str(tmp_path / "m.png")]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["predict", "--support", "{s}", "{m}", "--query", "{s}", "--out", "{out}",
          "--device", "cuda"], "device cuda: CUDA is not available"),
        (["predict", "--support", "{s}", "{m}", "--query", "{s}", "--out", "{out}",
          "--device", "tpu"], "unknown device 'tpu'"),
        (["eval", "--data", "{tmp}", "--out", "{tmp}/r.json", "--device", "cuda:0"],
         "device cuda:0: CUDA is not available"),
        (["train", "--data", "{tmp}", "--device", "cuda"], "device cuda: CUDA is not available"),
        (["distill", "--data", "{tmp}", "--out", "{out}", "--device", "cuda"],
         "device cuda: CUDA is not available"),
        (["demo", "--device", "cuda"], "device cuda: CUDA is not available"),
    ],
)  # fmt: skip
def test_every_command_refuses_a_missing_device_in_one_line(
    argv: list[str], message: str, tmp_path: Path, no_cuda: None,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setattr("dinoseg.predictor.load_backbone",
                        lambda *a, **k: DinoBackbone(tiny_dinov2(), (1, 2), spec="tiny"))
    s, m = _images(tmp_path)
    args = [a.format(s=s, m=m, out=tmp_path / "out", tmp=tmp_path) for a in argv]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_serving_device_from_params_then_the_environment(tmp_path: Path, no_cuda: None) -> None:
    from serving.config import DEVICE_ENV, ServingConfig, serving_config
    from serving.models import ModelHolder

    params = tmp_path / "params.yaml"
    params.write_text("serving:\n  device: cpu\n")
    assert serving_config(params, env={}).device == "cpu"
    assert serving_config(params, env={DEVICE_ENV: "cuda"}).device == "cuda"
    assert ServingConfig().device == "auto"
    holder = ModelHolder(serving_config(params, env={DEVICE_ENV: "cuda"}))
    with pytest.raises(InputError, match="device cuda: CUDA is not available"):
        holder.get("prototype")  # a worker on a machine without the GPU its config names


def test_demo_passes_its_device_to_every_service(tmp_path: Path) -> None:
    from infra.stack import StackConfig, stack_env

    env = {"DINOSEG_HOME": str(tmp_path), "LABEL_STUDIO_API_KEY": "k",
           "LABEL_STUDIO_PASSWORD": "p"}  # fmt: skip
    assert stack_env(StackConfig(device="cpu"), env)["DINOSEG_DEVICE"] == "cpu"
    assert "DINOSEG_DEVICE" not in stack_env(StackConfig(), env)


def test_checkpoints_are_written_from_the_cpu_and_read_onto_it(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from dinoseg.checkpoint import CheckpointConfig, load_checkpoint, save_checkpoint

    model = build_segmenter("fsdino-tiny")
    config = CheckpointConfig(arch="fsdino-tiny", backbone="tiny", layers=[1, 2], image_size=56)
    out = save_checkpoint(tmp_path / "ck", model, config)
    assert all(t.device.type == "cpu" for t in load_file(str(out / "model.safetensors")).values())
    loaded, _ = load_checkpoint(out)
    assert module_device(loaded) == torch.device("cpu")

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from dinoseg.backbone import DinoBackbone, load_backbone
from dinoseg.backbone.onnxrt import FP32_NAME, INT8_NAME, META_NAME, OnnxBackbone
from dinoseg.cli import main
from dinoseg.export import export_backbone
from dinoseg.io import InputError
from dinoseg.models.prototype import PrototypeBaseline
from dinoseg.predictor import FewShotPredictor
from tests.conftest import blob_image, tiny_dinov2


@pytest.fixture(scope="module")
def torch_bb() -> DinoBackbone:
    return DinoBackbone(tiny_dinov2(seed=3, layers=3), (1, 3), spec="tiny3")


@pytest.fixture(scope="module")
def exported(torch_bb, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx")
    result = export_backbone(torch_bb, out, int8=True, trace_size=(28, 42), verify_size=(56, 70))
    return out, result


def test_export_writes_both_files_verified_at_another_size(exported, torch_bb):
    out, result = exported
    assert set(result.files) == {FP32_NAME, INT8_NAME}
    fp32, int8 = result.files[FP32_NAME], result.files[INT8_NAME]
    assert fp32["verify_size"] == [56, 70] and 0 <= fp32["max_abs_diff"] < 1e-4
    assert 0 < int8["max_abs_diff"] < 1.0 and int8["precision"] == "int8"
    meta = json.loads((out / META_NAME).read_text())
    assert meta["backbone"]["layers"] == [1, 3] and meta["backbone"]["spec"] == "tiny3"
    assert meta["trace_size"] == [28, 42] and meta["files"][FP32_NAME]["sha256"]


def test_onnx_backbone_matches_torch_at_any_size_and_batch(exported, torch_bb):
    out, _ = exported
    onnx_bb = load_backbone(f"onnx:{out}")
    assert isinstance(onnx_bb, OnnxBackbone) and onnx_bb.layers == (1, 3)
    x = torch.randn(3, 3, 50, 99)  # neither traced size nor a multiple of 14: padded
    for ref, got in zip(torch_bb(x), onnx_bb(x), strict=True):
        assert got.shape == ref.shape == (3, 32, 4, 8)
        torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
    int8 = load_backbone(f"onnx:{out / INT8_NAME}")
    assert int8.precision == "int8" and int8(x)[0].shape == (3, 32, 4, 8)


def test_feature_identity_differs_per_file(exported, torch_bb):
    from dinoseg.backbone.encoder import weights_digest

    out, _ = exported
    onnx_bbs = [load_backbone(f"onnx:{out}"), load_backbone(f"onnx:{out / INT8_NAME}")]
    digests = {weights_digest(b) for b in (torch_bb, *onnx_bbs)}
    assert len(digests) == 3


def test_predictor_on_onnx_matches_torch(exported, torch_bb):
    out, _ = exported
    sup, sup_mask = blob_image(90, 120, (20, 30, 60, 80), seed=1)
    query, _ = blob_image(100, 130, (30, 40, 70, 100), seed=2)
    probs = []
    for bb in (torch_bb, load_backbone(f"onnx:{out}")):
        p = FewShotPredictor(PrototypeBaseline(), bb, image_size=112)
        p.set_support([sup], [sup_mask])
        probs.append(p.predict([query])[0].prob)
    assert probs[0].shape == (100, 130)
    np.testing.assert_allclose(probs[1], probs[0], atol=1e-4)


def _copy(out, tmp_path):
    d = tmp_path / "copy"
    shutil.copytree(out, d)
    return d


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda m: m.update(dinoseg_version="0.0.1"), "exported by dinoseg 0.0.1"),
        (lambda m: m.update(format=99), "export format 99"),
        (lambda m: m["files"].pop(FP32_NAME), "does not list this file"),
        (lambda m: m["backbone"].pop("layers"), "without backbone layers"),
    ],
)
def test_bad_metadata_is_one_clear_line(exported, tmp_path, edit, words):
    d = _copy(exported[0], tmp_path)
    meta = json.loads((d / META_NAME).read_text())
    edit(meta)
    (d / META_NAME).write_text(json.dumps(meta))
    with pytest.raises(InputError, match=words) as e:
        load_backbone(f"onnx:{d}")
    assert "\n" not in str(e.value) and "re-export" in str(e.value)


def test_missing_or_garbled_metadata(exported, tmp_path):
    d = _copy(exported[0], tmp_path)
    (d / META_NAME).write_text("{not json")
    with pytest.raises(InputError, match="unreadable export metadata"):
        load_backbone(f"onnx:{d}")
    (d / META_NAME).unlink()
    with pytest.raises(InputError, match="not a dinoseg export"):
        load_backbone(f"onnx:{d}")
    with pytest.raises(InputError, match="no such ONNX file"):
        load_backbone(f"onnx:{tmp_path / 'nowhere'}")


def test_file_of_another_model_size_is_refused(exported, tmp_path):
    wider = DinoBackbone(tiny_dinov2(seed=4, layers=3, hidden=48), (1, 3), spec="tiny3")
    other = tmp_path / "other"
    export_backbone(wider, other, trace_size=(28, 28), verify_size=(42, 42))
    d = _copy(exported[0], tmp_path)
    shutil.copy(other / FP32_NAME, d / FP32_NAME)  # the metadata still describes the 32-wide one
    with pytest.raises(InputError, match=r"not the file its dinoseg_export\.json describes"):
        load_backbone(f"onnx:{d}")


def test_fixed_size_graph_refuses_other_sizes(exported, torch_bb, tmp_path):
    from dinoseg.backbone.onnxrt import file_sha256
    from dinoseg.export import _LayerGraph

    d = _copy(exported[0], tmp_path)
    with torch.no_grad():  # an export without dynamic axes (as another tool might write)
        torch.onnx.export(_LayerGraph(torch_bb), (torch.zeros(1, 3, 28, 42),), str(d / FP32_NAME),
                          dynamo=False, input_names=["pixel_values"],
                          output_names=["layer1", "layer3"])  # fmt: skip
    meta = json.loads((d / META_NAME).read_text())
    meta["files"][FP32_NAME]["sha256"] = file_sha256(d / FP32_NAME)
    (d / META_NAME).write_text(json.dumps(meta))
    bb = load_backbone(f"onnx:{d}")
    assert bb(torch.randn(1, 3, 28, 42))[0].shape == (1, 32, 2, 3)
    with pytest.raises(InputError, match="takes 28x42 px input only, got 56x70"):
        bb(torch.randn(1, 3, 56, 70))


def test_layers_source_and_device_are_checked(exported, torch_bb):
    out, _ = exported
    with pytest.raises(InputError, match=r"gives layers \[1, 3\], but layers \[1, 2\]"):
        load_backbone(f"onnx:{out}", layers=(1, 2))
    with pytest.raises(InputError, match="exported with final norm True; False was asked"):
        load_backbone(f"onnx:{out}", norm=False)
    one = load_backbone(f"onnx:{out}", layers=(3,))  # a subset: only that output is asked for
    x = torch.randn(1, 3, 28, 56)
    (got,) = one(x)
    torch.testing.assert_close(got, torch_bb(x)[1], atol=1e-4, rtol=1e-4)
    bb = load_backbone(f"onnx:{out}", layers=(1, 3))
    bb.check_source("tiny3")
    with pytest.raises(InputError, match="exported from backbone tiny3, but the model was trained"):
        bb.check_source("packaged:dinov2-s")
    with pytest.raises(InputError, match="runs on the CPU"):
        bb.to("meta")


def test_cli_export_prints_the_difference_and_predicts(tmp_path, capsys):
    src = tmp_path / "tiny"
    tiny_dinov2(seed=5, layers=2).save_pretrained(src)
    out = tmp_path / "export"
    args = ["export", "--format", "onnx", "--out", str(out), "--backbone", str(src),
            "--trace-size", "28", "--verify-size", "42x56"]  # fmt: skip
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "backbone.onnx" in text and "max abs diff vs torch" in text and "2x3x42x56" in text
    diff = float(text.split("max abs diff vs torch ")[1].split()[0])
    assert diff < 1e-4
    bb = load_backbone(f"onnx:{out}")
    assert bb.source_spec == str(src) and bb.layers == (1, 2)


def test_cli_export_bad_input_exits_2(tmp_path, capsys):
    base = ["export", "--format", "onnx", "--out", str(tmp_path / "x")]
    assert main([*base, "--backbone", "onnx:somewhere"]) == 2
    assert "not an ONNX one" in capsys.readouterr().err
    assert main([*base, "--backbone", str(tmp_path), "--trace-size", "30"]) == 2
    assert "error" in capsys.readouterr().err


def test_checkpoint_runs_on_its_exported_backbone_only(tmp_path, capsys):
    from dinoseg.checkpoint import CheckpointConfig, save_checkpoint
    from dinoseg.models import build_segmenter
    from dinoseg.predictor import load_predictor

    src = tmp_path / "tiny"
    tiny_dinov2(seed=6, layers=2).save_pretrained(src)
    torch.manual_seed(0)
    cfg = CheckpointConfig(arch="fsdino-tiny", backbone=str(src), layers=[1, 2], image_size=56)
    ckpt = save_checkpoint(tmp_path / "ck", build_segmenter("fsdino-tiny"), cfg)
    out = tmp_path / "export"
    args = ["export", "--out", str(out), "--model", str(ckpt), "--trace-size", "28"]
    assert main(args) == 0 and "layers [1, 2]" in capsys.readouterr().out
    sup, sup_mask = blob_image(60, 80, (10, 20, 40, 60), seed=1)
    query, _ = blob_image(70, 90, (20, 30, 50, 70), seed=2)
    probs = []
    for backbone in (None, f"onnx:{out}"):
        p = load_predictor(str(ckpt), backbone=backbone)
        p.set_support([sup], [sup_mask])
        probs.append(p.predict([query])[0].prob)
    np.testing.assert_allclose(probs[1], probs[0], atol=1e-4)
    cfg.backbone = "packaged:dinov2-s"
    other = save_checkpoint(tmp_path / "ck2", build_segmenter("fsdino-tiny"), cfg)
    with pytest.raises(InputError, match="was exported from backbone"):
        load_predictor(str(other), backbone=f"onnx:{out}")


def test_auto_device_is_the_cpu_for_onnx(exported, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # as on a GPU machine
    p = FewShotPredictor(PrototypeBaseline(), load_backbone(f"onnx:{exported[0]}"), device="auto")
    assert p.device == torch.device("cpu")


def test_eval_with_a_memory_on_the_onnx_backbone(tmp_path, capsys, monkeypatch):
    from tests.memory.scenes import CYAN, YELLOW, thing_scenes, write_folder

    monkeypatch.setenv("DINOSEG_CACHE", str(tmp_path / "cache"))
    data = write_folder(tmp_path / "data", "train", thing_scenes(4, CYAN))
    write_folder(data, "val", thing_scenes(3, YELLOW, seed=200) + thing_scenes(2, CYAN, 400), 20)
    src = tmp_path / "tiny"
    tiny_dinov2().save_pretrained(src)
    export = tmp_path / "export"
    assert main(["export", "--out", str(export), "--backbone", str(src), "--int8"]) == 0
    out = tmp_path / "report.json"
    argv = ["eval", "--data", str(data), "--split", "val", "--classes", "thing",
            "--episodes", "4", "--backbone", f"onnx:{export / INT8_NAME}", "--image-size", "84",
            "--memory", f"{data}:train", "--memory-dir", str(tmp_path / "mem"),
            "--out", str(out), "--no-progress", "--examples", "0"]  # fmt: skip
    assert main(argv) == 0
    report = json.loads(out.read_text())
    assert list(report["models"]) == ["prototype", "prototype+memory@30"]
    assert report["settings"]["backbone"]["spec"] == f"onnx:{export / INT8_NAME}"
    assert report["models"]["prototype+memory@30"]["memory"]["images"] == 4

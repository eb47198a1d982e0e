"""dvc.yaml, params.yaml and mlops/ agree: paths, params keys, stage modules."""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml

from mlops import pipeline

ROOT = Path(__file__).resolve().parents[2]


def _load(name):
    return yaml.safe_load((ROOT / name).read_text())


def _paths(entries):
    return {next(iter(e)) if isinstance(e, dict) else e for e in entries or []}


def test_stages_match_the_code():
    stages = _load("dvc.yaml")["stages"]
    assert list(stages) == ["prepare", "teacher", "distill", "train", "evaluate", "register"]
    for name, stage in stages.items():
        assert stage["cmd"] == f"python -m mlops.{name}"
        module = importlib.import_module(f"mlops.{name}")
        assert callable(module.run)
        assert f"mlops/{name}.py" in stage["deps"]
    outs = {n: _paths(s.get("outs")) | _paths(s.get("metrics")) for n, s in stages.items()}
    assert outs["prepare"] >= {str(pipeline.TRAIN_SET), str(pipeline.EPISODES)}
    assert str(pipeline.TEACHER) in outs["teacher"]
    assert outs["distill"] == {str(pipeline.DISTILLED)}
    assert str(pipeline.MODEL) in outs["train"] and str(pipeline.EVAL) in outs["evaluate"]
    assert str(pipeline.DISTILLED) in stages["train"]["deps"]
    assert str(pipeline.MODEL) in stages["evaluate"]["deps"]


def test_every_params_key_exists():
    params = _load("params.yaml")
    for stage in _load("dvc.yaml")["stages"].values():
        for key in stage.get("params", []):
            node = params
            for part in key.split("."):
                assert part in node, f"{key} is listed in dvc.yaml but not in params.yaml"
                node = node[part]


def test_params_sections_resolve():
    from dinoseg.config import resolve
    from dinoseg.distill.loop import DistillConfig
    from dinoseg.train.loop import TrainConfig
    from mlops.evaluate import EvaluateConfig
    from mlops.prepare import PrepareConfig
    from mlops.register import RegisterConfig

    params = _load("params.yaml")
    for cls, section in ((PrepareConfig, "prepare"), (DistillConfig, "distill"),
                         (TrainConfig, "train"), (EvaluateConfig, "evaluate"),
                         (RegisterConfig, "register")):
        resolve(cls, params[section])  # unknown keys or bad values raise
    assert params["register"]["model_name"] == "dinoseg-segmenter"


def test_pipeline_run_id_follows_the_inputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(pipeline.RUN_ENV, raising=False)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "params.yaml").write_text("prepare: {base: base, labels: labels}\n")
    (tmp_path / "labels").mkdir()
    first = pipeline.pipeline_run_id()
    assert first == pipeline.pipeline_run_id() and len(first) == 12
    (tmp_path / "labels/a.png").write_bytes(b"x")
    second = pipeline.pipeline_run_id()
    assert second != first
    (tmp_path / "params.yaml").write_text("prepare: {base: base, labels: labels}\ntrain: {lr: 0}\n")
    assert pipeline.pipeline_run_id() not in (first, second)
    monkeypatch.setenv(pipeline.RUN_ENV, "given")
    assert pipeline.pipeline_run_id() == "given"

"""models:/ specs through the MLflow registry, and the stage-run tracking helpers."""

from __future__ import annotations

import socket

import pytest

from dinoseg.io import InputError
from mlops import registry, tracking
from tests.conftest import tiny_dinov2


@pytest.fixture
def store(tmp_path, monkeypatch):
    """An empty sqlite tracking store and cache in tmp_path; runs tagged with a fixed id."""
    monkeypatch.setenv("DINOSEG_HOME", str(tmp_path / "var"))
    monkeypatch.setenv("DINOSEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/var/mlflow.db")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "test")
    monkeypatch.setenv("DINOSEG_PIPELINE_RUN", "run-a")
    return tmp_path


def _checkpoint(path):
    from dinoseg.checkpoint import CheckpointConfig, arch_config, save_checkpoint
    from dinoseg.models import build_segmenter

    tiny_dinov2(layers=2).save_pretrained(path.parent / "bb")
    model = build_segmenter("fsdino-tiny", num_layers=2)
    ck = CheckpointConfig(arch="fsdino-tiny", backbone=str(path.parent / "bb"), layers=[1, 2],
                          image_size=70, arch_kwargs=arch_config(model))
    return save_checkpoint(path, model, ck, card="# tiny\n")


def test_spec_parsing():
    assert registry.parse_spec("models:/dinoseg-segmenter@champion") == (
        "dinoseg-segmenter", "champion", None)
    assert registry.parse_spec("models:/m/12") == ("m", None, "12")
    for bad in ("models:/", "models:/m@", "models:/m/v1", "runs:/abc/model"):
        with pytest.raises(InputError, match="expected models:/NAME@ALIAS"):
            registry.parse_spec(bad)


def test_no_store_means_no_champion_yet(store):
    with pytest.raises(InputError, match=r"no champion yet — run `dvc repro`"):
        registry.resolve_model_uri("models:/dinoseg-segmenter@champion")
    # the aerial head is registered by its own pipeline: the hint names it
    with pytest.raises(InputError, match=r"no champion yet — run `dvc repro aerial/dvc.yaml`"):
        registry.resolve_model_uri("models:/dinoseg-aerial-head@champion")
    assert not (store / "var/mlflow.db").exists()  # asking created nothing


def test_unreachable_server_is_a_clear_error(store, monkeypatch):
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    with pytest.raises(InputError, match="unreachable"):
        registry.resolve_model_uri("models:/dinoseg-segmenter@champion")


def test_stage_runs_register_and_resolve(store, monkeypatch):
    with tracking.stage_run("train", {"lr": 0.1, "extra": {"a": [1, 2]}}) as run:
        run.log_metrics({"loss": 1.0, "note": "text", "nan": float("nan")}, step=5)
        run.log_artifacts(_checkpoint(store / "ck"), "model")
    with pytest.raises(RuntimeError), tracking.stage_run("evaluate") as failed:
        raise RuntimeError("boom")
    client = tracking.client()
    runs = {r.info.run_name: r for r in client.search_runs(
        [tracking.experiment_id(client)], filter_string="tags.pipeline_run = 'run-a'")}
    assert set(runs) == {"pipeline run-a", "train", "evaluate"}
    parent = runs["pipeline run-a"].info.run_id
    assert runs["train"].data.tags["mlflow.parentRunId"] == parent == failed.parent_id
    assert runs["train"].data.params == {"lr": "0.1", "extra.a": "[1, 2]"}
    assert runs["train"].data.metrics == {"loss": 1.0}
    assert runs["evaluate"].info.status == "FAILED" and runs["train"].info.status == "FINISHED"

    client.create_registered_model(registry.MODEL_NAME)
    mv = client.create_model_version(registry.MODEL_NAME, run.artifact_uri("model"),
                                     run_id=run.run_id)
    with pytest.raises(InputError, match=r"not found .* no champion yet"):
        registry.resolve_model_uri("models:/dinoseg-segmenter@champion")
    client.set_registered_model_alias(registry.MODEL_NAME, registry.CHAMPION, mv.version)
    path, model_id = registry.resolve_model_uri("models:/dinoseg-segmenter@champion")
    assert model_id == "models:/dinoseg-segmenter/1"
    assert (store / "cache/models/dinoseg-segmenter").is_dir()

    import mlflow.artifacts

    def no_download(**kw):
        raise AssertionError("downloaded twice")

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", no_download)
    assert registry.resolve_model_uri("models:/dinoseg-segmenter/1")[0] == path  # cached
    with pytest.raises(InputError, match="models:/dinoseg-segmenter/9: not found"):
        registry.resolve_model_uri("models:/dinoseg-segmenter/9")

    from dinoseg.predictor import load_predictor

    assert load_predictor("models:/dinoseg-segmenter@champion").model_id == model_id


def test_champion_measured_on_other_episodes_is_evaluated_again(monkeypatch, tmp_path):
    from types import SimpleNamespace

    import mlops.evaluate
    import mlops.served_eval
    from mlops import register

    monkeypatch.chdir(tmp_path)  # section("evaluate") reads ./params.yaml
    (tmp_path / "params.yaml").write_text("evaluate: {examples: 2}\n")
    gate_info = {"served_list_sha": "s1", "guard_list_sha": "g1", "memory_version": "m1"}
    tags = {"episode_list_sha": "aaa", "val_miou": "42.5", "served_miou": "50.0",
            "guard_miou": "30.0", **gate_info}  # fmt: skip
    champion = SimpleNamespace(version="4", tags=tags)
    figures, source = register.champion_figures(None, champion, "aaa", gate_info)
    assert figures == {"miou": 42.5, "served_miou": 50.0, "guard_miou": 30.0}
    assert source == "registry tags (same episodes and memory)"

    calls = []
    monkeypatch.setattr(registry, "download", lambda client, mv: tmp_path / f"v{mv.version}")
    monkeypatch.setattr(mlops.evaluate, "predictors",
                        lambda ckpt, cfg: {"model": f"predictor of {ckpt.name}"})
    monkeypatch.setattr(mlops.evaluate, "feature_cache", lambda cfg: None)

    def run_episodes(models, cfg):
        calls.append((models, cfg.examples))
        return SimpleNamespace(report={"models": {"model": {"metrics": {"miou": 33.0}}}})

    def served_figures(bundle, head, memory, size, cache, out):
        calls.append(("served", bundle.name, head.name))
        return {"served_miou": 44.0, "guard_miou": 28.0}

    monkeypatch.setattr(mlops.evaluate, "run_episodes", run_episodes)
    monkeypatch.setattr(mlops.served_eval, "figures", served_figures)
    for other in ({**gate_info, "memory_version": "m2"}, gate_info):  # new memory; new episodes
        sha = "aaa" if other is not gate_info else "bbb"
        calls.clear()
        figures, source = register.champion_figures(None, champion, sha, other)
        assert figures == {"miou": 33.0, "served_miou": 44.0, "guard_miou": 28.0}
        assert source == "evaluated again on this run's episodes"
        assert calls == [({"model": "predictor of v4"}, 0), ("served", "v4", "head")]

"""Training the served model: fold -1 (every class trained, none held out) and a warm start
from a trained checkpoint (init_weights=all)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from dinoseg.io import InputError
from dinoseg.train.loop import TrainConfig
from dinoseg.train.run import run_training
from tests.conftest import tiny_dinov2, write_synthetic_dataset


@pytest.fixture
def cfg(tmp_path):
    torch.set_num_threads(1)
    write_synthetic_dataset(tmp_path / "data")
    tiny_dinov2(layers=2).save_pretrained(tmp_path / "bb")
    return TrainConfig(data=str(tmp_path / "data"), backbone=str(tmp_path / "bb"), layers=(1, 2),
                       arch="fsdino-tiny", image_size=70, steps=4, epoch_steps=2, batch_size=2,
                       val_episodes=4, warmup_steps=1, fold=-1, min_area=0.01, threads=1)


def test_fold_minus_one_trains_and_validates_on_every_class(cfg, tmp_path):
    out = run_training(cfg, tmp_path / "all")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["fold"] == -1 and metrics["novel_classes"] == []
    assert metrics["base_classes"] == [0, 1, 2, 3]
    assert "none (fold -1" in (out / "MODEL_CARD.md").read_text()
    fold0 = json.loads((run_training(replace(cfg, fold=0), tmp_path / "f0")
                        / "metrics.json").read_text())
    assert fold0["novel_classes"] and len(fold0["base_classes"]) < 4  # the default protocol


def test_warm_start_continues_from_every_weight_of_a_checkpoint(cfg, tmp_path):
    first = run_training(cfg, tmp_path / "first")
    zero = replace(cfg, init=str(first), init_weights="all", lr=0.0, warmup_steps=0)
    again = run_training(zero, tmp_path / "again")  # lr 0: the weights must come back unchanged
    a = load_file(str(first / "model.safetensors"))
    b = load_file(str(again / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k])
    adapter_only = run_training(replace(zero, init_weights="adapter"), tmp_path / "adapter")
    c = load_file(str(adapter_only / "model.safetensors"))
    assert all(torch.equal(a[k], c[k]) for k in a if k.startswith("adapter."))
    assert any(not torch.equal(a[k], c[k]) for k in a if not k.startswith("adapter."))
    with pytest.raises(InputError, match="init_weights"):
        run_training(replace(cfg, init=str(first), init_weights="some"), tmp_path / "bad")

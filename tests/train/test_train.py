"""Episodic training end to end on a tiny synthetic folder dataset and a tiny random DINOv2."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from dinoseg.config import parse_overrides, resolve
from dinoseg.io import InputError
from dinoseg.predictor import load_predictor
from dinoseg.train.loop import TrainConfig, lr_factor
from dinoseg.train.losses import bce_dice_loss
from dinoseg.train.run import run_training
from tests.conftest import tiny_dinov2, write_synthetic_dataset


@pytest.fixture
def setup(tmp_path):
    write_synthetic_dataset(tmp_path / "data")
    tiny_dinov2(layers=2).save_pretrained(tmp_path / "bb")
    cfg = TrainConfig(data=str(tmp_path / "data"), backbone=str(tmp_path / "bb"), layers=(1, 2),
                      arch="fsdino-tiny", image_size=70, steps=6, epoch_steps=2, batch_size=2,
                      val_episodes=4, warmup_steps=1, fold=0, min_area=0.01)
    return tmp_path, cfg


def test_training_writes_a_loadable_checkpoint(setup):
    tmp, cfg = setup
    out = run_training(cfg, tmp / "ckpt")
    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "metrics.json", "MODEL_CARD.md",
            "resolved_config.json"} <= names
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["history"]) == 3 and metrics["novel_classes"]
    assert not set(metrics["novel_classes"]) & set(metrics["base_classes"])
    pred = load_predictor(str(out))
    img = np.asarray(Image.open(tmp / "data/val/images/000.png").convert("RGB"))
    lab = np.asarray(Image.open(tmp / "data/val/masks/000.png"))
    pred.set_support([img], [lab == 1])
    (p,) = pred.predict([img])
    assert p.mask.shape == (56, 70)


class _Stop(Exception):
    pass


def _stop_at(step):
    def callback(record):
        if record["step"] >= step:
            raise _Stop

    return callback


def test_interrupted_then_resumed_equals_uninterrupted(setup):
    tmp, cfg = setup
    straight = run_training(cfg, tmp / "a")
    with pytest.raises(_Stop):
        run_training(cfg, tmp / "b", on_epoch=_stop_at(4))
    state = torch.load(tmp / "b.work" / "train_state.pt", weights_only=True)
    assert int(state["step"]) == 4 and not (tmp / "b").exists()
    resumed = run_training(cfg, tmp / "b")
    history = json.loads((resumed / "metrics.json").read_text())["history"]
    assert [h["step"] for h in history] == [2, 4, 6]
    a = load_file(str(straight / "model.safetensors"))
    b = load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k])  # same seed, same batches -> same weights


def test_training_lowers_the_loss(setup):
    tmp, cfg = setup
    out = run_training(replace(cfg, steps=40, epoch_steps=10, lr=3e-3), tmp / "long")
    hist = json.loads((out / "metrics.json").read_text())["history"]
    assert hist[-1]["loss"] < 0.8 * hist[0]["loss"]


def test_loss_ignores_invalid_pixels():
    logits = torch.zeros(1, 1, 4, 4)
    target = torch.zeros(1, 1, 4, 4)
    valid = torch.ones(1, 1, 4, 4)
    base = bce_dice_loss(logits, target, valid)
    target2 = target.clone()
    target2[..., 0, 0] = 1.0
    valid2 = valid.clone()
    valid2[..., 0, 0] = 0.0
    # what the target says on an invalid pixel does not matter
    torch.testing.assert_close(bce_dice_loss(logits, target2, valid2),
                               bce_dice_loss(logits, target, valid2))
    assert not torch.isclose(bce_dice_loss(logits, target2, valid), base)


def test_lr_schedule():
    assert lr_factor(0, 10, 100) == pytest.approx(0.1)
    assert lr_factor(10, 10, 100) == pytest.approx(1.0)
    assert lr_factor(100, 10, 100) == pytest.approx(0.0, abs=1e-9)


def test_layered_config():
    cfg = resolve(TrainConfig, {"lr": 0.1, "steps": 5}, {"steps": "7"},
                  parse_overrides(["layers=3,4", "smoke=true"]))
    assert (cfg.lr, cfg.steps, cfg.layers, cfg.smoke) == (0.1, 7, (3, 4), True)
    with pytest.raises(InputError, match="unknown config key 'lrr'"):
        resolve(TrainConfig, {"lrr": 1})
    with pytest.raises(InputError, match="expected int"):
        resolve(TrainConfig, {"steps": "many"})


@dataclass
class _Listed:
    names: tuple[str, ...] = ()
    sizes: tuple[int, ...] = (1,)
    options: dict[str, Any] = field(default_factory=dict)


def test_command_line_lists_and_mappings_in_yaml_syntax():
    over = parse_overrides(["names=[person, car]", "sizes=[8, 10]", "options={a: true, b: [4, 2]}"])
    cfg = resolve(_Listed, over)
    assert cfg.names == ("person", "car") and cfg.sizes == (8, 10)
    assert cfg.options == {"a": True, "b": [4, 2]}
    assert resolve(_Listed, {"names": "person"}).names == ("person",)
    for bad in ({"options": "[1, 2]"}, {"options": "{a: [1"}, {"sizes": "[8, ten]"}):
        with pytest.raises(InputError, match="expected"):
            resolve(_Listed, bad)


def test_params_yaml_trains_the_served_registry_entry_without_overrides():
    """The served recipe is the code default (a registry entry), so params.yaml needs no
    architecture overrides; the removed experiment keys are unknown, not silently ignored."""
    from dinoseg.config import load_params
    from dinoseg.distill.loop import DistillConfig
    from dinoseg.models import SEGMENTER_REGISTRY, SERVED_ARCH

    params = Path(__file__).resolve().parents[2] / "params.yaml"
    train = resolve(TrainConfig, load_params(params, "train"))
    distill = resolve(DistillConfig, load_params(params, "distill"))
    assert train.arch == distill.arch == SERVED_ARCH == TrainConfig().arch
    assert SERVED_ARCH in SEGMENTER_REGISTRY
    for removed in ("extra", "crop_scale", "sampling", "novel_images", "mix_data"):
        with pytest.raises(InputError, match=f"unknown config key '{removed}'"):
            resolve(TrainConfig, {removed: "1"})


def test_checkpoints_written_before_the_removed_options_still_load(tmp_path):
    """An old config.json: arch ``fsdino-tiny`` with the served overrides in ``arch_kwargs``
    and the removed options at False loads; one with an option on is a clear InputError."""
    from dinoseg.checkpoint import CheckpointConfig, arch_config, load_checkpoint, save_checkpoint
    from dinoseg.models import build_segmenter

    model = build_segmenter("fsdino-tiny", prototype_residual=True, corr_strides=(4, 2, 2))
    kwargs = {**arch_config(model), "residual_zero_head": False, "similarity_only": False}
    ck = CheckpointConfig(arch="fsdino-tiny", backbone="tiny", layers=[1, 2], image_size=70,
                          arch_kwargs=kwargs)
    loaded, config = load_checkpoint(save_checkpoint(tmp_path / "old", model, ck))
    assert config.arch == "fsdino-tiny" and loaded.config == model.config
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    ck.arch_kwargs = {**kwargs, "residual_zero_head": True}
    with pytest.raises(InputError, match="on: SegmenterConfig residual_zero_head=true was removed"):
        load_checkpoint(save_checkpoint(tmp_path / "on", model, ck))


def test_episodes_draw_every_view_from_the_injected_source(setup):
    """The default source is the bank's cached features; an injected source serves every
    drawn image (query and supports, with the episode class) and the episodes are the same."""
    from dinoseg.backbone import load_backbone
    from dinoseg.data import FolderDataset
    from dinoseg.train.bank import FeatureBank
    from dinoseg.train.episodes import TrainEpisodes

    _, cfg = setup
    bb = load_backbone(cfg.backbone, layers=cfg.layers)
    bank = FeatureBank(FolderDataset(cfg.data, "train"), bb, image_size=70, progress=False)

    class Recording:
        def __init__(self) -> None:
            self.calls: list[tuple[int, int]] = []

        def view(self, index, class_id, rng):
            self.calls.append((index, class_id))
            return bank.items[index]

    views = Recording()
    plain = TrainEpisodes(bank, [0, 1, 2, 3], min_area=0.01).sample(3, 4)
    served = TrainEpisodes(bank, [0, 1, 2, 3], min_area=0.01, views=views).sample(3, 4)
    assert len(views.calls) == 4 * 2  # 4 episodes x (query + 1 support)
    assert all(bank.items[i].counts.get(c, 0) > 0 for i, c in views.calls)
    assert sorted(c for b in served for c in b.class_ids) == sorted(c for _, c in views.calls[::2])
    for a, b in zip(plain, served, strict=True):
        assert a.class_ids == b.class_ids and torch.equal(a.target, b.target)
        assert torch.equal(a.query_feats[0], b.query_feats[0])
    cached = [bank.items[i].feats[0].float() for i, _ in views.calls[::2]]
    for q in (q for b in served for q in b.query_feats[0]):
        assert any(torch.equal(q, f) or torch.equal(q, f.flip(-1)) for f in cached)


def test_cli_config_layers_params_flags_and_overrides(tmp_path):
    from argparse import Namespace

    from dinoseg.config import resolve_cli

    (tmp_path / "p.yaml").write_text("train:\n  steps: 5\n  fold: 2\n  lr: 0.1\n")
    args = Namespace(params=tmp_path / "p.yaml", data=None, fold=1, init=None, smoke=True,
                     overrides=["lr=0.2"])
    cfg = resolve_cli(TrainConfig, args, "train", ("data", "fold", "init"))
    assert (cfg.steps, cfg.fold, cfg.lr, cfg.smoke) == (5, 1, 0.2, True)
    assert cfg.data == TrainConfig().data  # a flag not given leaves the lower layers


def test_cli_names_the_checkpoint_by_dataset_and_fold(setup, monkeypatch, capsys):
    from dinoseg.cli import main

    tmp, cfg = setup
    monkeypatch.chdir(tmp)
    rc = main(["train", "--data", cfg.data, "--fold", "1", "--smoke", f"backbone={cfg.backbone}",
               "layers=1,2", "arch=fsdino-tiny", "image_size=70", "min_area=0.01"])
    out = tmp / "runs/train/data-fold1"
    assert rc == 0 and (out / "model.safetensors").exists()
    assert json.loads((out / "metrics.json").read_text())["fold"] == 1
    assert "runs/train/data-fold1" in capsys.readouterr().out

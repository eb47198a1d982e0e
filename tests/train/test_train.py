"""Episodic training end to end on a tiny synthetic folder dataset and a tiny random DINOv2."""

from __future__ import annotations

import json
from dataclasses import replace

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


def test_command_line_lists_and_mappings_in_yaml_syntax():
    over = parse_overrides(["mix_exclude=[person, car]", "layers=[8, 10]",
                            "extra={prototype_residual: true, corr_strides: [4, 2, 2]}"])
    cfg = resolve(TrainConfig, over)
    assert cfg.mix_exclude == ("person", "car") and cfg.layers == (8, 10)
    assert cfg.extra == {"prototype_residual": True, "corr_strides": [4, 2, 2]}
    assert resolve(TrainConfig, {"mix_exclude": "person"}).mix_exclude == ("person",)
    for bad in ({"extra": "[1, 2]"}, {"extra": "{a: [1"}, {"layers": "[8, ten]"}):
        with pytest.raises(InputError, match="expected"):
            resolve(TrainConfig, bad)


def test_mixed_data_episodes_draw_from_both_sources(setup):
    from dinoseg.backbone import load_backbone
    from dinoseg.data import FolderDataset
    from dinoseg.train.bank import FeatureBank
    from dinoseg.train.episodes import TrainEpisodes

    _, cfg = setup
    bb = load_backbone(cfg.backbone, layers=cfg.layers)
    ds = FolderDataset(cfg.data, "train")
    a = FeatureBank(ds, bb, image_size=70, progress=False, limit=5)
    b = FeatureBank(ds, bb, image_size=56, progress=False)
    eps = TrainEpisodes(a, [0, 1], extra=[(b, [2, 3])], min_area=0.01)
    assert eps.classes == [(0, 0), (0, 1), (1, 2), (1, 3)]
    seen = {c for step in range(20) for batch in eps.sample(step, 4) for c in batch.class_ids}
    assert seen == {0, 1, 2, 3}
    for batch in eps.sample(0, 6):  # groups never mix feature grids
        grid = batch.query_feats[0].shape[-2:]
        assert batch.target.shape[-2:] == (grid[0] * 4, grid[1] * 4)


def test_novel_images_drop_leaves_out_every_image_showing_a_dropped_class(setup):
    from dinoseg.backbone import load_backbone
    from dinoseg.data import FolderDataset
    from dinoseg.train.bank import FeatureBank
    from dinoseg.train.episodes import TrainEpisodes

    tmp, cfg = setup
    data = tmp / "some-show-3"
    write_synthetic_dataset(data)
    for mask in sorted((data / "train/masks").glob("*.png"))[::2]:  # class 3 in half the images
        lab = np.asarray(Image.open(mask)).copy()
        lab[lab == 3] = 255
        Image.fromarray(lab).save(mask)
    bb = load_backbone(cfg.backbone, layers=cfg.layers)
    bank = FeatureBank(FolderDataset(data, "train"), bb, image_size=56, progress=False)
    keep = TrainEpisodes(bank, [0, 1, 2], min_area=0.0)
    showing_3 = set(bank.images_with_class(3, 0.0))
    assert len(showing_3) == 5 and keep.dropped_images == 0
    assert any(set(pool) & showing_3 for pool in keep.pools.values())
    drop = TrainEpisodes(bank, [0, 1, 2], min_area=0.0, drop_classes=[3])
    assert drop.dropped_images == len(showing_3)
    for key, pool in drop.pools.items():
        assert not set(pool) & showing_3
        assert set(pool) == set(keep.pools[key]) - showing_3
    for step in range(5):  # no sampled query or support shows class 3
        for batch in drop.sample(step, 4):
            assert batch.valid.sum() > 0 and all(c != 3 for c in batch.class_ids)


def test_crop_augmentation_keeps_grids_and_aligns_features_with_labels(setup):
    """crop_scale < 1: every view keeps its grid, a crop of the whole grid is the identity,
    the cropped labels are the matching window of the original, and crop-free runs draw the
    same batches as before the option existed (the rng is not touched)."""
    import numpy as np

    from dinoseg.backbone import load_backbone
    from dinoseg.data import FolderDataset
    from dinoseg.train.bank import FeatureBank
    from dinoseg.train.episodes import TrainEpisodes, _view

    _, cfg = setup
    bb = load_backbone(cfg.backbone, layers=cfg.layers)
    bank = FeatureBank(FolderDataset(cfg.data, "train"), bb, image_size=70, progress=False)
    item = bank.items[0]
    whole_f, whole_l = _view(item, False, box=np.array([1.0, 1.0, 0.3, 0.7]))
    torch.testing.assert_close(whole_f[0], item.feats[0].float())
    assert torch.equal(whole_l, item.labels.long())
    gh, gw = item.grid
    r = item.labels.shape[0] // gh
    half_f, half_l = _view(item, False, box=np.array([0.5, 0.5, 1.0, 0.0]))
    assert half_f[0].shape == item.feats[0].shape and half_l.shape == item.labels.shape
    ch, cw = round(gh * 0.5), round(gw * 0.5)
    window = item.labels[(gh - ch) * r :, : cw * r].long()
    resized = torch.nn.functional.interpolate(window[None, None].float(), size=half_l.shape,
                                              mode="nearest")[0, 0].long()
    assert torch.equal(half_l, resized)
    with pytest.raises(InputError, match="crop_scale"):
        TrainEpisodes(bank, [0, 1], crop_scale=0.0)
    plain, crops = TrainEpisodes(bank, [0, 1, 2, 3]), TrainEpisodes(bank, [0, 1, 2, 3],
                                                                    crop_scale=0.5)
    a, b = plain.sample(3, 4), crops.sample(3, 4)
    assert [x.class_ids for x in a] == [x.class_ids for x in b]  # same episodes drawn
    assert all(x.target.shape == y.target.shape for x, y in zip(a, b, strict=True))
    assert any(not torch.equal(x.target, y.target) for x, y in zip(a, b, strict=True))
    again = TrainEpisodes(bank, [0, 1, 2, 3]).sample(3, 4)
    assert all(torch.equal(x.target, y.target) for x, y in zip(a, again, strict=True))


def test_image_sampling_draws_queries_uniformly_over_images(setup):
    """sampling="image": the query is drawn over images, so an image that shows a rare class
    is not the query of every rare-class episode; class sampling draws classes uniformly."""
    from collections import Counter

    from dinoseg.backbone import load_backbone
    from dinoseg.data import FolderDataset
    from dinoseg.train.bank import FeatureBank
    from dinoseg.train.episodes import TrainEpisodes

    tmp, cfg = setup
    data = tmp / "rare-3"
    write_synthetic_dataset(data, n_train=12)
    for mask in sorted((data / "train/masks").glob("*.png"))[3:]:  # class 3 in 3 images only
        lab = np.asarray(Image.open(mask)).copy()
        lab[lab == 3] = 255
        Image.fromarray(lab).save(mask)
    bb = load_backbone(cfg.backbone, layers=cfg.layers)
    bank = FeatureBank(FolderDataset(data, "train"), bb, image_size=56, progress=False)
    counts = {}
    for sampling in ("class", "image"):
        eps = TrainEpisodes(bank, [0, 1, 2, 3], min_area=0.01, sampling=sampling)
        batches = [b for step in range(150) for b in eps.sample(step, 4)]
        counts[sampling] = Counter(c for b in batches for c in b.class_ids)
        for b in batches:  # the query shows the episode class; supports too
            assert (b.target.flatten(1).sum(1) > 0).all()
            assert (b.support_masks.flatten(2).sum(2) > 0).all()
    n = 600
    assert abs(counts["class"][3] - n / 4) < 0.06 * n  # classes uniform
    # images uniform: 3 of 12 images show class 3, each picks it with p 1/4 -> ~1/16
    assert abs(counts["image"][3] - n / 16) < 0.04 * n
    with pytest.raises(InputError, match="sampling must be one of class, image"):
        TrainEpisodes(bank, [0, 1], sampling="pixel")


def test_novel_images_must_be_a_known_choice(setup):
    tmp, cfg = setup
    with pytest.raises(InputError, match="novel_images must be one of background, drop"):
        run_training(replace(cfg, novel_images="ignore"), tmp / "x")


def test_mix_exclude_must_name_real_classes(setup):
    tmp, cfg = setup
    bad = replace(cfg, mix_data=cfg.data, mix_exclude=("unicorn",))
    with pytest.raises(InputError, match="unicorn"):
        run_training(bad, tmp / "x")


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

"""``dinoseg aerial train`` in the core: frozen / finetune / progressive heads on tiny synthetic
city tiles with a tiny random DINOv2, the head method on a photo, and every bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from aerial_helpers import NAMES, city_tile, random_head_method, write_city_folder
from PIL import Image

from dinoseg.aerial.features import TileEncoder
from dinoseg.aerial.methods.base import TileSettings
from dinoseg.aerial.methods.head import HeadMethod
from dinoseg.aerial.train import AerialTrainConfig, load_aerial_head, train_aerial_head
from dinoseg.backbone import DinoBackbone
from dinoseg.heads.finetune import TunePlan
from dinoseg.heads.split import TUNED_FILE, SplitBackbone
from dinoseg.io import InputError
from tests.conftest import tiny_dinov2

FILES = {"model.safetensors", "config.json", "metrics.json", "MODEL_CARD.md",
         "resolved_config.json", "pixel_head.safetensors", "pixel_head.json"}


@pytest.fixture
def backbone() -> DinoBackbone:
    return DinoBackbone(tiny_dinov2(), (1, 2), spec="tiny")


def _cfg(folder, **kw) -> AerialTrainConfig:
    base = {"data": (f"{folder}:train",), "blocks": (1, 2), "tile": 56, "overlap": 14,
            "steps": 30, "batch_size": 4, "eval_every": 10, "val_fraction": 0.0, "threads": 1,
            "lr": 3e-3, "pixel_steps": 100}
    return AerialTrainConfig(**{**base, **kw})  # type: ignore[arg-type]


def _accuracy(ckpt, backbone) -> float:
    head, bb, aerial = load_aerial_head(ckpt, backbone)
    method = HeadMethod(head, TileEncoder(bb, scale=aerial["scale"]), tiles=TileSettings(56, 14))
    image, truth = city_tile(70, 84, seed=1)  # a training tile
    labels = method.segment(image)
    assert labels.shape == truth.shape and method.class_names == NAMES
    return float((labels == truth).mean())


def _maps_with_its_pixel_head(ckpt, backbone) -> None:
    """The builder loads the checkpoint's pixel head when head_pixel_weight > 0 (not at 0)."""
    from dinoseg.aerial.build import build_method
    from dinoseg.aerial.config import AerialConfig

    on = build_method(AerialConfig(method="head", model=str(ckpt), tile=56, overlap=14,
                                   head_pixel_weight=1.5), None, [], backbone=backbone)
    off = build_method(AerialConfig(method="head", model=str(ckpt), tile=56, overlap=14),
                       None, [], backbone=backbone)  # fmt: skip
    assert isinstance(on, HeadMethod) and isinstance(off, HeadMethod)
    assert on.pixel is not None and off.pixel is None  # off by default
    image, truth = city_tile(70, 84, seed=1)
    assert (on.segment(image) == truth).mean() > 0.5


def test_frozen_head_trains_from_cached_features(tmp_path, backbone):
    folder = write_city_folder(tmp_path / "data")
    cache = tmp_path / "cache"
    out = train_aerial_head(_cfg(folder, feature_cache=str(cache)), tmp_path / "h",
                            backbone=backbone)
    assert {p.name for p in out.iterdir()} == FILES  # frozen: no tuned blocks
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["aerial"]["tuned_blocks"] == [] and metrics["fit_views"] == 7  # 2 + 4 + 1 tiles
    first = metrics["history"][0]["loss"]
    assert metrics["history"][-1]["loss"] < first
    card = (out / "MODEL_CARD.md").read_text()
    assert "`linear` on blocks [1, 2], `frozen`" in card and "Pixel head (colour" in card
    assert metrics["pixel_head"]["steps"] == 100
    _maps_with_its_pixel_head(out, backbone)
    assert _accuracy(out, backbone) > 0.5  # 5 classes: chance is ~0.2
    # a second run reads every view's features from the cache
    again = train_aerial_head(_cfg(folder, feature_cache=str(cache), pixel_steps=0),
                              tmp_path / "h2", backbone=backbone)  # fmt: skip
    assert {p.name for p in again.iterdir()} == FILES - {"pixel_head.json",
                                                         "pixel_head.safetensors"}
    assert "Pixel head: none" in (again / "MODEL_CARD.md").read_text()
    assert json.loads((again / "metrics.json").read_text())["cache"] == {"hits": 7, "misses": 0}


@pytest.mark.parametrize("strategy", ["finetune", "progressive"])
def test_tuned_strategies_save_and_apply_their_blocks(tmp_path, backbone, strategy):
    folder = write_city_folder(tmp_path / "data")
    before = {k: v.clone() for k, v in backbone.model.state_dict().items()}
    out = train_aerial_head(_cfg(folder, strategy=strategy, tune_blocks=1, backbone_lr=1e-2),
                            tmp_path / "h", backbone=backbone)  # fmt: skip
    assert {p.name for p in out.iterdir()} == FILES | {TUNED_FILE}
    history = json.loads((out / "metrics.json").read_text())["history"]
    if strategy == "progressive":  # head alone first, then block 2
        assert [h["training_blocks"] for h in history] == [0, 1, 1]
    for k, v in backbone.model.state_dict().items():  # the caller's backbone is untouched
        torch.testing.assert_close(v, before[k])
    _, tuned, _ = load_aerial_head(out, backbone)
    changed = {k for k, v in tuned.model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith("encoder.layer.1.") for k in changed)  # block 2 only
    assert _accuracy(out, backbone) > 0.5


def test_split_backbone_matches_the_frozen_encoder(backbone):
    pixels = torch.randn(2, 3, 56, 70)
    expected = backbone(pixels)
    for tune in (0, 1, 2):
        split = SplitBackbone(backbone, (2, 1), tune)
        feats = split.features(split.prefix(pixels), (4, 5))
        torch.testing.assert_close(feats[0], expected[1], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(feats[1], expected[0], atol=1e-5, rtol=1e-5)
    with pytest.raises(InputError, match=r"can tune 0\.\.2"):
        SplitBackbone(backbone, (1, 2), 3)


def test_progressive_schedule():
    plan = TunePlan("progressive", tune=2)
    assert [plan.training(s, 9) for s in range(9)] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert TunePlan("finetune", tune=2).training(0, 9) == 2
    assert TunePlan("frozen").blocks == 0
    with pytest.raises(InputError, match="strategy 'fast'"):
        TunePlan("fast")


def _write(folder, name, image, mask) -> None:
    Image.fromarray(image).save(folder / "train" / "images" / f"{name}.png")
    Image.fromarray(mask).save(folder / "train" / "masks" / f"{name}.png")


def _bad_mask_size(folder) -> None:
    img, lab = city_tile(56, 70, seed=5)
    _write(folder, "bad", img, lab[:, :60])


def _unknown_value(folder) -> None:
    img, lab = city_tile(56, 70, seed=5)
    lab[0, :5] = 9
    _write(folder, "bad", img, lab)


def _tiny_tile(folder) -> None:
    img, lab = city_tile(56, 70, seed=5)
    _write(folder, "bad", img[:10, :12], lab[:10, :12])


def _single_class(folder) -> None:
    for p in (folder / "train" / "masks").iterdir():
        lab = np.asarray(Image.open(p))
        Image.fromarray(np.where(lab == 255, 255, 0).astype(np.uint8)).save(p)


@pytest.mark.parametrize(("spoil", "message"), [
    (_bad_mask_size, "mask is 60x56 but its image is 70x56"),
    (_unknown_value, "values [9] are not classes of classes.json"),
    (_tiny_tile, "image is 12x10; both sides must be at least 14 px"),
    (_single_class, "the labels mark only ['land']: a head needs at least two classes"),
])  # fmt: skip
def test_bad_training_folders_are_one_clear_error(tmp_path, backbone, spoil, message):
    folder = write_city_folder(tmp_path / "data")
    spoil(folder)
    out = tmp_path / "h"
    with pytest.raises(InputError) as err:
        train_aerial_head(_cfg(folder, feature_cache=str(tmp_path / "c")), out, backbone=backbone)
    assert message in str(err.value)
    assert not out.exists() and not (tmp_path / "c").exists()  # nothing written, nothing encoded


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, backbone, monkeypatch):
    import dinoseg.heads.finetune as ft

    folder = write_city_folder(tmp_path / "data")
    real, calls = ft.soft_ce, {"n": 0}

    def nan_after_12(*args):
        calls["n"] += 1
        loss = real(*args)
        return loss * float("nan") if calls["n"] > 12 else loss

    monkeypatch.setattr(ft, "soft_ce", nan_after_12)
    out = tmp_path / "h"
    with pytest.raises(InputError, match=r"step 13: the loss is nan .*last good weights \(step 10"):
        train_aerial_head(_cfg(folder), out, backbone=backbone)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["best_step"] == 10 and "step 13" in metrics["stopped"]
    head, _, _ = load_aerial_head(out, backbone)
    assert all(torch.isfinite(p).all() for p in head.state_dict().values())
    assert "Stopped early" in (out / "MODEL_CARD.md").read_text()
    calls["n"] = 0  # diverging before any good step: nothing is written
    with pytest.raises(InputError, match="no good weights yet; nothing written"):
        train_aerial_head(_cfg(folder, eval_every=20), tmp_path / "h2", backbone=backbone)
    assert not (tmp_path / "h2").exists()


def test_bad_settings_fail_before_reading(tmp_path, backbone):
    folder = write_city_folder(tmp_path / "data")
    for kw, message in (({"augment": ("zoom",)}, "augmentations ['zoom']"),
                        ({"strategy": "finetune", "tune_blocks": 0}, "needs tune_blocks >= 1"),
                        ({"kind": "transformer"}, "head kind 'transformer'"),
                        ({"images": ("nope",)}, "no labelled image named ['nope']"),
                        ({"pixel_steps": -1}, "pixel_steps must be 0")):  # fmt: skip
        with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")):
            train_aerial_head(_cfg(folder, **kw), tmp_path / "h", backbone=backbone)
        assert not (tmp_path / "h").exists()


def test_head_views_average_turned_tiles_into_turn_equivariant_scores():
    tile = city_tile(56, 56, seed=2)[0][None]  # (1, 56, 56, 3), square
    turned = np.ascontiguousarray(np.rot90(tile, 1, axes=(1, 2)))
    mirrored = np.ascontiguousarray(tile[:, :, ::-1])
    plain = random_head_method("conv")
    one = plain.tile_scores(tile)
    assert one.shape == (1, len(NAMES), 56, 56) and one.dtype == np.float32
    np.testing.assert_allclose(one.sum(1), 1.0, atol=1e-5)
    # one view is not equivariant (the head's 3x3 conv and the patch grid see a turn) ...
    assert np.abs(np.rot90(one, 1, axes=(2, 3)) - plain.tile_scores(turned)).max() > 1e-3
    # ... all eight are: a turned or mirrored tile gets the turned / mirrored scores
    eight = random_head_method("conv", views=8)
    all_views = eight.tile_scores(tile)
    np.testing.assert_allclose(all_views.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.rot90(all_views, 1, axes=(2, 3)), eight.tile_scores(turned),
                               atol=1e-5)  # fmt: skip
    np.testing.assert_allclose(all_views[:, :, :, ::-1], eight.tile_scores(mirrored), atol=1e-5)
    # a tile that is not square is scored in the mirror views only (no quarter turns)
    wide = city_tile(42, 56, seed=4)[0][None]
    assert eight.tile_scores(wide).shape == (1, len(NAMES), 42, 56)


@pytest.mark.parametrize("views", [0, 9])
def test_head_views_out_of_range_are_refused(views):
    with pytest.raises(InputError, match="orientations per tile"):
        random_head_method(views=views)

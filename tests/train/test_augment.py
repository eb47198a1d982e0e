"""Online pixel augmentation (dinoseg.train.augment) and its use by the episode sampler."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from dinoseg.io import InputError
from dinoseg.train.augment import PixelAugmenter, jitter_colour, random_crop
from dinoseg.train.loop import TrainConfig
from dinoseg.train.run import run_training
from tests.conftest import tiny_dinov2, write_synthetic_dataset


@pytest.fixture
def parts(tmp_path):
    from dinoseg.backbone import load_backbone
    from dinoseg.data import FolderDataset
    from dinoseg.train.bank import FeatureBank

    write_synthetic_dataset(tmp_path / "data")
    tiny_dinov2(layers=2).save_pretrained(tmp_path / "bb")
    backbone = load_backbone(str(tmp_path / "bb"), layers=(1, 2))
    bank = FeatureBank(FolderDataset(tmp_path / "data", "train"), backbone, image_size=70,
                       progress=False)
    cfg = TrainConfig(data=str(tmp_path / "data"), backbone=str(tmp_path / "bb"), layers=(1, 2),
                      arch="fsdino-tiny", image_size=70, steps=2, epoch_steps=1, batch_size=2,
                      val_episodes=2, warmup_steps=1, fold=0, min_area=0.01)
    return tmp_path, backbone, bank, cfg


def test_colour_jitter_stays_in_range_and_scales_with_strength():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    weak = jitter_colour(image, np.random.default_rng(1), 1e-6)
    assert weak.dtype == np.uint8 and weak.shape == image.shape
    assert np.abs(weak.astype(int) - image).max() <= 1
    strong = [jitter_colour(image, np.random.default_rng(s), 0.5) for s in range(5)]
    assert max(np.abs(x.astype(int) - image).mean() for x in strong) > 5


def test_random_crop_keeps_the_class_or_falls_back_to_the_whole_image():
    labels = np.zeros((40, 60), np.int64)
    labels[:6, :6] = 3  # a small object in a corner
    for seed in range(30):
        rows, cols = random_crop(labels, 3, np.random.default_rng(seed), 0.5, min_pixels=10)
        crop = labels[rows, cols]
        assert (crop == 3).sum() >= 10
        assert crop.shape[0] >= 20 and crop.shape[1] >= 30
    whole = random_crop(labels, 3, np.random.default_rng(0), 0.5, min_pixels=37)
    assert whole == (slice(0, 40), slice(0, 60))  # 36 class pixels exist: impossible


def test_views_are_fresh_encoder_features_of_the_class_and_reproducible(parts):
    _, backbone, bank, _ = parts
    aug = PixelAugmenter(bank, backbone, 0.4, min_area=0.01)
    a = aug.view(0, 2, np.random.default_rng(5))
    b = aug.view(0, 2, np.random.default_rng(5))
    c = aug.view(0, 2, np.random.default_rng(6))
    gh, gw = a.grid
    assert len(a.feats) == 2 and a.feats[0].dtype == torch.float16
    assert a.labels.shape == (4 * gh, 4 * gw) and a.counts.get(2, 0) > 0
    assert all(torch.equal(x, y) for x, y in zip(a.feats, b.feats, strict=True))
    assert a.grid != c.grid or not torch.equal(a.feats[0], c.feats[0])
    assert not torch.equal(a.feats[0], bank.items[0].feats[0]) or a.grid != bank.items[0].grid
    with pytest.raises(ValueError, match="strength"):
        PixelAugmenter(bank, backbone, 1.0)


def test_augmented_episodes_keep_the_episodes_and_reproduce_per_step(parts):
    from dinoseg.train.episodes import TrainEpisodes

    _, backbone, bank, _ = parts
    aug = PixelAugmenter(bank, backbone, 0.3, min_area=0.01)
    plain = TrainEpisodes(bank, [0, 1, 2, 3], min_area=0.01)
    fresh = TrainEpisodes(bank, [0, 1, 2, 3], min_area=0.01, views=aug)
    a, b = plain.sample(4, 3), fresh.sample(4, 3)
    assert sorted(c for x in a for c in x.class_ids) == sorted(c for x in b for c in x.class_ids)
    again = TrainEpisodes(bank, [0, 1, 2, 3], min_area=0.01, views=aug).sample(4, 3)
    for x, y in zip(b, again, strict=True):  # a resumed run sees the same views
        assert torch.equal(x.target, y.target)
        assert torch.equal(x.query_feats[0], y.query_feats[0])
    for x in b:
        assert (x.target.flatten(1).sum(1) > 0).all()


def test_training_with_augmentation_runs_and_bad_strength_is_refused(parts):
    tmp, _, _, cfg = parts
    out = run_training(replace(cfg, augment=0.3), tmp / "ckpt")
    assert (out / "model.safetensors").exists()
    assert "pixel-augmented images (augment 0.3)" in (out / "MODEL_CARD.md").read_text()
    with pytest.raises(InputError, match=r"augment must be in \[0, 1\)"):
        run_training(replace(cfg, augment=1.5), tmp / "bad")

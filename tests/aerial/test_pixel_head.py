"""The pixel head: colour and texture features per pixel, its fit, its checkpoint files and its
fusion with the patch head's probabilities (``head_pixel_weight``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from aerial_helpers import NAMES, city_tile, random_head_method

from dinoseg.aerial.config import AerialConfig
from dinoseg.aerial.methods.head import HeadMethod
from dinoseg.aerial.pixels import (
    PixelFit,
    PixelSpec,
    box_mean,
    fit_pixel_head,
    fuse,
    load_pixel_head,
    pixel_features,
    save_pixel_head,
)
from dinoseg.io import InputError

FAST = PixelFit(samples=20_000, steps=150, batch=2048)


def _striped_or_flat(h: int, w: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Left half grey stripes (class 1), right half flat grey of the same mean (class 0), a
    blue band on top (class 2): only texture tells 0 from 1."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 120, np.int16)
    img[:, : w // 2] = np.where((np.arange(w // 2) // 2) % 2 == 0, 60, 180)[None, :, None]
    img[: h // 4] = (30, 60, 200)
    labels = np.zeros((h, w), np.uint8)
    labels[:, : w // 2], labels[: h // 4] = 1, 2
    img += rng.integers(-8, 9, img.shape)
    return img.clip(0, 255).astype(np.uint8), labels


def test_features_have_their_documented_shape_and_clipped_box_means():
    tiles = np.stack([city_tile(40, 50, seed=s)[0] for s in (1, 2)])
    feats = pixel_features(tiles)
    assert feats.shape == (2, PixelSpec(("a",)).in_dim, 40, 50) == (2, 27, 40, 50)
    assert torch.isfinite(feats).all()
    np.testing.assert_allclose(feats[:, :3].numpy(), tiles.transpose(0, 3, 1, 2) / 255, atol=1e-6)
    x = torch.rand(1, 1, 9, 11)
    means = box_mean(x, 2)
    assert torch.isclose(means[0, 0, 0, 0], x[0, 0, :3, :3].mean())  # corner: the clipped box
    assert torch.isclose(means[0, 0, 4, 5], x[0, 0, 2:7, 3:8].mean())


def test_the_fit_learns_colour_and_texture_and_is_seeded():
    pairs = [_striped_or_flat(48, 64, seed=s) for s in (0, 1)]
    head = fit_pixel_head(pairs, ("flat", "striped", "blue"), FAST)
    image, truth = _striped_or_flat(48, 64, seed=5)  # unseen noise
    pred = head.log_probs(image[None])[0].argmax(0).numpy()
    inner = np.zeros_like(truth, bool)
    inner[16:, 4:28], inner[16:, 36:60], inner[:8] = True, True, True  # away from the edges
    assert (pred[inner] == truth[inner]).mean() > 0.95
    whole = head(pixel_features(image[None])).log_softmax(1)  # scored in row blocks: the same
    torch.testing.assert_close(head.log_probs(image[None], rows=5), whole)
    again = fit_pixel_head(pairs, ("flat", "striped", "blue"), FAST)
    for a, b in zip(head.state_dict().values(), again.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)


def test_a_fit_without_labelled_pixels_is_refused():
    image, labels = _striped_or_flat(20, 20, seed=0)
    with pytest.raises(InputError, match="no labelled pixel"):
        fit_pixel_head([(image, np.full_like(labels, 255))], ("a", "b", "c"), FAST)
    with pytest.raises(InputError, match="steps, samples and batch >= 1"):
        fit_pixel_head([(image, labels)], ("a", "b", "c"), PixelFit(steps=0))


def test_checkpoint_files_round_trip(tmp_path):
    image, labels = city_tile(40, 40, seed=0)
    head = fit_pixel_head([(image, labels)], NAMES, FAST)
    assert load_pixel_head(tmp_path) is None  # a head trained without one
    save_pixel_head(head, tmp_path, {"steps": FAST.steps})
    loaded = load_pixel_head(tmp_path)
    assert loaded is not None and loaded.spec == head.spec
    torch.testing.assert_close(loaded.log_probs(image[None]), head.log_probs(image[None]))
    assert json.loads((tmp_path / "pixel_head.json").read_text())["fit"] == {"steps": 150}
    (tmp_path / "pixel_head.json").write_text('{"spec": {"classes": ["a"]}}')
    with pytest.raises(InputError, match="unreadable pixel head"):
        load_pixel_head(tmp_path)


def test_fusion_multiplies_the_evidence_and_weight_zero_is_the_head_alone():
    probs = torch.softmax(torch.randn(2, 5, 6, 7), 1)
    pixel = torch.log_softmax(torch.randn(2, 5, 6, 7), 1)
    torch.testing.assert_close(fuse(probs, pixel, 0.0), probs)
    both = fuse(probs, pixel, 1.5)
    torch.testing.assert_close(both.sum(1), torch.ones(2, 6, 7))
    expect = probs * pixel.exp() ** 1.5
    torch.testing.assert_close(both, expect / expect.sum(1, keepdim=True))


def test_the_head_method_fuses_its_pixel_head():
    plain = random_head_method()
    image, labels = city_tile(56, 56, seed=2)
    pixel = fit_pixel_head([(image, labels)], NAMES, FAST)
    tiles = image[None]

    def method(weight: float) -> HeadMethod:
        return HeadMethod(plain.head, plain.encoder, tiles=plain.tiles, pixel=pixel,
                          pixel_weight=weight)  # fmt: skip

    alone = plain.tile_scores(tiles)
    np.testing.assert_array_equal(method(0.0).tile_scores(tiles), alone)
    fused = method(1.0).tile_scores(tiles)
    expect = fuse(torch.from_numpy(alone), pixel.log_probs(tiles), 1.0).numpy()
    np.testing.assert_allclose(fused, expect, atol=1e-5)
    # the random patch head knows nothing; the pixel head, fitted on this tile, carries it
    assert (fused.argmax(1)[0] == labels).mean() > (alone.argmax(1)[0] == labels).mean() + 0.3
    other = fit_pixel_head([(image, labels)], tuple(reversed(NAMES)), FAST)
    with pytest.raises(InputError, match="pixel head's classes"):
        HeadMethod(plain.head, plain.encoder, pixel=other, pixel_weight=1.0)


@pytest.mark.parametrize("bad", [-0.5, float("nan"), 11.0])
def test_the_config_refuses_impossible_pixel_weights(bad):
    with pytest.raises(InputError, match="head_pixel_weight"):
        AerialConfig(head_pixel_weight=bad).check()

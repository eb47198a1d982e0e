"""The head method's test-time scales: each tile also encoded at other resolutions, the
probabilities averaged (``head_scales``)."""

from __future__ import annotations

import numpy as np
import pytest
from aerial_helpers import city_tile, random_head_method

from dinoseg.aerial.config import AerialConfig
from dinoseg.aerial.features import TileEncoder
from dinoseg.aerial.methods.head import HeadMethod
from dinoseg.config import resolve
from dinoseg.io import InputError


def _at(method: HeadMethod, *, scale: float = 1.0, scales: tuple[float, ...] = (1.0,),
        views: int = 1) -> HeadMethod:  # fmt: skip
    """The same head as ``method``, its encoder at ``scale``, scored at ``scales``."""
    encoder = TileEncoder(method.encoder.backbone, scale=scale)
    return HeadMethod(method.head, encoder, tiles=method.tiles, views=views, scales=scales)


def test_scales_average_the_probabilities_of_each_resolution():
    tiles = np.stack([city_tile(56, 56, seed=s)[0] for s in (1, 2)])
    plain = random_head_method()
    one, fine = _at(plain).tile_scores(tiles), _at(plain, scale=1.5).tile_scores(tiles)
    assert not np.allclose(one, fine, atol=1e-3)  # the finer grid scores differently
    both = _at(plain, scales=(1.0, 1.5)).tile_scores(tiles)
    assert both.shape == one.shape == (2, len(plain.class_names), 56, 56)
    np.testing.assert_allclose(both, (one + fine) / 2, atol=1e-5)
    np.testing.assert_allclose(both.sum(1), 1.0, atol=1e-5)
    # relative to the head's own scale: an encoder at 2x scored at 0.75 is the 1.5x one
    np.testing.assert_allclose(_at(plain, scale=2.0, scales=(0.75,)).tile_scores(tiles), fine,
                               atol=1e-5)  # fmt: skip
    np.testing.assert_array_equal(_at(plain, scales=(1.0,)).tile_scores(tiles), one)


def test_scales_and_views_multiply():
    tile = city_tile(56, 56, seed=3)[0][None]
    plain = random_head_method()
    parts = [_at(plain, scale=s, views=8).tile_scores(tile) for s in (1.0, 1.5)]
    both = _at(plain, scales=(1.0, 1.5), views=8).tile_scores(tile)
    np.testing.assert_allclose(both, (parts[0] + parts[1]) / 2, atol=1e-5)


def test_a_photo_is_mapped_at_several_scales_with_adaptation():
    from dinoseg.aerial.adapt import AdaptSettings

    adapt = AdaptSettings(steps=3, confidence=0.5, tiles=4)
    method = random_head_method(adapt=adapt)
    multi = HeadMethod(method.head, method.encoder, tiles=method.tiles, adapt=adapt,
                       scales=(1.0, 1.5))  # fmt: skip
    photo, _ = city_tile(70, 140, seed=4)
    method.segment(photo)
    labels = multi.segment(photo)
    assert labels.shape == photo.shape[:2] and labels.max() < len(method.class_names)
    assert multi.details() == method.details()  # adapted on the tiles as encoded at scale 1
    assert multi.details()["adaptation"]["adapted"]
    assert [b for b, _ in multi.tile_confidence] == [b for b, _ in method.tile_confidence]


def test_the_config_parses_and_checks_scales():
    cfg = resolve(AerialConfig, {}, {"head_scales": "1,1.5"})
    assert cfg.head_scales == (1.0, 1.5)
    assert AerialConfig().head_scales == (1.0,)
    for bad, why in [((), "at least one"), ((1.0, float("nan")), "between"),
                     ((1.0, 0.1), "between"), ((1.0, 2.5), "between"), ((1.0, 1.0), "twice")]:
        with pytest.raises(InputError, match=why):
            AerialConfig(head_scales=bad).check()
        with pytest.raises(InputError, match=why):
            _at(random_head_method(), scales=bad)

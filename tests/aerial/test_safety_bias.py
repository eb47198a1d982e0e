"""The head method's safety bias: log-odds added to the safety classes (roads) when a photo's
map is drawn, never to the adaptation's pseudo-labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from aerial_helpers import NAMES, city_tile, random_head_method

from dinoseg.aerial.adapt import AdaptSettings
from dinoseg.aerial.config import AerialConfig
from dinoseg.aerial.methods.head import HeadMethod
from dinoseg.io import InputError

ROAD, LAND, WATER = NAMES.index("road"), NAMES.index("land"), NAMES.index("water")


def _with_bias(method: HeadMethod, bias: dict[str, float]) -> HeadMethod:
    """The same head and encoder as ``method``, with ``bias``."""
    return HeadMethod(method.head, method.encoder, tiles=method.tiles, adapt=method.adapt,
                      bias=bias)  # fmt: skip


def test_the_bias_shifts_the_safety_class_log_odds_by_exactly_its_value():
    tile = city_tile(56, 56, seed=2)[0][None]
    plain = random_head_method()
    biased = _with_bias(plain, {"road": 2.0, "bridge": 5.0})  # bridge: not one of the head's
    p, q = plain.tile_scores(tile), biased.tile_scores(tile)
    np.testing.assert_allclose(q.sum(1), 1.0, atol=1e-5)
    shift = np.log(q[:, ROAD] / q[:, LAND]) - np.log(p[:, ROAD] / p[:, LAND])
    np.testing.assert_allclose(shift, 2.0, atol=1e-3)  # road vs land odds times e^2
    np.testing.assert_allclose(np.log(q[:, WATER] / q[:, LAND]), np.log(p[:, WATER] / p[:, LAND]),
                               atol=1e-3)  # fmt: skip  (odds between other classes unchanged)
    assert (q.argmax(1) == ROAD).sum() > (p.argmax(1) == ROAD).sum()
    none = _with_bias(plain, {"road": 0.0})
    np.testing.assert_array_equal(none.tile_scores(tile), p)


def test_the_bias_never_reaches_the_pseudo_labels():
    adapt = AdaptSettings(steps=5, confidence=0.5, tiles=4)
    plain = random_head_method(adapt=adapt)
    biased = _with_bias(plain, {"road": 3.0})
    photo, _ = city_tile(70, 140, seed=4)
    plain_map, biased_map = plain.segment(photo), biased.segment(photo)
    assert plain.details() == biased.details()  # the same pseudo-labels and loss
    for key, value in plain.active.state_dict().items():
        assert torch.equal(value, biased.active.state_dict()[key])  # the same adapted copy
    assert (biased_map == ROAD).sum() > (plain_map == ROAD).sum()  # only the map changes


def test_the_config_biases_its_safety_classes_and_refuses_a_bias_that_is_not_a_number():
    assert AerialConfig().class_bias == {"road": 1.5}  # the default: roads
    cfg = AerialConfig(head_safety_bias=0.5, safety_classes=("road", "building"))
    assert cfg.class_bias == {"road": 0.5, "building": 0.5}
    with pytest.raises(InputError, match="head_safety_bias must be a finite number"):
        AerialConfig(head_safety_bias=float("nan")).check()

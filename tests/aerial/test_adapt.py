"""Test-time self-training of an aerial head (:mod:`dinoseg.aerial.adapt`) and the head method
that adapts to each photo."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from aerial_helpers import NAMES, city_tile, random_head_method
from PIL import Image

from dinoseg.aerial.adapt import IGNORED, AdaptSettings, pseudo_labels, self_train
from dinoseg.aerial.config import AerialConfig
from dinoseg.heads.model import HeadSpec, SegHead, build_head
from dinoseg.io import InputError


def _shifted_scene(n: int = 4000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, SegHead]:
    """Two classes as (1, 2, n, 1) features, their truth, and a linear head that reads only
    the first feature, a weak cue in this scene (84 % right); the second feature separates
    the classes here but the head gives it no weight (a head trained on other scenes)."""
    g = torch.Generator().manual_seed(seed)
    truth = (torch.rand(n, generator=g) < 0.5).long()
    sign = truth * 2.0 - 1.0
    weak = sign + torch.randn(n, generator=g)
    x = torch.stack([weak, 2 * sign + 0.5 * torch.randn(n, generator=g)], 1)
    head = build_head(HeadSpec("linear", (1,), 2, ("a", "b")), seed=0)
    with torch.no_grad():
        head.out.weight.copy_(torch.tensor([[-2.0, 0.0], [2.0, 0.0]]).view(2, 2, 1, 1))
        head.out.bias.zero_()
    return x.T.reshape(1, 2, n, 1), truth, head


def _accuracy(head: SegHead, x: torch.Tensor, truth: torch.Tensor) -> float:
    with torch.no_grad():
        return float((head.classify(x).argmax(1).flatten() == truth).float().mean())


def test_self_training_learns_a_cue_of_the_photo_and_leaves_the_head_alone():
    x, truth, head = _shifted_scene()
    before = {k: v.clone() for k, v in head.state_dict().items()}
    tuned, report = self_train(head, x, AdaptSettings(steps=50, confidence=0.9, lr=0.01, rounds=1))
    assert report.adapted and tuned is not head and not tuned.training
    # it picks up the second cue from the confident patches (the head gave it no weight) ...
    w = tuned.out.weight.detach().view(2, 2)
    assert w[1, 1] - w[0, 1] > 0.2
    # ... and gets more patches right (confident ones were fitted, the rest follow)
    assert _accuracy(tuned, x, truth) > _accuracy(head, x, truth) + 0.02
    # labelling again with what it learnt takes it further (rounds)
    again, _ = self_train(head, x, AdaptSettings(steps=50, confidence=0.9, lr=0.01, rounds=3))
    assert _accuracy(again, x, truth) > _accuracy(tuned, x, truth) + 0.02
    assert all(torch.equal(v, head.state_dict()[k]) for k, v in before.items())
    assert report.patches == 4000 and sum(report.pseudo.values()) < 4000  # some not confident
    assert min(report.pseudo.values()) > 1000 and report.as_dict()["loss"] > 0


def test_pseudo_labels_keep_only_confident_patches():
    x, _, head = _shifted_scene(200)
    labels = pseudo_labels(head, x, 0.9)
    probs = head.classify(x).softmax(1).max(1).values.detach()
    assert labels.shape == (1, 200, 1)
    assert torch.equal(labels == IGNORED, probs < 0.9)


@pytest.mark.parametrize("settings",
                         [AdaptSettings(steps=0), AdaptSettings(steps=5, confidence=0.99)])
def test_nothing_to_learn_keeps_the_head(settings):
    x = torch.randn(1, 2, 30, 1)
    head = build_head(HeadSpec("linear", (1,), 2, ("a", "b")), seed=0)
    with torch.no_grad():
        head.out.weight.zero_()  # 0.5 / 0.5 everywhere: no patch reaches 0.99
    tuned, report = self_train(head, x, settings)
    assert tuned is head and not report.adapted
    assert report.as_dict()["loss"] is None  # JSON-safe (no NaN)


@pytest.mark.parametrize(("kw", "message"), [
    ({"steps": -1}, "head_adapt_steps must be >= 0"),
    ({"tiles": 0}, "head_adapt_tiles and head_adapt_rounds >= 1"),
    ({"rounds": 0}, "head_adapt_tiles and head_adapt_rounds >= 1"),
    ({"confidence": 1.0}, "head_adapt_confidence 1.0"),
    ({"confidence": 0.0}, "head_adapt_confidence 0.0"),
    ({"lr": float("nan")}, "head_adapt_lr must be positive"),
])
def test_bad_settings_are_one_clear_error(kw, message):
    with pytest.raises(InputError, match=message):
        AdaptSettings(**kw)
    fields = {f"head_adapt_{k}": v for k, v in kw.items()}
    with pytest.raises(InputError, match=message):
        AerialConfig(**fields).check()  # type: ignore[arg-type]


def test_the_config_sets_every_adaptation_setting():
    cfg = AerialConfig(head_adapt_steps=5, head_adapt_confidence=0.6, head_adapt_tiles=4,
                       head_adapt_rounds=2, head_adapt_lr=0.02, seed=7)
    assert cfg.adapt_settings == AdaptSettings(5, 0.6, 4, 2, 0.02, seed=7)


def test_the_head_method_adapts_to_each_photo_from_the_trained_head():
    method = random_head_method(adapt=AdaptSettings(steps=10, confidence=0.5, tiles=3, lr=0.05))
    trained = {k: v.clone() for k, v in method.head.state_dict().items()}
    photo, _ = city_tile(70, 140, seed=4)  # 2 x 3 tiles of 56 px
    labels = method.segment(photo)
    first = method.active
    assert labels.shape == photo.shape[:2] and first is not method.head
    details = method.details()["adaptation"]
    assert details["adapted"] and details["patches"] == 3 * 4 * 4  # 3 tiles of 4 x 4 patches
    assert all(torch.equal(v, method.head.state_dict()[k]) for k, v in trained.items())
    assert np.array_equal(method.segment(photo), labels)  # the same photo: the same map
    method.segment(city_tile(70, 140, seed=5)[0])  # another photo: adapted afresh
    assert method.active is not first
    unadapted = random_head_method(adapt=AdaptSettings())
    unadapted.segment(photo)
    assert unadapted.active is unadapted.head and unadapted.details() == {}


def test_a_photo_sampled_whole_is_encoded_once(monkeypatch):
    method = random_head_method(adapt=AdaptSettings(steps=5, confidence=0.5, tiles=16))
    calls = []
    encode = method.encoder.encode
    monkeypatch.setattr(method.encoder, "encode", lambda t, g: calls.append(len(t)) or encode(t, g))
    photo, _ = city_tile(70, 140, seed=4)  # 6 tiles, all sampled
    labels = method.segment(photo)
    assert sum(calls) == 6 and not method._stash  # every kept tile was scored from the stash
    calls.clear()
    monkeypatch.setattr(method, "_stashed", lambda tiles: None)  # encode them again instead
    assert np.array_equal(method.segment(photo), labels) and sum(calls) == 12


def test_stats_json_says_how_the_photo_adapted(tmp_path):
    from dinoseg.aerial.pipeline import run_aerial

    method = random_head_method(adapt=AdaptSettings(steps=3, confidence=0.5, tiles=2))
    photo, _ = city_tile(70, 84, seed=6)
    Image.fromarray(photo).save(tmp_path / "photo.png")
    cfg = AerialConfig(method="head", tile=56, overlap=14, head_adapt_steps=3,
                       head_adapt_confidence=0.5, head_adapt_tiles=2)
    run_aerial(tmp_path / "photo.png", None, list(NAMES), cfg, tmp_path / "out", method=method)
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["adaptation"]["adapted"] and stats["adaptation"]["patches"] == 2 * 16
    assert set(stats["adaptation"]["pseudo_labels"]) == set(NAMES)

from __future__ import annotations

import numpy as np
import pytest

from dinoseg.io import InputError
from dinoseg.models.prototype import PrototypeBaseline
from dinoseg.predictor import FewShotPredictor
from tests.conftest import blob_image


@pytest.fixture
def predictor(tiny_backbone):
    return FewShotPredictor(PrototypeBaseline(), tiny_backbone, image_size=112, batch_size=2)


def test_outputs_at_original_resolution(predictor):
    s_img, s_mask = blob_image(90, 120, (20, 30, 60, 80))
    predictor.set_support([s_img], [s_mask])
    q1, _ = blob_image(70, 50, (10, 10, 40, 30), seed=1)
    q2, _ = blob_image(130, 97, (50, 20, 90, 60), seed=2)
    preds = predictor.predict([q1, q2])
    assert [p.mask.shape for p in preds] == [(70, 50), (130, 97)]
    for p in preds:
        assert p.prob.dtype == np.float32 and 0.0 <= p.prob.min() <= p.prob.max() <= 1.0
        assert np.array_equal(p.mask, p.prob > 0.5)
        assert 0.0 <= p.confidence <= 1.0


def test_batched_equals_one_by_one_and_is_deterministic(predictor):
    s_img, s_mask = blob_image(84, 84, (20, 20, 60, 60))
    predictor.set_support([s_img], [s_mask])
    qs = [blob_image(84, 84, (10 * i, 10, 10 * i + 30, 50), seed=i)[0] for i in range(5)]
    together = predictor.predict(qs)
    alone = [predictor.predict([q])[0] for q in qs]
    again = predictor.predict(qs)
    for a, b, c in zip(together, alone, again, strict=True):
        np.testing.assert_allclose(a.prob, b.prob, atol=1e-5)
        np.testing.assert_array_equal(a.prob, c.prob)


def test_k_shot_with_supports_of_different_sizes(predictor):
    sup = [
        blob_image(84, 84, (20, 20, 60, 60)),
        blob_image(100, 140, (10, 40, 70, 100), seed=5),
        blob_image(60, 60, (5, 5, 30, 30), seed=6),
    ]
    predictor.set_support([s[0] for s in sup], [s[1] for s in sup])
    assert predictor._support is not None and predictor._support[0][0].shape[1] == 3
    (p,) = predictor.predict([blob_image(84, 84, (30, 30, 70, 70), seed=9)[0]])
    assert p.mask.shape == (84, 84)


def test_identical_shots_match_one_shot(predictor):
    img, mask = blob_image(84, 84, (20, 20, 60, 60))
    query = blob_image(84, 84, (30, 30, 70, 70), seed=9)[0]
    predictor.set_support([img], [mask])
    one = predictor.predict([query])[0].prob
    predictor.set_support([img] * 3, [mask] * 3)
    three = predictor.predict([query])[0].prob
    np.testing.assert_allclose(one, three, atol=1e-5)


def test_bad_inputs_are_clear(predictor):
    img, mask = blob_image(84, 84, (20, 20, 60, 60))
    with pytest.raises(InputError, match="before predicting"):
        predictor.predict([img])
    with pytest.raises(InputError, match="at least one support"):
        predictor.set_support([], [])
    with pytest.raises(InputError, match="mask is"):
        predictor.set_support([img], [mask[:-1]])
    with pytest.raises(InputError, match="empty"):
        predictor.set_support([img], [np.zeros_like(mask)])
    with pytest.raises(InputError, match="2 support images but 1 masks"):
        predictor.set_support([img, img], [mask])
    predictor.set_support([img], [mask])
    with pytest.raises(InputError, match="RGB"):
        predictor.predict([img[..., 0]])
    with pytest.raises(InputError, match="threshold"):
        FewShotPredictor(PrototypeBaseline(), predictor.backbone, threshold=1.5)


def test_unknown_spec_scheme_is_a_clear_error() -> None:
    import pytest

    from dinoseg.io import InputError
    from dinoseg.modelspec import resolve_model_spec

    with pytest.raises(InputError, match="no resolver for 'nosuch:/'"):
        resolve_model_spec("nosuch:/thing@alias")


def test_model_specs_are_parsed_in_one_place() -> None:
    import pytest

    from dinoseg.io import InputError
    from dinoseg.modelspec import parse_model_spec

    assert parse_model_spec("prototype").kind == "prototype"
    champion = parse_model_spec("models:/dinoseg-segmenter@champion")
    assert champion.is_registry and champion.scheme == "models"
    assert parse_model_spec("runs/train/camvid-fold0").kind == "checkpoint"
    assert parse_model_spec("C:/weights").kind == "checkpoint"  # upper case: not a scheme
    assert parse_model_spec(" prototype ").text == "prototype"
    for bad in ("", "   ", None, 3):
        with pytest.raises(InputError, match="non-empty string"):
            parse_model_spec(bad)

"""Training views: the pipeline's tiles, and augmented views whose labels stay on their pixels."""

from __future__ import annotations

import numpy as np
import pytest
from aerial_helpers import COLOURS, city_tile

from dinoseg.aerial.tiling import plan_tiles
from dinoseg.aerial.views import AUGMENTATIONS, ViewPlan, parse_augment, training_views
from dinoseg.io import InputError


def test_plain_views_are_the_pipeline_tiles():
    image, labels = city_tile(90, 130, seed=3)
    views = training_views(image, labels, "ab" * 32, ViewPlan(tile=56, overlap=14))
    boxes = plan_tiles((90, 130), 56, 14).boxes()
    assert [n for n, _, _ in views] == [f"tile{i}" for i in range(len(boxes))]
    for (_, img, lab), (y0, x0, y1, x1) in zip(views, boxes, strict=True):
        np.testing.assert_array_equal(img, image[y0:y1, x0:x1])
        np.testing.assert_array_equal(lab, labels[y0:y1, x0:x1])


def test_augmented_views_keep_labels_on_their_pixels():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, (6, 8)).repeat(16, 0).repeat(16, 1).astype(np.uint8)  # 96x128
    image = COLOURS[labels]  # colour = class: a view is right when it still maps one to the other
    plan = ViewPlan(tile=64, overlap=16, augment=("crop", "rotate"), views=6, seed=1)
    views = training_views(image, labels, "cd" * 32, plan)
    augmented = [(img, lab) for name, img, lab in views if name.startswith("aug")]
    assert len(augmented) == 6 and len({img.tobytes() for img, _ in augmented}) == 6
    for img, lab in augmented:
        assert img.shape[:2] == lab.shape
        inside = np.ones(lab.shape, bool)  # pixels 2+ px from a class edge (bilinear blur)
        padded = np.pad(lab, 2, mode="edge")
        for dy in range(5):
            for dx in range(5):
                inside &= padded[dy : dy + lab.shape[0], dx : dx + lab.shape[1]] == lab
        assert inside.mean() > 0.3
        np.testing.assert_array_equal(img[inside], COLOURS[lab[inside]])
    again = training_views(image, labels, "cd" * 32, plan)  # seeded by (seed, image, view)
    for (_, a, _), (_, b, _) in zip(views, again, strict=True):
        np.testing.assert_array_equal(a, b)


def test_jitter_and_blur_change_pixels_not_labels():
    image, labels = city_tile(80, 80, seed=2)
    plan = ViewPlan(tile=80, overlap=16, augment=("jitter", "blur"), views=4, seed=0)
    for _, img, lab in training_views(image, labels, "ef" * 32, plan)[1:]:
        np.testing.assert_array_equal(lab, labels)  # no crop, no rotation: same window
        assert not np.array_equal(img, image)


def test_parse_and_check():
    assert parse_augment("all") == AUGMENTATIONS and parse_augment("none") == ()
    assert parse_augment("crop, blur") == ("crop", "blur")
    with pytest.raises(InputError, match="augmentations"):
        ViewPlan(augment=("zoom",)).check()
    with pytest.raises(InputError, match="strength"):
        ViewPlan(strength=1.5).check()

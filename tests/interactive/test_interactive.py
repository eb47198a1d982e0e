"""Click-to-mask core: prompts, the NoC protocol, the segmenter and the engine (tiny DINOv2)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from dinoseg.backbone import DinoBackbone
from dinoseg.interactive import Box, Click, InteractiveConfig, InteractiveEngine, check_prompts
from dinoseg.interactive.box import dino_box_mask, sam_box_mask, sam_embedding
from dinoseg.interactive.noc import (
    Target,
    brush_dab,
    brush_trace,
    click_trace,
    clicks_to_reach,
    iou,
    next_click,
)
from dinoseg.io import InputError
from tests.conftest import blob_image, tiny_dinov2

CONFIG = InteractiveConfig(image_size=112)


def square(h: int = 60, w: int = 80) -> Target:
    mask = np.zeros((h, w), bool)
    mask[10:40, 20:60] = True
    return Target(mask, np.ones((h, w), bool))


@pytest.fixture
def engine(tmp_path) -> InteractiveEngine:
    return InteractiveEngine(DinoBackbone(tiny_dinov2(), (2,), spec="tiny"), CONFIG,
                             cache_dir=tmp_path / "cache")  # fmt: skip


def test_prompts_that_cannot_be_used_are_refused() -> None:
    shape = (60, 80)
    with pytest.raises(InputError, match="outside the 80x60 image"):
        check_prompts([Click(81.0, 5.0)], None, shape)
    with pytest.raises(InputError, match="outside"):
        check_prompts([Click(float("nan"), 5.0)], None, shape)
    with pytest.raises(InputError, match="zero area"):
        check_prompts([], Box(10, 10, 10, 40), shape)
    with pytest.raises(InputError, match="outside the 80x60 image"):
        check_prompts([], Box(100, 10, 120, 40), shape)
    with pytest.raises(InputError, match="only negative"):
        check_prompts([Click(5.0, 5.0, positive=False)], None, shape)
    with pytest.raises(InputError, match="place a positive click"):
        check_prompts([], None, shape)
    _, box = check_prompts([], Box(-5, -5, 30, 90), shape)
    assert box == Box(0, 0, 30, 60)  # clipped to the image


def test_protocol_clicks_the_most_interior_point_then_the_largest_error() -> None:
    t = square()
    first, radius = next_click(np.zeros_like(t.mask), t)
    assert first.positive and radius == 15  # centre of the 30 x 40 square
    assert 34 <= first.x <= 46 and first.y == 24.5  # 15 px from the top and the bottom
    pred = t.mask.copy()
    pred[45:58, 5:75] = True  # a false-positive band larger than anything missed
    pred[10:12, 20:60] = False
    click, _ = next_click(pred, t)
    assert not click.positive and 45 <= click.y <= 58
    assert next_click(t.mask, t) is None
    ignored = Target(t.mask, ~pred | t.mask)  # the band is void: no error there
    assert next_click(pred, ignored)[0].positive


def test_noc_counts_and_the_brush_model() -> None:
    t = square()
    assert clicks_to_reach([0.5, 0.86, 0.95], 0.85) == 2
    assert clicks_to_reach([0.5, 0.6], 0.85, max_clicks=20) == 20
    big = brush_trace(t, radius=100)
    small = brush_trace(t, radius=3)
    assert clicks_to_reach(big, 0.85) < 20 == clicks_to_reach(small, 0.85)
    assert big[0] == pytest.approx(np.pi * 14.5**2 / t.mask.sum(), rel=0.05)  # inscribed
    assert all(b > a for a, b in itertools.pairwise(big))  # a dab never adds an error
    assert iou(np.zeros_like(t.mask), t) == 0.0
    # a perfect segmenter needs one click
    assert click_trace(lambda clicks: t.mask.copy(), t) == [1.0]


def test_brushing_a_pre_annotation_erases_its_false_positives_first() -> None:
    t = square()
    pre = t.mask.copy()
    pre[45:58, 5:75] = True  # a 13 x 70 false-positive band
    after, pixels = brush_dab(pre, t, radius=25)
    erased = pre & ~after
    assert not (after & ~pre).any() and erased.sum() == pixels > 0  # an eraser dab
    assert not (erased & t.mask).any() and iou(after, t) > iou(pre, t)  # never a new error
    assert brush_dab(t.mask, t, radius=25) is None  # nothing left to fix
    fixed = brush_trace(t, 25, max_dabs=40, start=pre)
    scratch = brush_trace(t, 25, max_dabs=40)
    assert clicks_to_reach(fixed, 0.8, 40) < clicks_to_reach(scratch, 0.8, 40)  # 5 vs 7 dabs


def test_one_click_finds_the_object_and_corrections_act_locally(engine) -> None:
    image, mask = blob_image(72, 96, (18, 24, 48, 72), seed=1)
    target = Target(mask, np.ones_like(mask))
    session = engine.session("blob", lambda: image)
    ious = click_trace(lambda cl: engine.segment(session, cl), target, max_clicks=6)
    assert ious[0] > 0.6 and max(ious) > 0.85
    first = next_click(np.zeros_like(mask), target)[0]
    inside = engine.segment(session, [first])
    hole = Click(first.x, first.y + 4, positive=False)
    carved = engine.segment(session, [first, hole])
    row, col = hole.pixel(mask.shape)
    assert inside[row, col] and not carved[row, col]  # the negative click's pixel flipped
    far = np.zeros_like(mask)
    far[:, :10] = True  # nothing far from the correction changed
    assert (carved[far] == inside[far]).all()


def test_results_do_not_depend_on_what_the_engine_remembers(engine, tmp_path) -> None:
    image, _ = blob_image(72, 96, (18, 24, 48, 72), seed=2)
    clicks = [Click(48.0, 33.0), Click(30.0, 20.0, positive=False), Click(60.0, 40.0)]
    session = engine.session("a", lambda: image)
    step_by_step = [engine.segment(session, clicks[: i + 1]) for i in range(3)][-1]
    fresh = InteractiveEngine(engine.backbone, CONFIG, cache_dir=tmp_path / "cache")
    again = fresh.segment(fresh.session("a", lambda: image), clicks)
    np.testing.assert_array_equal(step_by_step, again)
    assert fresh.features.stats.disk_hits == 1 and fresh.features.stats.misses == 0


def test_a_rectangle_starts_the_mask_and_clicks_correct_it(engine) -> None:
    image, mask = blob_image(72, 96, (18, 24, 48, 72), seed=3)
    session = engine.session("box", lambda: image)
    box = Box(20.0, 14.0, 76.0, 52.0)
    start = engine.segment(session, [], box)
    target = Target(mask, np.ones_like(mask))
    assert iou(start, target) > 0.6
    assert not start[:, :18].any() and not start[:12].any()  # nothing outside the box
    fixed = engine.segment(session, [Click(40.0, 30.0, positive=False)], box)
    assert not fixed[30, 40] and fixed.sum() < start.sum()


def test_box_routes_shapes(engine) -> None:
    from dinoseg.teachers import build_teacher

    image, _ = blob_image(60, 80, (15, 20, 40, 60), seed=4)
    feats = engine.session("b", lambda: image).features
    box = Box(15.0, 10.0, 65.0, 45.0)
    dino = dino_box_mask(image, feats, box)
    assert dino.shape == (60, 80) and dino.any() and not dino[:, :14].any()
    sam = build_teacher("tiny-random")
    out = sam_box_mask(sam, sam_embedding(sam, image), box, (60, 80))
    assert out.shape == (60, 80) and out.dtype == bool and not out[:, :12].any()
    both = InteractiveEngine(engine.backbone, CONFIG, sam=sam)  # a rectangle: their union
    union = both.segment(both.session("b", lambda: image), [], box)
    np.testing.assert_array_equal(union, dino | out)

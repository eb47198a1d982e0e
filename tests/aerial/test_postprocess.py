"""Shared post-processing and SAM refinement of class maps."""

from __future__ import annotations

import numpy as np

from dinoseg.aerial import refine
from dinoseg.aerial.categories import UNKNOWN
from dinoseg.aerial.postprocess import majority_smooth, postprocess, remove_small_segments
from dinoseg.aerial.reader import ArraySource
from dinoseg.aerial.refine import RefineSettings, find_regions, refine_block, refine_labels
from dinoseg.teachers import build_teacher


def _map() -> np.ndarray:
    lab = np.zeros((60, 80), np.uint8)
    lab[:, 40:] = 1
    lab[10:30, 5:25] = 2  # a 400 px building
    lab[45:47, 10:12] = 2  # a 4 px speck on class 0
    lab[50, 60] = UNKNOWN  # a 1 px unknown speck on class 1
    return lab


def test_small_segments_take_their_neighbours_label():
    lab = _map()
    remove_small_segments(lab, 10)
    assert (lab[45:47, 10:12] == 0).all() and lab[50, 60] == 1
    assert (lab[10:30, 5:25] == 2).all()


def test_block_processing_matches_whole_map_processing():
    rng = np.random.default_rng(0)
    lab = np.repeat(np.repeat(rng.integers(0, 3, (15, 20)), 4, 0), 4, 1).astype(np.uint8)
    lab[rng.random(lab.shape) < 0.05] = 2  # salt noise
    whole, blocks = lab.copy(), lab.copy()
    postprocess(whole, min_area=20, smooth_iterations=2)
    postprocess(blocks, min_area=20, smooth_iterations=2, block=16)
    assert (whole != blocks).mean() < 0.02  # only rare differences at block seams


def test_majority_smoothing_removes_salt_noise_and_keeps_edges():
    lab = np.zeros((40, 40), np.uint8)
    lab[:, 20:] = 1
    noisy = lab.copy()
    noisy[5, 5] = noisy[30, 10] = 1
    noisy[12, 33] = 0
    majority_smooth(noisy, 1)
    np.testing.assert_array_equal(noisy, lab)


def test_find_regions_skips_small_unknown_and_huge():
    lab = _map()
    regions = find_regions(lab, RefineSettings(min_area=10, max_fraction=0.4))
    assert [r.label for r in regions] == [2]  # class 0 and 1 are > 40% of the block
    r = regions[0]
    assert r.box == (5, 10, 25, 30) and r.mask[r.point[1], r.point[0]]


def test_refinement_moves_outlines_only_where_sam_agrees(monkeypatch):
    lab = _map()
    shifted = np.zeros_like(lab, bool)
    shifted[12:32, 5:25] = True  # SAM's building: 2 px lower (IoU 0.82)
    monkeypatch.setattr(refine, "sam_masks", lambda sam, image, regions: shifted[None])
    settings = RefineSettings(min_area=10, max_fraction=0.4, band=3)
    out = lab.copy()
    assert refine_block(out, np.zeros((60, 80, 3), np.uint8), None, settings) == 1
    assert (out[12:32, 5:25] == 2).all()
    assert (out[10:12, 5:25] == 0).all()  # given up: the nearest label outside the building
    assert (out[32:, :] == lab[32:, :]).all() and (out[:, 40:] == lab[:, 40:]).all()

    far = np.zeros_like(lab, bool)
    far[40:60, 50:70] = True  # no agreement with the coarse building: ignored
    monkeypatch.setattr(refine, "sam_masks", lambda sam, image, regions: far[None])
    out = lab.copy()
    assert refine_block(out, np.zeros((60, 80, 3), np.uint8), None, settings) == 0
    np.testing.assert_array_equal(out, lab)


def test_refine_labels_runs_blockwise_on_a_tiny_random_sam():
    sam = build_teacher("tiny-random", embed_dim=32, image_size=64)
    lab = _map()
    image = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    done = []
    refine_labels(ArraySource(image), lab, sam, RefineSettings(block=48, min_area=10),
                  progress=lambda d, n: done.append((d, n)))
    assert done[-1] == (4, 4)
    assert lab.shape == (60, 80) and set(np.unique(lab)) <= {0, 1, 2, UNKNOWN}

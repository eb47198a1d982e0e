"""Labelled images for heads: patch targets, names across folders, the held-back split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dinoseg.heads.data import (
    LabelledImage,
    content_hash,
    grow_classes,
    held_back,
    load_labelled,
    patch_targets,
    split_held_back,
)
from dinoseg.io import InputError
from dinoseg.preprocess import Geometry, plan_geometry


def test_patch_targets_share_labelled_pixels_and_skip_ignore():
    labels = np.full((28, 42), 9, np.int64)  # 9: no name = unlabelled
    labels[:14, :14] = 0  # patch (0, 0): all class a
    labels[:14, 14:21] = 1  # patch (0, 1): half class b, half unlabelled
    labels[14:, :7], labels[14:, 7:14] = 0, 1  # patch (1, 0): half a, half b
    geom = plan_geometry(28, 42, image_size=42, patch=14)
    target, cover = patch_targets(labels, {0: 0, 1: 1}, 2, geom, 14)
    assert target.shape == (2, 2, 3) and cover.shape == (2, 3)
    torch.testing.assert_close(cover, torch.tensor([[1.0, 0.5, 0.0], [1.0, 0.0, 0.0]]))
    torch.testing.assert_close(target[:, 0, 0], torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(target[:, 0, 1], torch.tensor([0.0, 1.0]))  # of labelled pixels
    torch.testing.assert_close(target[:, 1, 0], torch.tensor([0.5, 0.5]))
    assert torch.all(target[:, :, 2] == 0)


def test_patch_targets_follow_resize_and_padding():
    labels = np.zeros((20, 30), np.int64)
    geom = plan_geometry(20, 30, image_size=28, patch=14)  # resized 19x28, padded 28x28
    _target, cover = patch_targets(labels, {0: 0}, 1, geom, 14)
    assert cover.shape == (2, 2)
    assert float(cover[0, 0]) == 1.0
    assert 0.0 < float(cover[1, 0]) < 1.0  # the bottom row of patches is part padding


def _im(h: str, classes: set[int]) -> LabelledImage:
    z = torch.zeros(1, 1)
    return LabelledImage(h, h, [z], z[None], z, frozenset(classes))


def test_held_back_is_a_function_of_the_hash():
    hashes = [content_hash(np.full((4, 4 + i // 200, 3), i % 200, np.uint8)) for i in range(400)]
    picked = [held_back(h, 0.2) for h in hashes]
    assert picked == [held_back(h, 0.2) for h in hashes]
    assert 50 < sum(picked) < 110
    assert not any(held_back(h, 0.0) for h in hashes)
    assert picked != [held_back(h, 0.2, seed=1) for h in hashes]


def test_split_never_holds_back_a_class_with_few_labels_and_is_stable():
    images = [_im(content_hash(np.full((2, 2, 3), i, np.uint8)), {0}) for i in range(40)]
    rare = [_im(content_hash(np.full((2, 2, 3), 200 + i, np.uint8)), {1}) for i in range(3)]
    fit, val = split_held_back(images + rare, 0.5, min_images=5)
    assert all(im in fit for im in rare)
    assert val and all(im.classes == {0} for im in val)
    more = [_im(content_hash(np.full((2, 2, 3), 100 + i, np.uint8)), {0}) for i in range(20)]
    _, val2 = split_held_back(images + rare + more, 0.5, min_images=5)
    assert {im.hash for im in val} <= {im.hash for im in val2}  # labels grew, nobody moved


def _folder(root: Path, names: dict[int, str], images: list[tuple[np.ndarray, np.ndarray]],
            ignore: int = 255) -> Path:
    (root / "train" / "images").mkdir(parents=True)
    (root / "train" / "masks").mkdir(parents=True)
    (root / "classes.json").write_text(json.dumps(
        {"classes": {str(k): v for k, v in names.items()}, "ignore_index": ignore}))
    for i, (img, lab) in enumerate(images):
        Image.fromarray(img).save(root / "train" / "images" / f"{i}.png")
        Image.fromarray(lab.astype(np.uint8)).save(root / "train" / "masks" / f"{i}.png")
    return root


def _fake_encode(image: np.ndarray) -> tuple[list[torch.Tensor], Geometry]:
    geom = plan_geometry(*image.shape[:2], image_size=28, patch=14)
    return [torch.zeros(3, 2, 2, dtype=torch.float16)], geom


def test_classes_are_matched_by_name_across_folders(tmp_path):
    img_a = np.full((28, 28, 3), 10, np.uint8)
    img_b = np.full((28, 28, 3), 20, np.uint8)
    lab = np.zeros((28, 28))
    lab[:, 14:] = 1
    a = _folder(tmp_path / "a", {0: "road", 1: "Sky"}, [(img_a, lab)])
    b = _folder(tmp_path / "b", {0: "sky", 1: "Sign Symbol"}, [(img_b, lab), (img_a, lab * 0)])
    classes = grow_classes(["car"], [(a, "train"), (b, "train")])
    assert classes == ["car", "road", "sky", "sign_symbol"]
    images = load_labelled([(a, "train"), (b, "train")], _fake_encode, classes, 14)
    assert len(images) == 2  # img_a met twice: the later source's label wins
    by_hash = {im.hash: im for im in images}
    second = by_hash[content_hash(img_a)]
    assert second.source.startswith(str(b)) and second.classes == {2}  # all "sky" now
    first = by_hash[content_hash(img_b)]
    assert first.classes == {2, 3}
    torch.testing.assert_close(first.target[:, 0, 0], torch.tensor([0.0, 0.0, 1.0, 0.0]))
    torch.testing.assert_close(first.target[:, 0, 1], torch.tensor([0.0, 0.0, 0.0, 1.0]))


def test_a_name_outside_the_head_is_an_error_and_an_empty_folder_is_skipped(tmp_path):
    a = _folder(tmp_path / "a", {0: "road"}, [(np.zeros((28, 28, 3), np.uint8),
                                               np.zeros((28, 28)))])
    (tmp_path / "empty").mkdir()
    assert grow_classes([], [(tmp_path / "empty", "train")]) == []
    assert load_labelled([(tmp_path / "empty", "train")], _fake_encode, ["road"], 14) == []
    with pytest.raises(InputError, match="not among the head's classes"):
        load_labelled([(a, "train")], _fake_encode, ["sky"], 14)

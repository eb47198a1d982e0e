"""CocoDataset: a synthetic COCO file written to tmp_path, and the real coco-mini."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from dinoseg.data.coco import CocoDataset
from dinoseg.data.coco_masks import decode_segmentation
from dinoseg.data.episodes import EpisodeSampler
from dinoseg.data.folds import coco_fold, min_pixels
from dinoseg.io import InputError
from tests.data.coco_rle import rle_encode, rle_to_string

COCO_MINI = (Path(__file__).parents[2] / ".." / "shared" / "data" / "coco-mini").resolve()


# --- synthetic dataset ---------------------------------------------------------------------------

H, W = 20, 30
SQUARE = [2, 3, 10, 3, 10, 8, 2, 8]  # class "airplane"


def bicycle_mask() -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[0:2, 0] = True  # touches the first pixel: RLE starts with an empty run
    mask[15:20, 26:30] = True  # and the last one
    return mask


def crowd_mask() -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[6:12, 8:16] = True  # overlaps the airplane square in rows 6..8, columns 8..10
    return mask


def coco_json(annotations: list[dict[str, Any]], images: list[str]) -> dict[str, Any]:
    return {
        "images": [
            {"id": 7 + i, "file_name": name, "height": H, "width": W}
            for i, name in enumerate(images)
        ],
        "annotations": annotations,
        # not in id order: class ids follow ascending category ids (2, 5, 9)
        "categories": [
            {"id": 9, "name": "kite"},
            {"id": 2, "name": "bicycle"},
            {"id": 5, "name": "airplane"},
        ],
    }


def annotation(ann_id: int, category: int, segmentation: object, **extra: Any) -> dict[str, Any]:
    return {"id": ann_id, "image_id": 7, "category_id": category, "iscrowd": 0, "area": 40.0,
            "segmentation": segmentation, **extra}  # fmt: skip


def write_coco(root: Path, split: str = "train", annotations: list[dict[str, Any]] | None = None):
    """ROOT/annotations/instances_<split>.json and ROOT/<split>/{a,b}.png."""
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / split).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(root / split / name)
    if annotations is None:
        bicycle = {"size": [H, W], "counts": rle_to_string(rle_encode(bicycle_mask()))}
        crowd = {"size": [H, W], "counts": rle_encode(crowd_mask())}
        annotations = [
            annotation(1, 5, [SQUARE]),
            annotation(2, 2, bicycle, area=float(bicycle_mask().sum())),
            annotation(3, 5, crowd, iscrowd=1, area=48.0),
        ]
    path = root / "annotations" / f"instances_{split}.json"
    path.write_text(json.dumps(coco_json(annotations, ["a.png", "b.png"])))
    return root


def test_synthetic_classes_and_masks(tmp_path: Path) -> None:
    ds = CocoDataset(write_coco(tmp_path / "coco"), "train")
    assert len(ds) == 2 and ds.stems == ("a", "b")
    assert ds.class_ids == (0, 1, 2)
    assert ds.class_names == {0: "bicycle", 1: "airplane", 2: "kite"}
    assert ds.category_ids == (2, 5, 9)

    image, airplane = ds.load_binary("a", 1)
    assert image.shape == (H, W, 3) and image.dtype == np.uint8
    expected = np.zeros((H, W), np.uint8)
    expected[crowd_mask()] = 255  # crowd of the episode class: ignore ...
    expected[3:9, 2:11] = 1  # ... except where a plain instance covers it
    np.testing.assert_array_equal(airplane, expected)

    _, bicycle = ds.load_binary("a", 0)
    np.testing.assert_array_equal(bicycle, bicycle_mask().astype(np.uint8))
    assert not ds.load_mask("a", 2).any()  # kite: no annotation; crowds of other classes = 0
    assert not ds.load_mask("b", 1).any()  # an image without annotations


def test_synthetic_presence_from_areas(tmp_path: Path) -> None:
    ds = CocoDataset(write_coco(tmp_path / "coco"), "train")
    assert ds.class_area("a") == {0: 22.0, 1: 40.0}  # the crowd's 48 does not count
    assert ds.class_area("b") == {}
    assert min_pixels(0.05, H * W) == 30
    assert ds.images_with_class(1, 0.05) == ["a"]  # 40 >= 30
    assert ds.images_with_class(1, 0.1) == []  # 40 < 60, even with the crowd's 48 beside it
    assert ds.images_with_class(0, 0.02) == ["a"] and ds.images_with_class(0, 0.05) == []
    assert ds.images_with_class(2, 0.0) == []
    assert ds.present_classes("a", 0.02) == [0, 1]
    with pytest.raises(InputError, match="min_area"):
        ds.images_with_class(2, 1.5)


def test_missing_files_are_named(tmp_path: Path) -> None:
    root = write_coco(tmp_path / "coco")
    (root / "val").mkdir()
    with pytest.raises(InputError, match=r"instances_val\.json.*found: instances_train\.json"):
        CocoDataset(root, "val")
    with pytest.raises(InputError, match="no such image folder"):
        CocoDataset(root, "test")
    other = tmp_path / "other.json"
    other.write_text(json.dumps(coco_json([], ["a.png", "missing.png"])))
    ds = CocoDataset(root, "train", annotations=other)
    assert ds.annotation_file == other.resolve()
    ds.load_binary("a", 0)
    with pytest.raises(InputError, match=r"missing\.png: image 8 listed in other\.json"):
        ds.load_binary("missing", 0)
    with pytest.raises(KeyError):
        ds.load_binary("nope", 0)


def test_malformed_annotations(tmp_path: Path) -> None:
    root = write_coco(tmp_path / "bad_polygon", annotations=[annotation(5, 5, [[1, 2, 3]])])
    ds = CocoDataset(root, "train")
    assert ds.images_with_class(1, 0.0) == ["a"]  # presence never decodes a mask
    with pytest.raises(InputError, match=r"annotation 5 of a\.png: polygon"):
        ds.load_binary("a", 1)
    ds.load_binary("a", 0)  # other classes still load

    cases = [
        (annotation(6, 4, [SQUARE]), "image_id or category_id"),
        ({**annotation(6, 5, [SQUARE]), "area": None}, "'area' must be"),
        (annotation(6, 5, "polygon"), "'segmentation' must be list or dict"),
        (annotation(6, 5, [SQUARE], iscrowd=2), "'iscrowd' must be 0 or 1"),
    ]
    for i, (entry, message) in enumerate(cases):
        with pytest.raises(InputError, match=message):
            CocoDataset(write_coco(tmp_path / f"bad{i}", annotations=[entry]), "train")
    path = tmp_path / "bad0" / "annotations" / "instances_train.json"
    path.write_text("{not json")
    with pytest.raises(InputError, match="not a readable JSON"):
        CocoDataset(tmp_path / "bad0", "train")
    path.write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(InputError, match="missing 'categories'"):
        CocoDataset(tmp_path / "bad0", "train")


# --- real data -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def coco_val() -> CocoDataset:
    if not (COCO_MINI / "annotations" / "instances_val2017.json").is_file():
        pytest.fail(f"real test data missing: {COCO_MINI} (see /work/shared/data/README.md)")
    return CocoDataset(COCO_MINI, "val2017")


def test_real_coco_mini_classes(coco_val: CocoDataset) -> None:
    assert len(coco_val) == 79  # the folder holds more files; only the JSON's images count
    assert coco_val.class_ids == tuple(range(80))
    assert all(coco_val.class_names[c] for c in coco_val.class_ids)
    assert coco_val.class_names[0] == "person" and coco_val.class_names[79] == "toothbrush"
    assert list(coco_val.category_ids) == sorted(coco_val.category_ids)
    assert set(coco_fold(0).novel) <= set(coco_val.class_ids)


def test_real_crowd_rle_is_column_major(coco_val: CocoDataset) -> None:
    data = json.loads(coco_val.annotation_file.read_text())
    sizes = {img["id"]: (img["height"], img["width"]) for img in data["images"]}
    crowds = [a for a in data["annotations"] if a["iscrowd"]]
    assert crowds
    for ann in crowds:  # the decoded region sits in the annotation's bbox (x, y, w, h)
        ys, xs = np.nonzero(decode_segmentation(ann["segmentation"], sizes[ann["image_id"]]))
        box = [xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()]
        np.testing.assert_allclose(box, ann["bbox"], atol=1)


def test_real_presence_agrees_with_masks(coco_val: CocoDataset) -> None:
    for stem in coco_val.stems[:20]:
        img = coco_val.image(stem)
        need = min_pixels(0.005, img.height * img.width)
        for c in coco_val.present_classes(stem):
            assert (coco_val.load_mask(stem, c) == 1).sum() >= need, (stem, c)


def test_real_episodes_have_foreground(coco_val: CocoDataset) -> None:
    sampler = EpisodeSampler(coco_val, shots=1, n_episodes=4, seed=0)
    assert set(sampler.class_order) <= set(coco_val.class_ids)
    for episode in sampler:
        masks = [episode["query_mask"], *episode["support_masks"]]
        images = [episode["query_image"], *episode["support_images"]]
        for image, mask in zip(images, masks, strict=True):
            assert image.shape[:2] == mask.shape and mask.dtype == np.uint8
            assert set(np.unique(mask)) <= {0, 1, 255}
            assert (mask == 1).any()

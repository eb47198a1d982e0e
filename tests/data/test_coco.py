"""CocoDataset: RLE codec, a synthetic COCO file written to tmp_path, and the real coco-mini."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from dinoseg.data.coco import (
    CocoDataset,
    decode_segmentation,
    rle_decode,
    rle_encode,
    rle_from_string,
    rle_to_string,
)
from dinoseg.data.episodes import EpisodeSampler
from dinoseg.data.folds import coco_fold, min_pixels
from dinoseg.io import InputError

COCO_MINI = (Path(__file__).parents[2] / ".." / "shared" / "data" / "coco-mini").resolve()


# --- RLE -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "counts"),
    [
        # runs < 16 fit one chunk: chr(48 + n); the 4th run is stored as 2 - 2 = 0 -> "0"
        ("1210", [1, 2, 1, 2]),
        # 100 = 0b11_00100: chunk 4 with the "more" bit (4 | 32 = 36 -> "T"), then 3 -> "3"
        ("T3", [100]),
        # 20 = 0b10100 has bit 0x10 set, which would read as a sign, so a 0 chunk follows:
        # 20 | 32 = 52 -> "d", 0 -> "0"; the 4th run is stored as 4 - 20 = -16 = 0b1_10000,
        # one chunk 16 with the sign bit -> "@"
        ("1d01@", [1, 20, 1, 4]),
        ("", []),
    ],
)
def test_compressed_rle_hand_encoded(text: str, counts: list[int]) -> None:
    assert rle_from_string(text) == counts
    assert rle_from_string(text.encode()) == counts
    assert rle_to_string(counts) == text


def test_rle_is_column_major_and_starts_with_background() -> None:
    # runs 1 x 0, 2 x 1, 1 x 0, 2 x 1 down the columns of a 2x3 mask
    expected = np.array([[0, 1, 1], [1, 0, 1]], dtype=bool)
    np.testing.assert_array_equal(rle_decode([1, 2, 1, 2], (2, 3)), expected)
    np.testing.assert_array_equal(rle_decode("1210", (2, 3)), expected)
    assert rle_encode(expected) == [1, 2, 1, 2]
    assert rle_encode(np.ones((2, 2), bool)) == [0, 4]  # a leading empty background run
    assert rle_encode(np.zeros((3, 1), bool)) == [3]


@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (40, 70), (300, 200)])
def test_rle_round_trip(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(shape[0])
    masks = [np.zeros(shape, bool), np.ones(shape, bool), rng.random(shape) < 0.5]
    blocks = np.zeros(shape, bool)  # long runs: multi-chunk values and negative deltas
    blocks[shape[0] // 3 :, : shape[1] // 2] = True
    blocks[: shape[0] // 4, shape[1] // 2 :] = True
    for mask in [*masks, blocks]:
        counts = rle_encode(mask)
        assert sum(counts) == mask.size
        text = rle_to_string(counts)
        assert rle_from_string(text) == counts
        np.testing.assert_array_equal(rle_decode(text, shape), mask)
        np.testing.assert_array_equal(rle_decode(counts, shape), mask)


@pytest.mark.parametrize(
    ("segmentation", "message"),
    [
        ({"size": [2, 3], "counts": "12 0"}, "outside '0'..'o'"),
        ({"size": [2, 3], "counts": "1d"}, "middle of a run"),
        ({"size": [2, 3], "counts": [1, 2, 1]}, "add up to 4 pixels"),
        ({"size": [2, 3], "counts": [7, -1]}, "negative"),
        ({"size": [2, 3], "counts": [1.5, 4.5]}, "whole numbers"),
        ({"size": [2, 3], "counts": [[1], [2, 3]]}, "whole numbers"),
        ({"size": [3, 2], "counts": [6]}, "not the image's"),
        ({"size": [2, 3]}, "polygon list or an RLE"),
        ([[1, 1, 2, 2, 3]], "even count"),
        ([[1, 1, "2", 2, 3, 3]], "x, y numbers"),
        ([], "non-empty list"),
        ("1210", "polygon list or an RLE"),
    ],
)
def test_malformed_segmentations(segmentation: object, message: str) -> None:
    with pytest.raises(InputError, match=message):
        decode_segmentation(segmentation, (2, 3))


def test_polygons_fill_with_outline_and_skip_degenerate_ones() -> None:
    square = [2.0, 3.0, 10.0, 3.0, 10.0, 8.0, 2.0, 8.0]
    mask = decode_segmentation([square, [0, 0, 5, 5]], (20, 30))  # a 2-point polygon: no area
    expected = np.zeros((20, 30), bool)
    expected[3:9, 2:11] = True  # PIL includes the outline pixels
    np.testing.assert_array_equal(mask, expected)


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

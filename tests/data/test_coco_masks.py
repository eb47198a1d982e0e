"""COCO segmentations to masks: the RLE codec (hand-encoded strings, round trips), polygons,
and malformed input."""

from __future__ import annotations

import numpy as np
import pytest

from dinoseg.data.coco_masks import decode_segmentation, rle_decode, rle_from_string
from dinoseg.io import InputError
from tests.data.coco_rle import rle_encode, rle_to_string

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

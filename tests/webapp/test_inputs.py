"""Widget values -> supports and queries: the editor's layer format and every bad-input message."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dinoseg.io import InputError
from tests.webapp.conftest import editor_value
from webapp import inputs
from webapp.inputs import brushed_mask, read_queries, read_support, read_supports


def test_brush_layers_become_the_mask(blobs):
    img, mask = blobs["image"], blobs["mask"]
    other = np.zeros_like(mask)
    other[70:80, 5:15] = True  # a second stroke on a second layer
    support = read_support(editor_value(img, mask, other), None, 1)
    assert support is not None
    np.testing.assert_array_equal(support.image, img)
    np.testing.assert_array_equal(support.mask, mask | other)


def test_translucent_strokes_count_and_transparent_pixels_do_not(blobs):
    img, mask = blobs["image"], blobs["mask"]
    value = editor_value(img, mask, alpha=1)
    assert read_support(value, None, 1).mask.sum() == mask.sum()


def test_layer_of_another_size_is_scaled_to_the_image(blobs):
    mask = blobs["mask"]
    big = np.repeat(np.repeat(mask, 2, axis=0), 2, axis=1)  # a canvas at twice the size
    layer = np.zeros((*big.shape, 4), np.uint8)
    layer[big, 3] = 255
    out = brushed_mask({"layers": [layer]}, mask.shape)
    assert (out == mask).mean() > 0.98


def test_rgba_background_is_composited_like_load_image(blobs):
    img = blobs["image"]
    value = editor_value(img, blobs["mask"])
    value["background"][..., 3] = 0  # fully transparent -> black, as dinoseg.io.load_image
    support = read_support(value, None, 1)
    assert support.image.max() == 0


def test_uploaded_mask_file_wins_over_strokes(blobs):
    img, mask = blobs["image"], blobs["mask"]
    elsewhere = np.zeros_like(mask)
    elsewhere[0:5, 0:5] = True
    support = read_support(editor_value(img, elsewhere), blobs["mask_path"], 1)
    np.testing.assert_array_equal(support.mask, mask)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda b, t: (editor_value(b["image"]), None), "Support 1: no mask drawn"),
        (lambda b, t: (None, b["mask_path"]), "Support 1: a mask file was given but no image"),
        (lambda b, t: (editor_value(b["image"]), _small_mask(t)),
         r"Support 1 mask \(small.png\): mask is 40x30 but its image is 112x84"),
        (lambda b, t: (editor_value(b["image"]), _junk(t, "m.png")),
         r"Support 1 mask \(m.png\): not a readable image"),
        (lambda b, t: (editor_value(b["image"]), _empty_mask(t)), "has no foreground"),
        (lambda b, t: (editor_value(b["image"][:10, :10], b["mask"][:10, :10]), None),
         "both sides must be at least 14 px"),
    ],
)  # fmt: skip
def test_bad_support_says_what_to_fix(blobs, tmp_path, make, message):
    value, mask_file = make(blobs, tmp_path)
    with pytest.raises(InputError, match=message) as err:
        read_support(value, mask_file, 1)
    assert str(tmp_path) not in str(err.value)  # the user's file name, not a temporary path


def test_too_large_support_image(blobs, monkeypatch):
    monkeypatch.setattr(inputs, "MAX_PIXELS", 1000)
    with pytest.raises(InputError, match="over the limit of 0 MP; downscale it"):
        read_support(editor_value(blobs["image"], blobs["mask"]), None, 1)


def test_supports_skip_empty_slots_and_need_one(blobs):
    value = editor_value(blobs["image"], blobs["mask"])
    assert len(read_supports([None, value, None], [None, None, None])) == 1
    with pytest.raises(InputError, match="no support image"):
        read_supports([None, None], [None, None])


def test_queries_are_validated_with_their_names(blobs, tmp_path):
    found = read_queries(blobs["queries"])
    assert [q.name for q in found] == ["query1.png", "query2.png"]
    with pytest.raises(InputError, match="no query image"):
        read_queries([])
    with pytest.raises(InputError, match=r"Query junk.jpg: not a readable image"):
        read_queries([*blobs["queries"], _junk(tmp_path, "junk.jpg")])
    with pytest.raises(InputError, match="at most 16 query images"):
        read_queries(blobs["queries"] * 9)


def test_too_large_query_is_refused_before_decoding(tmp_path):
    path = tmp_path / "huge.png"
    Image.new("1", (8000, 5100)).save(path)  # 40.8 MP, a few kB on disk
    with pytest.raises(InputError, match=r"Query huge.png: image is 8000x5100 = 40.8 MP, over"):
        read_queries([str(path)])


def _small_mask(tmp_path):
    path = tmp_path / "small.png"
    Image.fromarray(np.full((30, 40), 255, np.uint8)).save(path)
    return str(path)


def _empty_mask(tmp_path):
    path = tmp_path / "empty.png"
    Image.fromarray(np.zeros((84, 112), np.uint8)).save(path)
    return str(path)


def _junk(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"this is not an image")
    return str(path)

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dinoseg.io import InputError, load_image, load_label_map, load_mask, save_mask_png


def _save(tmp_path, arr, mode=None, name="x.png"):
    path = tmp_path / name
    Image.fromarray(arr, mode=mode).save(path)
    return path


def test_rgb_roundtrip(tmp_path):
    arr = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    assert np.array_equal(load_image(_save(tmp_path, arr)), arr)


def test_grayscale_and_rgba_and_palette_become_rgb(tmp_path):
    gray = np.full((20, 20), 100, np.uint8)
    assert load_image(_save(tmp_path, gray, name="g.png")).shape == (20, 20, 3)
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:10, :, 3] = 255  # top half opaque red, bottom half transparent -> black
    out = load_image(_save(tmp_path, rgba, name="a.png"))
    assert out[0, 0].tolist() == [200, 0, 0] and out[15, 0].tolist() == [0, 0, 0]
    pal = Image.fromarray(gray).convert("P")
    pal.save(tmp_path / "p.png")
    assert load_image(tmp_path / "p.png").shape == (20, 20, 3)


def test_16bit_image_is_rescaled(tmp_path):
    arr = np.linspace(0, 4000, 400, dtype=np.uint16).reshape(20, 20)
    Image.fromarray(arr).save(tmp_path / "d.png")
    out = load_image(tmp_path / "d.png")
    assert out.dtype == np.uint8 and out.max() == 255 and out.min() == 0


def test_missing_corrupt_truncated(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_image(tmp_path / "none.png")
    (tmp_path / "t.txt").write_text("hello")
    with pytest.raises(InputError, match="not a readable image"):
        load_image(tmp_path / "t.txt")
    arr = np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "full.jpg", quality=95)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])
    with pytest.raises(InputError, match="corrupt or truncated"):
        load_image(tmp_path / "cut.jpg")


def test_size_limits(tmp_path):
    path = _save(tmp_path, np.zeros((10, 40, 3), np.uint8))
    with pytest.raises(InputError, match="at least 14"):
        load_image(path)
    path = _save(tmp_path, np.zeros((100, 100, 3), np.uint8), name="big.png")
    with pytest.raises(InputError, match="tiled inference"):
        load_image(path, max_pixels=5000)


def test_bytes_input():
    import io

    buf = io.BytesIO()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(buf, format="PNG")
    assert load_image(buf.getvalue()).shape == (16, 16, 3)


def test_masks(tmp_path):
    lab = np.zeros((20, 20), np.uint8)
    lab[5:10, 5:10] = 3
    path = _save(tmp_path, lab)
    assert load_label_map(path)[6, 6] == 3
    assert load_mask(path).sum() == 25
    assert load_mask(path, class_id=3).sum() == 25
    with pytest.raises(InputError, match="no class 4"):
        load_mask(path, class_id=4)
    with pytest.raises(InputError, match="must match"):
        load_mask(path, image_size=(20, 21))
    with pytest.raises(InputError, match="no foreground"):
        load_mask(_save(tmp_path, np.zeros((20, 20), np.uint8), name="e.png"))
    colour = np.zeros((20, 20, 3), np.uint8)
    colour[..., 0] = 255
    with pytest.raises(InputError, match="colour mask"):
        load_mask(_save(tmp_path, colour, name="c.png"))


def test_save_mask_png(tmp_path):
    m = np.zeros((15, 17), bool)
    m[3:5] = True
    save_mask_png(m, tmp_path / "m.png")
    back = np.asarray(Image.open(tmp_path / "m.png"))
    assert back.dtype == np.uint8 and set(np.unique(back)) == {0, 255}
    assert np.array_equal(back > 0, m)
    assert not list(tmp_path.glob("*.tmp"))

"""The tiled reader: lazy (memory-mapped) windows, whole decoding, clear errors."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from dinoseg.aerial.reader import ArraySource, DecodedSource, RawFileSource, open_large_image
from dinoseg.io import InputError


@pytest.fixture
def photo() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (61, 83, 3), dtype=np.uint8)


@pytest.mark.parametrize("suffix", [".ppm", ".tif", ".bmp"])
def test_uncompressed_files_are_read_by_row_bands(tmp_path, photo, suffix):
    path = tmp_path / f"p{suffix}"
    Image.fromarray(photo).save(path)
    src = open_large_image(path)
    assert isinstance(src, RawFileSource) and src.shape == (61, 83)
    np.testing.assert_array_equal(src.read(5, 7, 40, 70), photo[5:40, 7:70])
    assert src._cache is not None and src._cache[2].shape[:2] == (35, 83)  # only those rows
    np.testing.assert_array_equal(src.read(10, 0, 20, 5), photo[10:20, 0:5])  # from the band
    np.testing.assert_array_equal(src.read(50, 0, 61, 83), photo[50:61])


def test_gray_ppm_reads_as_rgb(tmp_path, photo):
    Image.fromarray(photo[..., 0]).save(tmp_path / "g.pgm")
    win = open_large_image(tmp_path / "g.pgm").read(0, 0, 10, 10)
    assert win.shape == (10, 10, 3)
    np.testing.assert_array_equal(win[..., 2], photo[:10, :10, 0])


def test_compressed_files_are_decoded_once(tmp_path, photo):
    Image.fromarray(photo).save(tmp_path / "p.png")
    src = open_large_image(tmp_path / "p.png")
    assert isinstance(src, DecodedSource)
    np.testing.assert_array_equal(src.read(0, 0, 61, 83), photo)


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width x height`` (no pixel data: a decompression bomb
    would look like this to the reader)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_errors_are_clear(tmp_path, photo):
    with pytest.raises(InputError, match="file not found"):
        open_large_image(tmp_path / "nope.jpg")
    with pytest.raises(InputError, match="not a file"):
        open_large_image(tmp_path)
    (tmp_path / "t.jpg").write_text("hello")
    with pytest.raises(InputError, match="not a readable image"):
        open_large_image(tmp_path / "t.jpg")
    Image.fromarray(photo[:10, :10]).save(tmp_path / "small.png")
    with pytest.raises(InputError, match="at least 14 px"):
        open_large_image(tmp_path / "small.png")
    Image.fromarray(photo).save(tmp_path / "p.ppm")
    with pytest.raises(InputError, match="over the tiled limit"):
        open_large_image(tmp_path / "p.ppm", max_pixels=1000)
    data = (tmp_path / "p.ppm").read_bytes()
    (tmp_path / "cut.ppm").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated"):
        open_large_image(tmp_path / "cut.ppm")


def test_decompression_bombs_are_refused_from_the_header(tmp_path):
    (tmp_path / "bomb.png").write_bytes(_png_header(30_000, 30_000))  # 900 MP declared
    with pytest.raises(InputError, match=r"too large|over the tiled limit"):
        open_large_image(tmp_path / "bomb.png")
    (tmp_path / "big.png").write_bytes(_png_header(7_000, 7_000))  # 49 MP: tiled path only
    src = open_large_image(tmp_path / "big.png")  # accepted lazily, fails only when decoded
    with pytest.raises(InputError, match="corrupt or truncated"):
        src.read(0, 0, 10, 10)


def test_array_source_checks_its_input():
    with pytest.raises(InputError, match="uint8"):
        ArraySource(np.zeros((20, 20, 3), np.float32))
    with pytest.raises(InputError, match="at least 14"):
        ArraySource(np.zeros((5, 20, 3), np.uint8))

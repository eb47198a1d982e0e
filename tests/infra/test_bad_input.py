"""Bad input through every entry point, as one matrix: the webapp's run callback, the CLI
(``dinoseg predict``), ``dinoseg.segment`` payloads and Label Studio annotations (sync).

Each case must end in a clear error that names the problem and leave no file behind: nothing
in the uploads or results folders, no CLI output folder, nothing under ``data/labels``.
Already covered elsewhere and not repeated here: request-shape validation
(tests/workers/test_parts.py::test_request_validation), RLE decoding errors at the converter level
(test_parts.py::test_malformed_brush_regions_are_input_errors), CLI missing file / wrong class
(tests/test_cli_predict.py), webapp support-slot messages (tests/webapp/test_inputs.py).
"""

from __future__ import annotations

import re
import shutil
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dinoseg.io import InputError
from tests.conftest import tiny_dinov2
from tests.workers.conftest import blob

H, W = 84, 112


def blank_png(path: Path, w: int, h: int) -> Path:
    """A valid 1-bit PNG of w x h black pixels in a few kB (a decompression bomb when large)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    z, row = zlib.compressobj(9), b"\x00" * (1 + (w + 7) // 8)
    idat = b"".join(z.compress(row) for _ in range(h)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat)
                     + chunk(b"IEND", b""))  # fmt: skip
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A good support (image, mask), a good query, and one bad file of every kind."""
    d = tmp_path_factory.mktemp("inputs")
    img, mask = blob(H, W, seed=0)
    Image.fromarray(img).save(d / "support.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(d / "support-mask.png")
    Image.fromarray(blob(H, W, seed=1)[0]).save(d / "query.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), np.uint8)).save(
        d / "full.jpg", quality=95)  # fmt: skip
    data = (d / "full.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    (d / "text.png").write_text("this is a text file with an image name")
    (d / "folder.png").mkdir()
    blank_png(d / "huge.png", 8000, 5100)  # 40.8 MP: over dinoseg's limit, a few kB
    blank_png(d / "bomb.png", 20000, 20000)  # 400 MP from ~50 kB: PIL's bomb guard
    Image.fromarray(np.full((30, 40), 255, np.uint8)).save(d / "small-mask.png")
    Image.fromarray(np.zeros((H, W), np.uint8)).save(d / "empty-mask.png")
    Image.fromarray(np.full((H, W), 255, np.uint8)).save(d / "ignore-mask.png")  # all 255
    tiny_dinov2().save_pretrained(d / "tiny-dinov2")
    return {p.name: p for p in d.iterdir()}


BAD_IMAGES = [  # (file, what the message says)
    ("corrupt.png", "not a readable image"),
    ("truncated.jpg", "corrupt or truncated"),
    ("text.png", "not a readable image"),
    ("folder.png", "not a file"),
    ("huge.png", r"8000x5100 = 40.8 MP, over the limit"),
    ("bomb.png", "too large"),
]
BAD_MASKS = [
    ("small-mask.png", "mask is 40x30 but"),
    ("empty-mask.png", "no foreground"),
    ("corrupt.png", "not a readable image"),
    ("bomb.png", "too large"),
]


def _files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# --- webapp upload (the page's run callback, in-process backend) ------------------------------


@pytest.fixture
def callbacks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: dict[str, Path]):
    from serving.config import ServingConfig
    from serving.models import ModelHolder
    from serving.segment import SegmentJob
    from webapp.backends.local import LocalBackend
    from webapp.callbacks import DemoCallbacks

    monkeypatch.setenv("DINOSEG_HOME", str(tmp_path / "home"))
    holder = ModelHolder(ServingConfig(backbone=str(files["tiny-dinov2"]), image_size=112))
    job = SegmentJob(holder, params=tmp_path / "no-params.yaml")
    return DemoCallbacks(LocalBackend(job)), tmp_path / "home"


def _editor(files: dict[str, Path]) -> dict:
    img = np.asarray(Image.open(files["support.png"]))
    return {"background": np.dstack([img, np.full((H, W), 255, np.uint8)]), "layers": [],
            "composite": None}  # fmt: skip


def _webapp_run(cb, files: dict[str, Path], query: str, mask: str) -> None:
    cb.run("prototype", 0.5, [str(files[query])], [_editor(files), None, None, None],
           [str(files[mask]), None, None, None])  # fmt: skip


@pytest.mark.parametrize(("name", "message"), BAD_IMAGES, ids=[c[0] for c in BAD_IMAGES])
def test_webapp_refuses_bad_queries(callbacks, files, name: str, message: str) -> None:
    import gradio as gr

    cb, home = callbacks
    with pytest.raises(gr.Error, match=rf"Query {name}: .*{message}"):
        _webapp_run(cb, files, name, "support-mask.png")
    assert _files_under(home) == []  # nothing stored: validation comes before storage


@pytest.mark.parametrize(("name", "message"), BAD_MASKS, ids=[c[0] for c in BAD_MASKS])
def test_webapp_refuses_bad_masks(callbacks, files, name: str, message: str) -> None:
    import gradio as gr

    cb, home = callbacks
    with pytest.raises(gr.Error, match=rf"Support 1 mask \({name}\): .*{message}"):
        _webapp_run(cb, files, "query.png", name)
    assert _files_under(home) == []


# --- CLI: dinoseg predict -----------------------------------------------------------------------


def _cli(files: dict[str, Path], out: Path, query: str = "query.png",
         mask: str = "support-mask.png", *extra: str) -> list[str]:  # fmt: skip
    return ["predict", "--support", str(files["support.png"]), str(files[mask]),
            "--query", str(files[query]), "--out", str(out),
            "--backbone", str(files["tiny-dinov2"]), "--image-size", "112", *extra]  # fmt: skip


CLI_CASES = [(f"query {n}", {"query": n}, m) for n, m in BAD_IMAGES] + [
    (f"mask {n}", {"mask": n}, m) for n, m in BAD_MASKS
] + [("all-ignore mask, --class-id 1", {"mask": "ignore-mask.png", "extra": ("--class-id", "1")},
      "the mask has no class 1")]  # fmt: skip


@pytest.mark.parametrize(("case", "change", "message"), CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_refuses_bad_input(files, tmp_path, capsys, case: str, change: dict,
                               message: str) -> None:  # fmt: skip
    from dinoseg.cli import main

    out = tmp_path / "out"
    args = _cli(files, out, change.get("query", "query.png"),
                change.get("mask", "support-mask.png"), *change.get("extra", ()))  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1
    assert re.search(message, err), err
    assert not out.exists()  # nothing half-written


def test_cli_out_path_that_is_a_file(files, tmp_path, capsys) -> None:
    from dinoseg.cli import main

    out = tmp_path / "out"
    out.write_text("not a folder")
    assert main(_cli(files, out)) == 2
    assert "exists and is not a directory" in capsys.readouterr().err
    assert out.read_text() == "not a folder"


# --- dinoseg.segment payloads (the worker's code, in-process) ----------------------------------


@pytest.fixture
def segment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: dict[str, Path]):
    """(run(request), uploads folder, results folder) with a tiny prototype model."""
    from serving.config import ServingConfig
    from serving.models import ModelHolder
    from serving.segment import SegmentJob

    home = tmp_path / "home"
    monkeypatch.setenv("DINOSEG_HOME", str(home))
    uploads = home / "uploads"
    uploads.mkdir(parents=True)
    for name, path in files.items():
        if path.is_dir() and name != "tiny-dinov2":
            (uploads / name).mkdir()
        elif path.is_file() and name != "bomb.png":
            shutil.copy(path, uploads / name)
    shutil.copy(files["bomb.png"], uploads / "bomb.png")
    (uploads / "escape.png").symlink_to(files["query.png"])  # a link out of the folder
    holder = ModelHolder(ServingConfig(model="prototype", backbone=str(files["tiny-dinov2"]),
                                       image_size=112))  # fmt: skip
    job = SegmentJob(holder, params=tmp_path / "no-params.yaml")
    return (lambda request: job.run(request).reply), uploads, home / "results"


def _payload(uploads: Path, query: str = "query.png", mask: str = "support-mask.png") -> dict:
    return {"support": [{"image": str(uploads / "support.png"), "mask": str(uploads / mask)}],
            "queries": [str(uploads / "query.png"), str(uploads / query)],  # first one is fine
            "model": None, "threshold": None}  # fmt: skip


def _traversal(uploads: Path) -> list[tuple[str, Callable[[dict], dict], str]]:
    q = lambda path: lambda p: {**p, "queries": [path]}  # noqa: E731
    return [
        ("dot-dot", q(str(uploads / ".." / ".." / "etc" / "passwd")), "outside the uploads"),
        ("absolute", q("/etc/hostname"), "outside the uploads"),
        ("symlink out", q(str(uploads / "escape.png")), "outside the uploads"),
        ("wrong type: path", q(7), "expected a file path"),  # type: ignore[arg-type]
        ("wrong type: queries", lambda p: {**p, "queries": {"a": 1}}, "'queries' must list"),
        ("wrong type: support", lambda p: {**p, "support": ["x.png"]}, r"support 1: expected"),
        ("wrong type: request", lambda p: [p], "must be an object"),
    ]


SEGMENT_CASES = [  # a folder in the uploads is not a file there
    (f"query {n}", {"query": n}, "file not found" if n == "folder.png" else m)
    for n, m in BAD_IMAGES
] + [
    (f"mask {n}", {"mask": n}, m) for n, m in BAD_MASKS]  # fmt: skip


@pytest.mark.parametrize(("case", "change", "message"), SEGMENT_CASES,
                         ids=[c[0] for c in SEGMENT_CASES])  # fmt: skip
def test_segment_refuses_bad_files(segment, case: str, change: dict, message: str) -> None:
    run, uploads, results = segment
    with pytest.raises(InputError, match=message):
        run(_payload(uploads, **change))
    assert _files_under(results) == []  # not even the good first query's record


def test_segment_refuses_traversal_and_wrong_types(segment) -> None:
    run, uploads, results = segment
    for case, change, message in _traversal(uploads):
        with pytest.raises(InputError, match=message):
            run(change(_payload(uploads)))
        assert _files_under(results) == [], case
    assert len(run(_payload(uploads))["results"]) == 2  # the unchanged payload works

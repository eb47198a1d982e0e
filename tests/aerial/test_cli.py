"""``dinoseg aerial`` end to end on a small Dubai tile, and its errors."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from dinoseg.cli import main

DUBAI = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "dubai"


@pytest.fixture(scope="module")
def dubai_crops(tmp_path_factory) -> dict[str, Path]:
    """A 252 x 308 val crop (with its truth) and a train support crop, as files."""
    if not (DUBAI / "classes.json").is_file():
        pytest.fail(f"real data missing: {DUBAI} (the repo expects ../shared/data beside it)")
    d = tmp_path_factory.mktemp("dubai")
    val, train = DUBAI / "val", DUBAI / "train"
    crop = (slice(300, 552), slice(400, 708))
    q = np.asarray(Image.open(val / "images" / "tile4_image_part_005.jpg").convert("RGB"))
    Image.fromarray(q[crop]).save(d / "query.png")
    Image.fromarray(np.asarray(Image.open(val / "masks" / "tile4_image_part_005.png"))[crop]).save(
        d / "truth.png")
    s = np.asarray(Image.open(train / "images" / "tile2_image_part_005.jpg").convert("RGB"))
    m = np.asarray(Image.open(train / "masks" / "tile2_image_part_005.png"))
    Image.fromarray(s[60:340, 40:390]).save(d / "support.png")  # shows all five classes
    Image.fromarray(m[60:340, 40:390]).save(d / "support_mask.png")
    return {"query": d / "query.png", "truth": d / "truth.png", "support": d / "support.png",
            "mask": d / "support_mask.png", "dir": d}


def _run(crops, out, *extra) -> int:
    return main(["aerial", "--image", str(crops["query"]), "--support", str(crops["support"]),
                 str(crops["mask"]), "--out", str(out), "--tile", "196", "--overlap", "42",
                 *extra])


def test_cli_writes_the_city_map(dubai_crops, tmp_path, capsys):
    out = tmp_path / "map"
    assert _run(dubai_crops, out, "min_area=16") == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["method"] == "fewshot" and set(summary["classes"]) == {
        "land", "water", "building", "vegetation", "road"}
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["classes.png", "map.png", "stats.json", "city.glb", "resolved_config.json"])
    labels = np.asarray(Image.open(out / "classes.png"))
    truth = np.asarray(Image.open(dubai_crops["truth"]))
    assert labels.shape == (252, 308) and set(np.unique(labels)) <= {0, 1, 2, 3, 4, 255}
    valid = truth != 255
    assert (labels[valid] == truth[valid]).mean() > 0.4  # well above chance (5 classes)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["shots"] == 1 and stats["seconds_per_megapixel"] > 0
    assert stats["classes"]["building"]["pixels"] == int((labels == 2).sum())
    scene = trimesh.load(io.BytesIO((out / "city.glb").read_bytes()), file_type="glb")
    assert scene.geometry and stats["buildings"] >= 1 and "building" in scene.geometry
    cfg = json.loads((out / "resolved_config.json").read_text())
    assert cfg["tile"] == 196 and cfg["min_area"] == 16 and cfg["method"] == "fewshot"
    assert Image.open(out / "map.png").size[0] > 308  # map + legend


def test_cli_kmeans_without_supports(dubai_crops, tmp_path, capsys):
    out = tmp_path / "km"
    args = ["aerial", "--image", str(dubai_crops["query"]), "--method", "kmeans", "--k", "3",
            "--tile", "252", "--out", str(out)]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(summary["classes"]) == {"cluster 0", "cluster 1", "cluster 2"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"image": "missing.png"}, "file not found"),
        ({"mask": "query.png"}, "colour mask"),
        ({"mask": "truth.png"}, "mask is 308x252 but its image is 350x280"),
        ({"extra": ["--method", "sam-match", "--support-none"]}, None),
        ({"extra": ["tile_size=3"]}, "unknown config key 'tile_size'"),
        ({"extra": ["--tile", "196", "--overlap", "150"]}, "overlap 150 px must be between"),
        ({"extra": ["--height-rule", "area", "pixel_size=-1"]}, "must be positive"),
    ],
)
def test_cli_bad_input_is_one_clear_line(dubai_crops, tmp_path, capsys, change, message):
    if message is None:
        return _no_support(dubai_crops, tmp_path, capsys)
    files = {k: dubai_crops[k] for k in ("query", "support", "mask")}
    if "image" in change:
        files["query"] = tmp_path / change["image"]
    if "mask" in change:
        files["mask"] = dubai_crops["dir"] / change["mask"]
    out = tmp_path / "o"
    rc = main(["aerial", "--image", str(files["query"]), "--support", str(files["support"]),
               str(files["mask"]), "--out", str(out), *change.get("extra", [])])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())  # nothing half-written


def _no_support(dubai_crops, tmp_path, capsys) -> None:
    out = tmp_path / "o"
    for method in ("fewshot", "sam-match"):
        rc = main(["aerial", "--image", str(dubai_crops["query"]), "--method", method,
                   "--out", str(out)])
        assert rc == 2 and "needs at least one --support" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(["aerial", "--image", str(dubai_crops["query"]), "--method", "kmeans",
                 "--out", str(tmp_path / "file")]) == 2
    assert "not a directory" in capsys.readouterr().err

"""FolderDataset on a tiny dataset written to tmp_path and on the real CamVid folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dinoseg.data import folder as folder_module
from dinoseg.data.folder import FolderDataset, read_classes
from dinoseg.data.folds import CAMVID_FOLDS, min_pixels
from dinoseg.io import InputError

SHARED_DATA = (Path(__file__).parents[2] / ".." / "shared" / "data").resolve()


@pytest.fixture
def camvid() -> Path:
    root = SHARED_DATA / "camvid"
    if not (root / "classes.json").is_file():
        pytest.fail(f"real test data missing: {root} (see /work/shared/data/README.md)")
    return root


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cache"
    monkeypatch.setenv("DINOSEG_CACHE", str(path))
    return path


def write_pair(root: Path, split: str, stem: str, labels: np.ndarray, suffix: str = ".png") -> None:
    (root / split / "images").mkdir(parents=True, exist_ok=True)
    (root / split / "masks").mkdir(parents=True, exist_ok=True)
    rgb = np.zeros((*labels.shape, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(root / split / "images" / f"{stem}{suffix}")
    Image.fromarray(labels.astype(np.uint8), mode="L").save(root / split / "masks" / f"{stem}.png")


def tiny_dataset(root: Path) -> Path:
    """3 classes + ignore 255 on 20x20 images: a = road 300 / car 100, b = road 398 / car 2."""
    root.mkdir(parents=True, exist_ok=True)
    classes = {"classes": {"0": "sky", "1": "road", "2": "car"}, "ignore_index": 255}
    (root / "classes.json").write_text(json.dumps(classes))
    a = np.ones((20, 20), dtype=np.uint8)
    a[:5] = 2
    write_pair(root, "train", "a", a)
    b = np.ones((20, 20), dtype=np.uint8)
    b[0, :2] = 2
    b[19, :] = 255
    write_pair(root, "train", "b", b, suffix=".jpg")
    return root


def test_tiny_dataset_lists_loads_and_counts(tmp_path: Path) -> None:
    ds = FolderDataset(tiny_dataset(tmp_path / "ds"), "train")
    assert ds.stems == ("a", "b") and len(ds) == 2
    assert ds.class_names == {0: "sky", 1: "road", 2: "car"}
    assert ds.ignore_index == 255 and ds.class_ids == (0, 1, 2)
    image, labels = ds.load(1)
    assert image.shape == (20, 20, 3) and image.dtype == np.uint8
    assert labels.shape == (20, 20) and labels.dtype == np.int64
    assert ds.class_pixels == {"a": {1: 300, 2: 100}, "b": {1: 378, 2: 2, 255: 20}}
    # min area 0.5 % of 400 px = 2 px: car counts in b; at 1 % (4 px) it does not
    assert ds.images_with_class(2) == ["a", "b"]
    assert ds.images_with_class(2, min_area=0.01) == ["a"]
    assert ds.present_classes("b", min_area=0.01) == [1]
    _, mask = ds.load_binary("b", 2)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1, 255}
    assert (mask == 1).sum() == 2 and (mask == 255).sum() == 20


def test_presence_index_is_cached_and_refreshed(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tiny_dataset(tmp_path / "ds")
    assert FolderDataset(root, "train").class_pixels["a"] == {1: 300, 2: 100}
    assert len(list((cache_dir / "presence").glob("*.json"))) == 1

    def no_reading(path: object) -> np.ndarray:
        raise AssertionError(f"mask {path} read although cached")

    with monkeypatch.context() as m:
        m.setattr(folder_module, "load_label_map", no_reading)
        assert FolderDataset(root, "train").class_pixels["a"] == {1: 300, 2: 100}
    # a changed mask is rescanned, the other one is not
    mask_b = root / "train" / "masks" / "b.png"
    Image.fromarray(np.zeros((20, 20), dtype=np.uint8), mode="L").save(mask_b)
    os.utime(mask_b, ns=(1_000_000_000, 1_000_000_000))
    assert FolderDataset(root, "train").class_pixels["b"] == {0: 400}


def test_cache_dir_argument_and_unreadable_cache(tmp_path: Path) -> None:
    root = tiny_dataset(tmp_path / "ds")
    own = tmp_path / "own-cache"
    assert FolderDataset(root, "train", cache_dir=own).class_pixels["b"][2] == 2
    (cache_file,) = (own / "presence").glob("*.json")
    cache_file.write_text("{not json")
    assert FolderDataset(root, "train", cache_dir=own).class_pixels["a"] == {1: 300, 2: 100}
    assert json.loads(cache_file.read_text())["version"] == 1


def test_missing_and_orphan_files_are_named(tmp_path: Path) -> None:
    root = tiny_dataset(tmp_path / "ds")
    (root / "train" / "masks" / "b.png").rename(root / "train" / "masks" / "c.png")
    with pytest.raises(InputError) as err:
        FolderDataset(root, "train")
    assert "b.jpg" in str(err.value) and "c.png" in str(err.value)


def test_bad_folders_raise_input_error(tmp_path: Path) -> None:
    root = tiny_dataset(tmp_path / "ds")
    with pytest.raises(InputError, match="has \\['train'\\]"):
        FolderDataset(root, "val")
    (root / "train" / "images" / "notes.txt").write_text("x")
    with pytest.raises(InputError, match=r"notes\.txt"):
        FolderDataset(root, "train")
    with pytest.raises(InputError, match=r"classes\.json"):
        FolderDataset(tmp_path, "train")


def test_unknown_label_values_and_size_mismatch(tmp_path: Path) -> None:
    root = tiny_dataset(tmp_path / "ds")
    write_pair(root, "train", "c", np.full((20, 20), 7, dtype=np.uint8))
    with pytest.raises(InputError, match="label values \\[7\\]"):
        _ = FolderDataset(root, "train").class_pixels
    Image.fromarray(np.ones((16, 20), dtype=np.uint8), mode="L").save(
        root / "train" / "masks" / "c.png"
    )
    with pytest.raises(InputError, match="mask is 20x16 but its image is 20x20"):
        FolderDataset(root, "train").load_stem("c")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"classes": {"0": "a"}, "ignore_index": 0}, "also class"),
        ({"classes": {"zero": "a"}}, "integers"),
        ({"classes": []}, "non-empty"),
        ({"classes": {"0": "a"}, "background_index": 3}, "background_index 3"),
        ({"names": ["a"]}, '"classes"'),
    ],
)
def test_bad_classes_json(tmp_path: Path, content: dict[str, object], message: str) -> None:
    (tmp_path / "classes.json").write_text(json.dumps(content))
    with pytest.raises(InputError, match=message):
        read_classes(tmp_path)


def test_classes_json_variants(tmp_path: Path) -> None:
    (tmp_path / "classes.json").write_text(json.dumps({"classes": ["cat", "dog", "background"]}))
    info = read_classes(tmp_path)
    assert info.names == {0: "cat", 1: "dog", 2: "background"} and info.ignore_index is None
    content = {"classes": ["cat", "dog", "background"], "background_index": 2, "ignore_index": 255}
    (tmp_path / "classes.json").write_text(json.dumps(content))
    assert read_classes(tmp_path).episode_classes == (0, 1)


def test_real_pascal_subset_excludes_background() -> None:
    info = read_classes(SHARED_DATA / "pascal-voc-subset")
    assert info.background_index == 20 and info.ignore_index == 255
    assert info.episode_classes == tuple(range(20)) and info.names[0] == "aeroplane"


def test_real_camvid_val(camvid: Path) -> None:
    ds = FolderDataset(camvid, "val")
    assert len(ds) == 101 and ds.ignore_index == 11
    assert ds.class_ids == tuple(range(11)) and ds.class_names[10] == "bicyclist"
    image, labels = ds.load(0)
    assert image.shape == (360, 480, 3) and labels.shape == (360, 480)
    assert labels.max() <= 11
    for stem, pixels in ds.class_pixels.items():
        assert sum(pixels.values()) == 360 * 480, stem
    assert min_pixels(0.005, 360 * 480) == 864
    # eligible queries per novel class of fold 2 (pole, tree, car) at the default 0.5 %
    assert [len(ds.images_with_class(c)) for c in CAMVID_FOLDS[2]] == [50, 101, 80]

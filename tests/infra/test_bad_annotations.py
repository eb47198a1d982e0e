"""Bad Label Studio annotations on their way to ``data/labels`` (the sync's ``write_label``):
malformed RLE, regions of another size, unknown or placeholder-only labels, an empty
annotation, and task data that points outside the uploads folder or puts a path into a file
name (task data is editable by anyone with access to the Label Studio project).

Each is an :class:`InputError` (the sync skips the task and reports why) and nothing is
written. RLE decoding alone is covered in tests/workers/test_parts.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from dinoseg.io import InputError
from tests.workers.conftest import blob

H, W = 84, 112


@pytest.fixture
def labels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """(labels root (not made yet), uploads folder with a good and a corrupt query, class info,
    the base dataset folder)."""
    from dinoseg.data.folder import read_classes

    home = tmp_path / "home"
    monkeypatch.setenv("DINOSEG_HOME", str(home))
    uploads = home / "uploads"
    uploads.mkdir(parents=True)
    Image.fromarray(blob(H, W, seed=3)[0]).save(uploads / "query.png")
    (uploads / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    Image.fromarray(blob(H, W, seed=4)[0]).save(tmp_path / "outside.png")
    base = tmp_path / "base"
    base.mkdir()
    (base / "classes.json").write_text(
        json.dumps({"classes": {"0": "road", "1": "car"}, "ignore_index": 255})
    )
    return tmp_path / "labels", uploads, read_classes(base), base


def _region(label: str = "car", shape: tuple[int, int] = (H, W)) -> dict[str, Any]:
    from workers.labelstudio.convert import mask_to_result

    mask = np.zeros(shape, bool)
    mask[10:40, 20:60] = True
    return mask_to_result(mask, label)


def _task(uploads: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    from serving.uploads import file_sha256

    path = uploads / "query.png"
    data = {"dinoseg_query": str(path), "dinoseg_query_sha256": file_sha256(path)}
    return {"id": 5, "data": data}, {"id": 9, "result": [_region()]}


def _rle(change: Callable[[list[int]], list[int]]) -> Callable[..., None]:
    def apply(task: dict, ann: dict, uploads: Path, tmp: Path) -> None:
        region = ann["result"][0]
        region["value"]["rle"] = change(region["value"]["rle"])

    return apply


def _data(key: str, value: Callable[[Path, Path], Any]) -> Callable[..., None]:
    def apply(task: dict, ann: dict, uploads: Path, tmp: Path) -> None:
        task["data"][key] = value(uploads, tmp)

    return apply


def _result(regions: Callable[[], list]) -> Callable[..., None]:
    def apply(task: dict, ann: dict, uploads: Path, tmp: Path) -> None:
        ann["result"] = regions()

    return apply


CASES = [
    ("truncated RLE", _rle(lambda r: r[:8]), "malformed RLE"),
    ("RLE of another size", _rle(lambda r: [0, 0, 0, 9, *r[4:]]), "declares 9 values"),
    ("RLE not bytes", _rle(lambda r: [*r[:6], 999]), "not a list of bytes"),
    ("region of another size", _result(lambda: [_region(shape=(H + 2, W))]), "brush region is"),
    ("unknown label", _result(lambda: [_region("tree")]), "unknown class 'tree'"),
    ("label that is no class name", _result(lambda: [_region("a/b")]), "class name 'a/b'"),
    ("only the placeholder label", _result(lambda: [_region("object")]),
     "no region labelled with a class"),
    ("empty annotation", _result(list), "no region labelled with a class"),
    ("query outside uploads", _data("dinoseg_query", lambda u, t: str(t / "outside.png")),
     "not in the uploads folder"),
    ("query via ..", _data("dinoseg_query", lambda u, t: str(u / ".." / ".." / "outside.png")),
     "not in the uploads folder"),
    ("query not a string", _data("dinoseg_query", lambda u, t: ["x"]), "not in the uploads"),
    ("path in the hash", _data("dinoseg_query_sha256", lambda u, t: "../../../../tmp/evil"),
     "bad dinoseg_query_sha256"),
    ("corrupt query image", _data("dinoseg_query", lambda u, t: str(u / "corrupt.png")),
     "not a readable image"),
    ("query image gone", _data("dinoseg_query", lambda u, t: str(u / "deleted.png")),
     "deleted.png"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "change", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_annotation_is_refused_and_writes_nothing(labels, tmp_path, case: str,
                                                      change, message: str) -> None:  # fmt: skip
    from workers.labelstudio.labelfiles import write_label

    root, uploads, info, base = labels
    task, ann = _task(uploads)
    change(task, ann, uploads, tmp_path)
    with pytest.raises(InputError, match=message):
        write_label(root, task, ann, set(info.names.values()), "annotator@dinoseg.test", base)
    assert not root.exists()  # not even the folder layout: the pipeline's input is unchanged
    assert not list(Path("/tmp").glob("evil*"))


def test_good_annotation_writes_image_mask_and_provenance(labels) -> None:
    from workers.labelstudio.labelfiles import write_label

    root, uploads, info, base = labels
    task, ann = _task(uploads)
    stem = write_label(root, task, ann, set(info.names.values()), "annotator@dinoseg.test", base)
    mask = np.asarray(Image.open(root / "train/masks" / f"{stem}.png"))
    assert mask.shape == (H, W) and set(np.unique(mask)) == {1, 255}  # car, unlabelled=ignore
    assert (root / "train/images" / f"{stem}.png").is_file()
    assert json.loads((root / "provenance" / f"{stem}.json").read_text())["task_id"] == 5


def test_annotations_of_one_image_merge_and_the_newest_wins(labels) -> None:
    from workers.labelstudio.convert import mask_to_result
    from workers.labelstudio.labelfiles import write_label

    root, uploads, _, base = labels
    allowed = {"road", "car"}
    task, _ = _task(uploads)
    car, road = np.zeros((H, W), bool), np.zeros((H, W), bool)
    car[10:30, 10:40] = True
    road[50:80, :] = True

    def write(task_id: int, ann_id: int, region: np.ndarray, label: str) -> np.ndarray:
        t = {**task, "id": task_id, "data": {**task["data"], "class_name": label}}
        stem = write_label(root, t, {"id": ann_id, "result": [mask_to_result(region, label)]},
                           allowed, "oracle", base)  # fmt: skip
        return np.asarray(Image.open(root / "train/masks" / f"{stem}.png"))

    write(1, 11, car, "car")
    both = write(2, 12, road, "road")  # another task, another class of the same image
    assert (both[car] == 1).all() and (both[road] == 0).all()
    moved = np.zeros((H, W), bool)
    moved[12:32, 60:90] = True
    fixed = write(1, 13, moved, "car")  # task 1 updated: its old car pixels are gone
    assert (fixed[moved] == 1).all() and (fixed[car & ~moved] == 255).all()
    assert (fixed[road] == 0).all()
    (prov_file,) = (root / "provenance").iterdir()
    prov = json.loads(prov_file.read_text())
    assert prov["classes"] == ["car", "road"] and set(prov["tasks"]) == {"1", "2"}
    assert prov["tasks"]["1"]["annotation_id"] == 13 and prov["annotation_id"] == 13
    # the classes the tasks asked for are complete: their unlabelled pixels mean "not it"
    complete = json.loads((root / "train/complete" / prov_file.name).read_text())
    assert complete == {"classes": ["car", "road"]}
    from dinoseg.data.folder import FolderDataset

    ds = FolderDataset(root, "train")
    episode = ds.load_binary(prov_file.stem, 1)[1]  # car: every unlabelled pixel a negative
    assert set(np.unique(episode)) == {0, 1} and (episode[moved] == 1).all()

"""Folds, the minimum-area rule and the seeded episode sampler."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dinoseg.data.binary import BinaryClassDataset, binarize
from dinoseg.data.episodes import EpisodeSampler
from dinoseg.data.folder import FolderDataset
from dinoseg.data.folds import (
    CAMVID_CLASSES,
    CAMVID_FOLDS,
    PASCAL_CLASSES,
    base_classes,
    benchmark_of,
    camvid_fold,
    coco_fold,
    dataset_fold,
    folder_folds,
    get_fold,
    is_present,
    min_pixels,
    novel_classes,
    pascal_fold,
    remap_for_training,
)
from dinoseg.io import InputError

SHARED_DATA = (Path(__file__).parents[2] / ".." / "shared" / "data").resolve()


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cache"
    monkeypatch.setenv("DINOSEG_CACHE", str(path))
    return path


class FakeSource:
    """An EpisodeSource without files: class c is present in images ``pools[c]``."""

    def __init__(self, pools: dict[int, list[str]]):
        self.pools = pools

    @property
    def class_ids(self) -> tuple[int, ...]:
        return tuple(sorted(self.pools))

    def images_with_class(self, class_id: int, min_area: float = 0.005) -> list[str]:
        return sorted(self.pools[class_id])

    def load_binary(self, stem: str, class_id: int) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros((14, 14, 3), dtype=np.uint8), np.ones((14, 14), dtype=np.uint8)


def fake(n_classes: int = 5, n_images: int = 8) -> FakeSource:
    return FakeSource({c: [f"c{c}_{j}" for j in range(n_images)] for c in range(n_classes)})


def all_ids(sampler: EpisodeSampler) -> list[tuple[int, str, list[str]]]:
    return [sampler.episode_ids(i) for i in range(len(sampler))]


# ---- folds -------------------------------------------------------------------------------


def test_pascal_folds() -> None:
    assert [PASCAL_CLASSES[c] for c in pascal_fold(0).novel] == [
        "aeroplane", "bicycle", "bird", "boat", "bottle",
    ]  # fmt: skip
    assert novel_classes(pascal_fold(3)) == (15, 16, 17, 18, 19)
    novel = [c for f in range(4) for c in pascal_fold(f).novel]
    assert sorted(novel) == list(range(20))  # background 20 is in no fold
    fold = pascal_fold(1)
    assert set(base_classes(fold)) | set(fold.novel) == set(range(20))
    assert not set(base_classes(fold)) & set(fold.novel)


def test_real_pascal_class_order_matches() -> None:
    classes = json.loads((SHARED_DATA / "pascal-voc-subset" / "classes.json").read_text())
    assert tuple(classes["classes"][str(i)] for i in range(20)) == PASCAL_CLASSES


def test_coco_folds_interleave() -> None:
    assert coco_fold(0).novel[:3] == (0, 4, 8) and coco_fold(3).novel[-1] == 79
    assert all(len(coco_fold(f).novel) == 20 and len(coco_fold(f).base) == 60 for f in range(4))
    assert sorted(c for f in range(4) for c in coco_fold(f).novel) == list(range(80))


def test_camvid_folds_are_the_round_robin_rule() -> None:
    classes = json.loads((SHARED_DATA / "camvid" / "classes.json").read_text())
    assert tuple(classes["classes"][str(i)] for i in range(11)) == CAMVID_CLASSES
    assert [f.novel for f in folder_folds(range(11), 3)] == list(CAMVID_FOLDS)
    assert [CAMVID_CLASSES[c] for c in camvid_fold(2).novel] == ["pole", "tree", "car"]
    assert 11 not in camvid_fold(0).classes  # void


def test_folder_folds_and_lookup() -> None:
    folds = folder_folds([7, 3, 5, 1], 2)
    assert [f.novel for f in folds] == [(1, 5), (3, 7)] and folds[0].base == (3, 7)
    with pytest.raises(InputError, match="folds"):
        folder_folds([1, 2], 3)
    assert get_fold("pascal-5i", 2) == pascal_fold(2) and get_fold("coco", 0) == coco_fold(0)
    assert get_fold("CamVid", 1) == camvid_fold(1)
    with pytest.raises(InputError, match="fold 4"):
        get_fold("pascal", 4)
    with pytest.raises(InputError, match="unknown benchmark"):
        get_fold("ade20k", 0)


def test_dataset_fold_follows_the_class_names() -> None:
    pascal = {**dict(enumerate(PASCAL_CLASSES)), 20: "background"}
    assert dataset_fold(pascal, range(20), 1).novel == (5, 6, 7, 8, 9)
    camvid = dict(enumerate(CAMVID_CLASSES))
    assert dataset_fold(camvid, range(11), 2).benchmark == "camvid-3i"
    coco = {0: "person", **{i: f"thing{i}" for i in range(1, 80)}}
    assert benchmark_of(coco) == "coco" and dataset_fold(coco, range(80), 3) == coco_fold(3)
    assert benchmark_of({**coco, 0: "cyclist"}) is None
    generic = dict(enumerate(["land", "water", "road"]))
    assert benchmark_of(generic) is None
    assert dataset_fold(generic, range(3), 1, n_folds=3).novel == (1,)
    with pytest.raises(InputError, match="fold 3 does not exist"):
        dataset_fold(generic, range(3), 3, n_folds=3)


def test_min_area_rule() -> None:
    assert min_pixels(0.005, 360 * 480) == 864
    assert is_present(864, 360 * 480) and not is_present(863, 360 * 480)
    assert min_pixels(0.0, 100) == 1 and not is_present(0, 100, min_area=0.0)
    assert is_present(10, 100, min_area=0.1)
    with pytest.raises(InputError, match="fraction"):
        min_pixels(5, 100)


def test_remap_for_training() -> None:
    labels = np.array([[0, 1, 2], [11, 2, 3]])
    out = remap_for_training(labels, novel=[2, 3], ignore_index=11)
    assert out.tolist() == [[0, 1, -1], [11, -1, -1]]
    assert remap_for_training(labels, [1], 11, background=20).tolist() == [[0, 20, 2], [11, 2, 3]]
    assert labels.tolist() == [[0, 1, 2], [11, 2, 3]]  # input untouched
    with pytest.raises(InputError):
        remap_for_training(labels, [11], 11)


# ---- sampler -----------------------------------------------------------------------------


# seed 0, 5 classes x 8 images, 2 shots: pinned so that any change of the algorithm is deliberate
PINNED_ORDER = (2, 0, 4, 3, 1)
PINNED_EPISODE_0 = (2, "c2_6", ["c2_7", "c2_3"])


def test_same_seed_same_episodes_and_pinned_values() -> None:
    a = EpisodeSampler(fake(), shots=2, n_episodes=40, seed=7)
    b = EpisodeSampler(fake(), shots=2, n_episodes=40, seed=7)
    assert all_ids(a) == all_ids(b)
    s = EpisodeSampler(fake(), shots=2, n_episodes=10, seed=0)
    assert s.class_order == PINNED_ORDER
    assert s.episode_ids(0) == PINNED_EPISODE_0


def test_different_seed_different_episodes() -> None:
    a = EpisodeSampler(fake(), shots=1, n_episodes=40, seed=0)
    b = EpisodeSampler(fake(), shots=1, n_episodes=40, seed=1)
    assert all_ids(a) != all_ids(b)


def test_access_order_does_not_matter() -> None:
    s = EpisodeSampler(fake(), shots=3, n_episodes=30, seed=3)
    forward = all_ids(s)
    order = np.random.default_rng(123).permutation(30)
    fresh = EpisodeSampler(fake(), shots=3, n_episodes=30, seed=3)
    shuffled = {int(i): fresh.episode_ids(int(i)) for i in order}
    assert [shuffled[i] for i in range(30)] == forward
    assert [s.episode_ids(i) for i in reversed(range(30))] == forward[::-1]
    assert s.episode_ids(-1) == forward[-1]
    # a longer sampler starts with the same episodes
    assert all_ids(EpisodeSampler(fake(), shots=3, n_episodes=60, seed=3))[:30] == forward


def test_query_never_among_its_supports() -> None:
    s = EpisodeSampler(fake(n_images=4), shots=3, n_episodes=200, seed=0)
    for class_id, query, supports in all_ids(s):
        assert query not in supports and len(set(supports)) == 3
        assert all(name.startswith(f"c{class_id}_") for name in [query, *supports])


def test_classes_are_cycled_and_only_the_requested_ones() -> None:
    src = FakeSource({c: [f"c{c}_{j}" for j in range(6)] for c in range(20)})
    fold = pascal_fold(2)
    s = EpisodeSampler(src, fold.novel, shots=1, n_episodes=25, seed=0)
    classes = [ids[0] for ids in all_ids(s)]
    assert set(classes) == set(fold.novel)
    assert all(classes.count(c) == 5 for c in fold.novel)
    assert classes[:5] == list(s.class_order) == classes[5:10]


def test_classes_with_too_few_images_are_skipped() -> None:
    src = FakeSource({0: ["a", "b", "c"], 1: ["d", "e"], 2: ["f"]})
    s = EpisodeSampler(src, shots=2, n_episodes=4, seed=0)
    assert s.class_order == (0,) and s.skipped == {1: 2, 2: 1}
    with pytest.raises(InputError, match="no class has 4 images"):
        EpisodeSampler(src, shots=3, n_episodes=4, seed=0)


def test_bad_arguments() -> None:
    with pytest.raises(InputError, match="cannot be episode classes"):
        EpisodeSampler(fake(), classes=[0, 99])
    for kwargs in ({"shots": 0}, {"n_episodes": 0}, {"seed": -1}, {"shots": 1.5}):
        with pytest.raises(InputError):
            EpisodeSampler(fake(), **kwargs)  # type: ignore[arg-type]
    s = EpisodeSampler(fake(), n_episodes=3)
    with pytest.raises(IndexError):
        s[3]
    assert len(list(s)) == 3


def write_folder(root: Path) -> FolderDataset:
    """6 images 16x16; class 1 (cat) present in all but img5 (only 1 px there)."""
    root.mkdir(parents=True)
    (root / "classes.json").write_text(json.dumps({"classes": ["bg", "cat"], "ignore_index": 255}))
    for d in ("images", "masks"):
        (root / "val" / d).mkdir(parents=True)
    for j in range(6):
        labels = np.zeros((16, 16), dtype=np.uint8)
        labels[: 4 + j, :8] = 1
        labels[15] = 255
        if j == 5:
            labels[:15] = 0
            labels[0, 0] = 1
        Image.fromarray(np.full((16, 16, 3), 9 * j, dtype=np.uint8)).save(
            root / "val" / "images" / f"img{j}.png"
        )
        Image.fromarray(labels, mode="L").save(root / "val" / "masks" / f"img{j}.png")
    return FolderDataset(root, "val")


def test_episode_from_a_folder_dataset(tmp_path: Path) -> None:
    ds = write_folder(tmp_path / "ds")
    s = EpisodeSampler(ds, classes=[1], shots=2, n_episodes=20, seed=0, min_area=0.01)
    assert s.pool(1) == ["img0", "img1", "img2", "img3", "img4"]  # img5: 1 px < 1 % of 256
    ep = s[0]
    assert set(ep) == {
        "query_image", "query_mask", "support_images", "support_masks", "class_id",
        "query_name", "support_names",
    }  # fmt: skip
    class_id, query, supports = s.episode_ids(0)
    assert (ep["class_id"], ep["query_name"], ep["support_names"]) == (class_id, query, supports)
    assert ep["query_image"].shape == (16, 16, 3) and ep["query_image"].dtype == np.uint8
    assert ep["query_mask"].dtype == np.uint8 and set(np.unique(ep["query_mask"])) == {0, 1, 255}
    j = int(query[3:])
    assert (ep["query_mask"] == 1).sum() == (4 + j) * 8 and (ep["query_mask"][15] == 255).all()
    assert len(ep["support_images"]) == len(ep["support_masks"]) == 2


def write_fss(root: Path) -> None:
    for name, sizes in {"apple": [40, 60, 1], "zebra": [80, 90, 100]}.items():
        (root / name).mkdir(parents=True)
        for n, size in enumerate(sizes, start=1):
            mask = np.zeros((20, 20), dtype=np.uint8)
            mask.flat[:size] = 255
            Image.fromarray(np.zeros((20, 20, 3), dtype=np.uint8)).save(root / name / f"{n}.jpg")
            Image.fromarray(mask, mode="L").save(root / name / f"{n}.png")


def test_binary_class_dataset(tmp_path: Path) -> None:
    write_fss(tmp_path / "fss")
    ds = BinaryClassDataset(tmp_path / "fss")
    assert ds.class_names == {0: "apple", 1: "zebra"} and len(ds) == 6
    assert ds.images_with_class(0) == ["apple/1", "apple/2"]  # apple/3: 1 px < 0.5 % of 400
    s = EpisodeSampler(ds, shots=1, n_episodes=10, seed=0)
    for i in range(10):
        ep = s[i]
        assert ep["query_name"].split("/")[0] == ds.class_names[ep["class_id"]]
        assert set(np.unique(ep["query_mask"])) <= {0, 1}
    only = BinaryClassDataset(tmp_path / "fss", classes=["zebra"])
    assert only.class_names == {0: "zebra"}
    assert binarize(np.array([[0, 1]])).tolist() == [[False, True]]
    assert binarize(np.array([[0, 127, 128, 255]])).tolist() == [[False, False, True, True]]
    (tmp_path / "fss" / "zebra" / "3.png").unlink()
    with pytest.raises(InputError, match="3"):
        BinaryClassDataset(tmp_path / "fss")


def test_real_camvid_novel_episodes() -> None:
    root = SHARED_DATA / "camvid"
    if not (root / "classes.json").is_file():
        pytest.fail(f"real test data missing: {root}")
    ds = FolderDataset(root, "val")
    s = EpisodeSampler(ds, camvid_fold(0).novel, shots=1, n_episodes=1000, seed=0)
    ids = all_ids(s)
    assert {c for c, _, _ in ids} == set(CAMVID_FOLDS[0])
    assert all(q not in sup for _, q, sup in ids)
    ep = s[0]
    assert ep["query_image"].shape == (360, 480, 3)
    assert ep["query_mask"].shape == (360, 480)
    assert (ep["query_mask"] == 1).sum() >= 864  # the min-area rule
    assert set(np.unique(ep["query_mask"])) <= {0, 1, 255}

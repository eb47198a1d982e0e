"""prepare: merging annotators' labels into the base dataset, skips, failures, episode lists."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from dinoseg.data import EpisodeSampler, FolderDataset
from dinoseg.io import InputError
from mlops.episodes import ListedEpisodes
from mlops.prepare import PrepareConfig, build_train_set, episode_list
from tests.conftest import write_synthetic_dataset


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DINOSEG_CACHE", str(tmp_path / "cache"))


def _pair(root, stem, labels, *, size=(56, 70)):
    (root / "train/images").mkdir(parents=True, exist_ok=True)
    (root / "train/masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(stem))
    Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(
        root / "train/images" / f"{stem}.png")
    Image.fromarray(labels.astype(np.uint8)).save(root / "train/masks" / f"{stem}.png")


def _labels(root, classes, ignore=255):
    root.mkdir(parents=True)
    (root / "classes.json").write_text(json.dumps({"classes": classes, "ignore_index": ignore}))


def _cfg(tmp_path, **kw):
    kw = {"labels_val_fraction": 0.0, **kw}  # merging tests: nothing held back
    return PrepareConfig(base=str(tmp_path / "base"), labels=str(tmp_path / "labels"),
                         val_episodes=8, **kw)


@pytest.fixture
def base(tmp_path):
    write_synthetic_dataset(tmp_path / "base", n_train=4, n_val=4)
    return tmp_path / "base"


def test_labels_join_the_train_split_with_base_ids(tmp_path, base):
    labels = tmp_path / "labels"
    _labels(labels, {"0": "c3", "1": "c0", "2": "kite"})  # other ids, and one new class
    lab = np.full((56, 70), 255, np.uint8)
    lab[:10, :10], lab[20:30, :10], lab[40:50, :10] = 0, 1, 2
    _pair(labels, "good", lab)
    _pair(labels, "small", np.zeros((20, 20)), size=(56, 70))  # mask size differs from image
    _pair(labels, "odd", np.full((56, 70), 7))  # label 7 is not a class
    (labels / "train/images/corrupt.png").write_bytes(b"not a png")
    Image.fromarray(np.zeros((56, 70), np.uint8)).save(labels / "train/masks/corrupt.png")
    good = (labels / "train/images/good.png").read_bytes()
    (labels / "train/images/lonely.png").write_bytes(good)
    (labels / "provenance.json").write_text("{}")  # other files at the root are fine
    (labels / "train/complete").mkdir()
    (labels / "train/complete/good.json").write_text('{"classes": ["kite"]}')  # asked: kite

    out = tmp_path / "train_set"
    report = build_train_set(_cfg(tmp_path), out)
    merged = FolderDataset(out, "train")
    assert merged.class_names == {0: "c0", 1: "c1", 2: "c2", 3: "c3", 4: "kite"}
    assert len(merged) == 5 and "label-good" in merged.stems
    _, remapped = merged.load_stem("label-good")
    assert remapped[0, 0] == 3 and remapped[25, 0] == 0 and remapped[45, 0] == 4
    assert remapped[0, 50] == 255  # ignore stays ignore
    assert merged.complete_classes("label-good") == ("kite",)  # the mark travels with it
    assert set(np.unique(merged.load_binary("label-good", 4)[1])) == {0, 1}
    assert (out / "train/images/000.png").is_symlink()  # base pairs are linked, not copied
    assert report.labels_added == 1 and report.masks_remapped == 1
    assert report.classes_added == ["kite"]
    reasons = {s["file"].split("/")[-1]: s["reason"] for s in report.skipped}
    assert set(reasons) == {"small.png", "odd.png", "corrupt.png", "lonely.png"}
    assert "20x20" in reasons["small.png"] and "[7]" in reasons["odd.png"]
    assert "not a readable image" in reasons["corrupt.png"] and "no mask" in reasons["lonely.png"]
    saved = json.loads((out / "prepare_report.json").read_text())
    assert len(saved["skipped"]) == 4


def test_absent_or_empty_labels_give_the_base(tmp_path, base):
    report = build_train_set(_cfg(tmp_path), tmp_path / "a")
    assert (report.base_train, report.base_val, report.labels_added) == (4, 4, 0)
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels/.gitkeep").touch()
    assert build_train_set(_cfg(tmp_path), tmp_path / "b").labels_added == 0
    merged = FolderDataset(tmp_path / "b", "val")
    assert merged.class_names == FolderDataset(base, "val").class_names


def test_strict_mode_fails_and_leaves_nothing_behind(tmp_path, base):
    labels = tmp_path / "labels"
    _labels(labels, {"0": "c0"})
    _pair(labels, "odd", np.full((56, 70), 9))
    with pytest.raises(InputError, match=r"1 label files cannot be used.*odd.png"):
        build_train_set(_cfg(tmp_path, strict=True), tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.tmp").exists()


def test_structural_problems_fail_clearly(tmp_path, base):
    labels = tmp_path / "labels"
    _pair(labels, "x", np.zeros((56, 70)))
    with pytest.raises(InputError, match=r"classes.json: missing"):
        build_train_set(_cfg(tmp_path), tmp_path / "o1")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(base / "val/masks/001.png")
    with pytest.raises(InputError, match="mismatched pairs: 001"):
        build_train_set(_cfg(tmp_path), tmp_path / "o2")
    with pytest.raises(InputError, match=r"base dataset .* not found"):
        build_train_set(PrepareConfig(base=str(tmp_path / "nope")), tmp_path / "o3")


def test_episode_list_is_the_seeded_sampler_and_is_served_as_listed(tmp_path, base):
    out = tmp_path / "set"
    build_train_set(_cfg(tmp_path), out)
    cfg = _cfg(tmp_path)
    spec = episode_list(out, cfg, fold_index=1)
    assert spec == episode_list(out, cfg, fold_index=1)  # fixed
    assert spec["fold"]["novel"] == [1] and len(spec["episodes"]) == 8
    ds = FolderDataset(out, "val")
    sampler = EpisodeSampler(ds, [1], shots=1, n_episodes=8, seed=0)
    listed = ListedEpisodes(ds, json.loads(json.dumps(spec)))
    for i in (0, 5):
        a, b = sampler[i], listed[i]
        assert (a["query_name"], a["support_names"]) == (b["query_name"], b["support_names"])
        np.testing.assert_array_equal(a["query_mask"], b["query_mask"])
    assert listed.class_order == (1,) and listed.shots == 1
    spec["episodes"][0]["query"] = "gone"
    with pytest.raises(InputError, match=r"lacks.*gone"):
        ListedEpisodes(ds, spec)


def test_a_stable_share_of_labels_is_held_back_for_the_gate(tmp_path, base):
    from mlops.merge import LABELS_VAL, held_back

    labels = tmp_path / "labels"
    stems = [f"{i:016x}" for i in range(40)]
    held = [s for s in stems if held_back(s, 0.25)]
    assert 4 <= len(held) <= 18  # about a quarter
    assert held == [s for s in stems if held_back(s, 0.25)]  # stable
    assert [s for s in stems[:20] if held_back(s, 0.25)] == [s for s in held if s in stems[:20]]
    assert not any(held_back(s, 0.0) for s in stems) and all(held_back(s, 1.0) for s in stems)
    labels.mkdir(exist_ok=True)
    shutil.copy(base / "classes.json", labels / "classes.json")
    for s in stems[:12]:
        _pair(labels, s, np.full((56, 70), 1))
    cfg = dataclasses.replace(_cfg(tmp_path), labels_val_fraction=0.25)
    out = tmp_path / "train_set"
    report = build_train_set(cfg, out)
    kept = [s for s in stems[:12] if held_back(s, 0.25)]
    assert report.labels_held_back == len(kept) and report.labels_added == 12 - len(kept)
    assert sorted(FolderDataset(out, LABELS_VAL).stems) == sorted(f"label-{s}" for s in kept)
    assert not set(FolderDataset(out, "train").stems) & {f"label-{s}" for s in kept}
    with pytest.raises(InputError, match="labels_val_fraction"):
        build_train_set(dataclasses.replace(cfg, labels_val_fraction=1.0), tmp_path / "bad")

"""SupportMemory on disk: content hashes, per-patch fractions, versions, add / retrieve."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dinoseg.backbone import DinoBackbone
from dinoseg.data.folder import class_key
from dinoseg.io import InputError
from dinoseg.memory import MemoryEncoder, Source, SupportMemory, build_memory, image_hash
from dinoseg.memory.labels import label_hash, patch_fractions
from dinoseg.preprocess import plan_geometry
from tests.conftest import tiny_dinov2
from tests.memory.scenes import CYAN, NAMES, YELLOW, scene, thing_scenes, write_folder


def test_patch_fractions_exclude_void_and_padding() -> None:
    labels = np.zeros((28, 42), np.int64)  # 2 x 3 patches of 14 px at size 42
    labels[:14, :14] = 1  # patch 0: all thing
    labels[:14, 14:21] = 1  # patch 1: half thing, half background
    labels[14:, 28:] = 9  # patch 5: void only
    labels[14:21, 14:28] = 9  # patch 4: half void, half background
    geom = plan_geometry(28, 42, image_size=42, patch=14)
    names, frac, cover = patch_fractions(labels, NAMES, geom, 14)
    assert names == ["background", "thing"]
    thing = frac[:, names.index("thing")]
    np.testing.assert_allclose(thing, [1, 0.5, 0, 0, 0, np.nan], atol=1e-6)  # 5: unknown
    np.testing.assert_allclose(cover, [1, 1, 1, 1, 0.5, 0], atol=1e-6)
    np.testing.assert_allclose(frac[4], [1, 0], atol=1e-6)  # of the labelled half
    padded = plan_geometry(28, 35, image_size=35, patch=14)  # 35 -> padded to 42
    _, _, cover = patch_fractions(labels[:, :35], NAMES, padded, 14)
    assert cover[2] == pytest.approx(0.5)  # 7 of 14 columns are padding
    names, frac, cover = patch_fractions(np.full((28, 42), 9), NAMES, geom, 14)  # void only
    assert names == [] and frac.shape == (6, 0) and not cover.any()


def test_a_complete_class_counts_unlabelled_pixels_as_not_that_class() -> None:
    """A review task's label: only the asked class drawn, the rest unlabelled. For that
    class the unlabelled patches are negatives; for any other class they stay unknown."""
    labels = np.full((28, 42), 9, np.int64)  # all void ...
    labels[:14, :14] = 1  # ... but patch 0: thing
    labels[:14, 14:21] = 1  # patch 1: half thing
    geom = plan_geometry(28, 42, image_size=42, patch=14)
    names, frac, _ = patch_fractions(labels, NAMES, geom, 14)
    np.testing.assert_allclose(frac[:, names.index("thing")], [1, 1, *[np.nan] * 4])
    names, frac, cover = patch_fractions(labels, NAMES, geom, 14, complete=["Thing", "car"])
    assert names == ["car", "thing"]  # an asked class not drawn at all: a negative everywhere
    np.testing.assert_allclose(frac[:, 1], [1, 0.5, 0, 0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(frac[:, 0], [0] * 6)
    np.testing.assert_allclose(cover, [1, 0.5, 0, 0, 0, 0])
    assert label_hash(labels, NAMES) != label_hash(labels, NAMES, ["thing"])
    assert label_hash(labels, NAMES, ["thing"]) == label_hash(labels, NAMES, [" Thing"])


def test_hashes_follow_content_and_names() -> None:
    img, lab = scene(0, (10, 10, 40, 40), YELLOW)
    assert image_hash(img) == image_hash(img.copy()) != image_hash(img[:, ::-1])
    renamed = {0: "Background", 1: "THING"}  # class identity by (normalised) name, not id
    assert label_hash(lab, NAMES) == label_hash(lab, renamed)
    assert label_hash(lab, NAMES) != label_hash(lab, {0: "background", 1: "car"})
    assert class_key(" Sign  Symbol ") == "sign_symbol"


def test_add_retrieve_and_exclude(tmp_path: Path, encoder: MemoryEncoder) -> None:
    memory = SupportMemory.create(tmp_path / "mem", encoder)
    scenes = [*thing_scenes(4), scene(7, (40, 40, 80, 80), YELLOW, label=2)]
    for i, (img, lab) in enumerate(scenes):
        assert memory.add(img, lab, NAMES, f"s{i}")
    assert not memory.add(*scenes[0], NAMES, "again")  # same image, same label: nothing to do
    assert len(memory) == 5 and memory.classes == {"background": 5, "other": 1, "thing": 4}
    hashes = [image_hash(img) for img, _ in scenes]
    _, own, _ = encoder(scenes[2][0])
    assert memory.retrieve(own, "thing", 1) == [hashes[2]]  # its own descriptor finds it first
    got = memory.retrieve(own, "Thing", None, exclude=[hashes[2]])
    assert sorted(got) == sorted(hashes[:2] + hashes[3:4])  # only images of the class
    assert memory.retrieve(own, "other", 3) == [hashes[4]]
    assert memory.retrieve(own, "unknown", 3) == [] and memory.retrieve(own, "thing", 0) == []
    keys, values = memory.patches(got, "thing")
    assert keys.dtype == torch.float16 and keys.shape[0] == values.shape[0] == 3 * 36
    torch.testing.assert_close(keys.float().norm(dim=1), torch.ones(108), atol=1e-2, rtol=0)
    assert 0 < float(values.mean()) < 0.5 and set(values.unique().tolist()) >= {0.0, 1.0}


def test_versions_agree_across_builds_and_incremental_add(
    tmp_path: Path, encoder: MemoryEncoder
) -> None:
    data = write_folder(tmp_path / "data", "train", thing_scenes(4))
    labels = write_folder(tmp_path / "labels", "train", thing_scenes(2, YELLOW, seed=300), 50)
    one, stats = build_memory(tmp_path / "m1", [Source(data)], encoder)
    assert stats.added == 4 and len(one) == 4
    again, stats = build_memory(tmp_path / "m1", [Source(data)], encoder)
    assert stats.added == 0 and stats.unchanged == 4 and again.version == one.version
    other = MemoryEncoder(encoder.backbone, image_size=84, layer=2)  # another process
    two, _ = build_memory(tmp_path / "m2", [Source(data)], other)
    assert two.version == one.version
    both, _ = build_memory(tmp_path / "m3", [Source(data), Source(labels)], encoder)
    assert both.version != one.version and len(both) == 6
    img, lab = thing_scenes(2, YELLOW, seed=300)[0]
    assert one.add(img, lab, NAMES, "label-1") and one.version != two.version
    img, lab = thing_scenes(2, YELLOW, seed=300)[1]
    one.add(img, lab, NAMES, "label-2")
    assert one.version == both.version  # incremental adds == a build from all the labels
    _, desc, _ = encoder(img)
    assert one.retrieve(desc, "thing", 1) == [image_hash(img)]
    manifest = json.loads((tmp_path / "m1" / "manifest.json").read_text())
    assert manifest["version"] == one.version and manifest["images"] == 6
    pruned, stats = build_memory(tmp_path / "m1", [Source(data)], encoder)
    assert stats.removed == 2 and pruned.version == two.version


def test_relabel_remove_and_refresh_between_processes(
    tmp_path: Path, encoder: MemoryEncoder
) -> None:
    writer = SupportMemory.create(tmp_path / "mem", encoder)
    img, lab = thing_scenes(1)[0]
    writer.add(img, lab, NAMES, "a")
    reader = SupportMemory.open(tmp_path / "mem")
    before = reader.version
    writer.add(*thing_scenes(1, CYAN, seed=5)[0], NAMES, "b")
    assert reader.version == before and reader.refresh() and len(reader) == 2
    assert reader.version == writer.version
    relabelled = np.where(lab == 1, 2, lab)  # the same image, now "other"
    assert writer.add(img, relabelled, NAMES, "fix") and len(writer) == 2
    reader.refresh()
    assert reader.images_of("other") == [image_hash(img)]
    _, desc, _ = encoder(img)
    keys, values = reader.patches(reader.retrieve(desc, "other", 1), "other")
    assert float(values.max()) == 1.0 and keys.shape[0] == values.shape[0]
    h = image_hash(img)
    assert writer.remove([h]) == 1 and len(writer) == 1 and h not in writer
    assert not list((tmp_path / "mem" / "patches").rglob(f"{h}*"))
    assert reader.refresh() and reader.images_of("other") == []


def test_bad_folders_and_other_encoders(tmp_path: Path, encoder: MemoryEncoder) -> None:
    with pytest.raises(InputError, match="no support memory"):
        SupportMemory.open(tmp_path)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file.txt").write_text("x")
    with pytest.raises(InputError, match="not empty"):
        SupportMemory.create(tmp_path / "busy", encoder)
    SupportMemory.create(tmp_path / "mem", encoder)
    other = DinoBackbone(tiny_dinov2(seed=1), (1, 2), spec="tiny")
    with pytest.raises(InputError, match="built with"):
        SupportMemory.open(tmp_path / "mem", encoder=MemoryEncoder(other, image_size=84, layer=2))
    with pytest.raises(InputError, match="without an encoder"):
        SupportMemory.open(tmp_path / "mem").add(*scene(0, (0, 0, 9, 9), CYAN), NAMES)
    empty_labels = tmp_path / "labels"
    empty_labels.mkdir()
    _, stats = build_memory(tmp_path / "mem", [Source(empty_labels)], encoder)
    assert stats.skipped_sources == (f"{empty_labels}:train",)


def test_a_review_label_built_from_its_folder_gives_the_vote_its_negatives(
    tmp_path: Path, encoder: MemoryEncoder
) -> None:
    """A labels folder whose image marks ``thing`` complete: the memory built from it holds
    that image's unlabelled patches as "not thing"; the episode mask reads them as 0, not
    ignore. Without the mark they stay unknown (no key, ignore)."""
    from dinoseg.data.folder import FolderDataset

    img, lab = thing_scenes(1)[0]
    only_thing = np.where(lab == 1, 1, 9)  # a one-class label: everything else unlabelled
    folder = write_folder(tmp_path / "labels", "train", [(img, only_thing)])
    plain, _ = build_memory(tmp_path / "plain", [Source(folder)], encoder)
    _, plain_values = plain.patches(plain.images_of("thing"), "thing")
    assert float(plain_values.min()) > 0.45  # only the (half-)thing patches: all positives
    (folder / "train" / "complete").mkdir()
    (folder / "train" / "complete" / "s000.json").write_text('{"classes": ["thing"]}')
    ds = FolderDataset(folder, "train")
    assert ds.complete_classes("s000") == ("thing",)
    assert set(np.unique(ds.load_binary("s000", 1)[1])) == {0, 1}  # no 255 left
    full, stats = build_memory(tmp_path / "plain", [Source(folder)], encoder)
    assert stats.added == 1 and full.version != plain.version  # the mark re-encodes it
    keys, values = full.patches(full.images_of("thing"), "thing")
    assert keys.shape[0] == values.shape[0] == 36 > plain_values.shape[0]
    assert float((values == 0).float().mean()) > 0.5
    (folder / "train" / "complete" / "s000.json").write_text('["thing"]')
    with pytest.raises(InputError, match=r"complete/s000\.json"):
        FolderDataset(folder, "train").complete_classes("s000")

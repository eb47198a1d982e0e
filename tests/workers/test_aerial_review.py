"""The aerial review loop against the suite's real Label Studio: a head's uncertain tiles become
tasks of their own project (the map's classes, one region per class), annotations come back as
a Dubai-layout labels folder that ``dinoseg aerial train`` reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dinoseg.aerial.trainset import read_labelled
from serving.aerial import review_tiles
from serving.aerial_review import AerialReviewConfig
from tests.workers.conftest import LabelStudioServer, Project
from workers.labelstudio import client as ls
from workers.labelstudio.aerial import queue_tiles, sync_tiles, tile_task
from workers.labelstudio.convert import mask_to_result, result_to_mask

NAMES = ["land", "water", "building", "vegetation", "road"]


class _Scored:
    """What the aerial job knows of a head method: its classes and tile confidences."""

    class_names = NAMES

    def __init__(self, boxes: list[tuple[tuple[int, int, int, int], float]]):
        self.tile_confidence = boxes


def _job_output(project: Project, tmp: Path) -> list[dict]:
    """A photo, its class map (as the aerial job writes it) and its review tiles."""
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)
    labels = np.zeros((64, 96), np.uint8)
    labels[:, 48:] = 1
    labels[20:40, 10:30] = 2
    project.uploads.mkdir(parents=True, exist_ok=True)
    Image.fromarray(photo).save(project.uploads / "photo.png")
    tmp.mkdir(parents=True, exist_ok=True)
    Image.fromarray(labels).save(tmp / "classes.png")
    method = _Scored([((0, 0, 64, 64), 0.61), ((0, 32, 64, 96), 0.55)])
    return review_tiles(project.uploads / "photo.png", tmp, method, "models:/aerial-test/1")


@pytest.fixture
def config(stack_env: Project, labelstudio: LabelStudioServer) -> AerialReviewConfig:
    return AerialReviewConfig(labels_dir=str(stack_env.root / "data" / "aerial_labels"),
                              project_title="dinoseg aerial review (test)")


def test_uncertain_tiles_become_tasks_once(config, stack_env, labelstudio, tmp_path):
    tiles = _job_output(stack_env, tmp_path)
    assert [t["confidence"] for t in tiles] == [0.55, 0.61]  # least confident first
    sent = queue_tiles(tiles, config)
    assert [s["status"] for s in sent] == ["queued", "queued"]
    assert [s["status"] for s in queue_tiles(tiles, config)] == ["duplicate", "duplicate"]
    client = labelstudio.client()
    project = client.projects.get(ls.find_project(client, config.project_title))
    assert all(f'value="{n}"' in project.label_config for n in NAMES)
    (pred,) = client.predictions.list(task=sent[0]["task_id"])
    assert pred.score == pytest.approx(0.55) and pred.model_version == "models:/aerial-test/1"
    regions = dict(reversed(result_to_mask(r)) for r in pred.result)
    assert set(regions) == {"land", "water"}  # the classes the tile (x 32-96) shows
    tile_labels = np.asarray(Image.open(tiles[0]["labels"]))
    np.testing.assert_array_equal(regions["water"], tile_labels == 1)


def test_annotated_tiles_become_training_labels(config, stack_env, labelstudio, tmp_path):
    tiles = _job_output(stack_env, tmp_path)
    task_id = queue_tiles(tiles[:1], config)[0]["task_id"]
    drawn = np.full((64, 64), 255, np.uint8)
    drawn[:32] = 0
    drawn[32:, :40] = 4  # the annotator: top is land, bottom left is road, the rest unsure
    results = [mask_to_result(drawn == 0, "land"), mask_to_result(drawn == 4, "road")]
    labelstudio.client().annotations.create(id=task_id, result=results)
    report = sync_tiles(config)
    assert report["labels"] >= 1 and report["changed"] >= 1, report["skipped"]
    root = Path(config.labels_dir)
    stem = Path(tiles[0]["image"]).stem[:16]
    written = {p: p.stat().st_mtime_ns for p in root.rglob("*.png")}
    again = sync_tiles(config)  # the periodic sync: nothing new, nothing rewritten
    assert again["labels"] == report["labels"] and again["changed"] == 0
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*.png")} == written
    np.testing.assert_array_equal(np.asarray(Image.open(root / "train/masks" / f"{stem}.png")),
                                  drawn)  # fmt: skip
    np.testing.assert_array_equal(np.asarray(Image.open(root / "train/images" / f"{stem}.png")),
                                  np.asarray(Image.open(tiles[0]["image"])))  # fmt: skip
    assert json.loads((root / "classes.json").read_text())["classes"]["4"] == "road"
    names, images = read_labelled([(str(root), "train")])  # what the aerial pipeline reads
    assert names == NAMES and any(im.source.endswith(stem) for im in images)


def test_deleted_review_tiles_stop_counting(config, stack_env, labelstudio, tmp_path):
    """Tiles whose task was deleted in Label Studio (one by one, or with the whole project)
    no longer count as awaiting review after the next sync."""
    from dataclasses import replace

    from workers.labelstudio.outbox import Outbox

    config = replace(config, project_title="dinoseg aerial review (deleted)")  # its own
    box = Outbox(tmp_path / "outbox.sqlite")
    sent = queue_tiles(_job_output(stack_env, tmp_path), config)
    box.tiles_sent((s["key"], s["task_id"]) for s in sent)
    assert box.tiles_awaiting() == 2
    client = labelstudio.client()
    client.tasks.delete(sent[0]["task_id"])
    report = sync_tiles(config, box)
    assert report["deleted_tasks"] == 1 and box.tiles_awaiting() == 1
    client.projects.delete(ls.find_project(client, config.project_title))
    assert sync_tiles(config, box)["deleted_tasks"] == 1 and box.tiles_awaiting() == 0


def test_a_task_naming_a_file_outside_the_uploads_is_refused(config, stack_env, tmp_path):
    from workers.labelstudio.aerial import write_tile_label

    tiles = _job_output(stack_env, tmp_path)
    task = tile_task(tiles[0])
    task["data"]["dinoseg_query"] = str(tmp_path / "classes.png")
    with pytest.raises(Exception, match="not in the uploads folder"):
        write_tile_label(tmp_path / "labels", {"id": 1, **task}, [])
    assert not (tmp_path / "labels").exists()


def test_the_ledger_skips_written_labels_and_remembers_refused_ones(
        config, stack_env, labelstudio, tmp_path, monkeypatch):  # fmt: skip
    """With the workers' outbox a periodic pull decodes only new or edited annotations (a
    label whose files were removed is written again), counts them toward the aerial retrain,
    and a refused annotation is remembered where ``dinoseg.status`` reads it."""
    import workers.labelstudio.aerial as aerial
    from workers.labelstudio.outbox import Outbox

    tiles = _job_output(stack_env, tmp_path)
    task_id = queue_tiles(tiles[1:], config)[0]["task_id"]
    client = labelstudio.client()
    drawn = np.zeros((64, 64), bool)
    drawn[:, :20] = True
    client.annotations.create(id=task_id, result=[mask_to_result(drawn, "building")])
    bad = tile_task(tiles[0])
    bad["data"].update({"dinoseg_query": str(tmp_path / "classes.png"), ls.KEY_FIELD: "bad"})
    bad_id = ls.create_task(client, ls.find_project(client, config.project_title), bad)
    client.annotations.create(id=bad_id, result=[mask_to_result(drawn, "land")])
    box = Outbox(tmp_path / "outbox.sqlite")
    first = sync_tiles(config, box)
    assert first["changed"] >= 1 and box.take_retrain(1, aerial.COUNTER)
    assert f"task {bad_id}: its tile is not in the uploads folder" in first["skipped"]
    assert box.rejections()[0] >= 1
    assert f"task {bad_id}: its tile is not in the uploads folder" in box.rejections(50)[1]
    mask = Path(config.labels_dir) / "train/masks" / f"{Path(tiles[1]['image']).stem[:16]}.png"
    np.testing.assert_array_equal(np.asarray(Image.open(mask)), np.where(drawn, 2, 255))
    decoded: list[object] = []
    write = aerial.write_tile_label
    monkeypatch.setattr(aerial, "write_tile_label", lambda *a: decoded.append(a) or write(*a))
    again = sync_tiles(config, box)
    assert [a[1]["id"] for a in decoded] == [bad_id]  # refused ones are tried again, as in
    assert again["changed"] == 0 and again["labels"] == first["labels"]  # the segment sync
    assert not box.take_retrain(1, aerial.COUNTER)
    mask.unlink()  # the folder lost a label: the next pull writes it again
    restored = sync_tiles(config, box)
    assert len(decoded) == 3 and restored["changed"] == 1 and mask.is_file()
    Path(tiles[1]["image"]).unlink()  # the uploads were cleaned: the written label stays
    later = sync_tiles(config, box)
    assert len(decoded) == 4 and later["labels"] == first["labels"] and mask.is_file()
    assert later["skipped"] == first["skipped"]  # only the refused one, not this label
    client.tasks.delete(bad_id)  # the refused task deleted: its refusal goes with it
    refused = box.rejections(50)[0]
    assert sync_tiles(config, box)["skipped"] == []
    assert box.rejections(50)[0] == refused - 1
    assert not any(f"task {bad_id}:" in r for r in box.rejections(50)[1])


def test_the_periodic_sync_queues_an_aerial_retrain_after_enough_new_labels(
        config, stack_env, labelstudio, tmp_path, monkeypatch):  # fmt: skip
    """``dinoseg.sync_aerial_annotations`` (what beat runs) counts new or edited tile labels
    and queues ``dinoseg.retrain("aerial")`` once ``retrain_after`` of them came in."""
    from dataclasses import replace

    import workers.tasks as tasks
    from workers.labelstudio.outbox import Outbox

    settings = {"cfg": replace(config, retrain_after=0)}  # 0: never by itself
    monkeypatch.setattr(AerialReviewConfig, "load", classmethod(lambda cls, *a: settings["cfg"]))
    queued: list[tuple] = []
    monkeypatch.setattr(tasks.retrain, "delay", lambda *a: queued.append(a))
    box = Outbox(tmp_path / "outbox.sqlite")
    sent = tasks._queue_aerial(_job_output(stack_env, tmp_path), box)  # what a map job does
    assert not tasks.sync_aerial_annotations()["retrain_queued"]  # earlier tests' labels
    assert box.tiles_awaiting() == len(sent) == 2
    monkeypatch.setattr(tasks.ProcessTask, "_outbox", box)
    settings["cfg"] = replace(config, retrain_after=2)
    client = labelstudio.client()
    replies = []
    for s, cls in zip(sent, ("land", "water"), strict=True):
        drawn = np.zeros((64, 64), bool)
        drawn[:16] = True
        client.annotations.create(id=s["task_id"], result=[mask_to_result(drawn, cls)])
        replies.append(tasks.sync_aerial_annotations())
    assert [(r["changed"], r["retrain_queued"]) for r in replies] == [(1, False), (1, True)]
    assert box.tiles_awaiting() == 0  # both annotated: the status counts none
    assert queued == [("aerial",)]
    again = tasks.sync_aerial_annotations()  # nothing new: the counter starts again
    assert again["changed"] == 0 and not again["retrain_queued"] and len(queued) == 1

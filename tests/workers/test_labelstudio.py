"""The review loop against a real Label Studio started by the test suite (loopback only)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dinoseg.confidence import mask_confidence
from serving import store
from serving.config import review_config
from serving.uploads import file_sha256
from tests.workers.conftest import LabelStudioServer, Project, blob, upload
from workers.labelstudio import client as ls
from workers.labelstudio import review as rv
from workers.labelstudio.convert import mask_to_result, result_to_mask
from workers.labelstudio.outbox import Outbox
from workers.labelstudio.sync import sync

MODEL_VERSION = "7"


def low_confidence_result(project: Project, seed: int) -> tuple[str, np.ndarray, float]:
    """A stored prediction with a fuzzy outline (low confidence); (id, mask, confidence)."""
    image, mask = blob(72, 96, seed)
    path = upload(project, f"review{seed}", image)["image"]
    prob = np.where(mask, 0.62, 0.2).astype(np.float32)
    conf = mask_confidence(prob)
    sha = file_sha256(path)
    rid = store.result_id({"query": sha, "model": MODEL_VERSION})
    meta = {"query": path, "query_sha256": sha, "model_version": MODEL_VERSION,
            "confidence": conf, "needs_review": True}  # fmt: skip
    store.write_record(rid, prob > 0.5, prob, meta)
    return rid, prob > 0.5, conf


def tasks_with_key(server: LabelStudioServer, key: str) -> list[int]:
    client = server.client()
    project = ls.find_project(client, review_config().project_title)
    return [t.id for t in client.tasks.list(project=project, fields="all")
            if t.data.get(ls.KEY_FIELD) == key]  # fmt: skip


@pytest.fixture
def review(stack_env: Project, labelstudio: LabelStudioServer) -> rv.Review:
    return rv.Review(review_config(), Outbox())


def test_low_confidence_result_becomes_a_task(review, stack_env, labelstudio) -> None:
    rid, mask, conf = low_confidence_result(stack_env, seed=1)
    assert conf < review.config.confidence_threshold
    reply = rv.queue(review, rid)
    assert reply["status"] == "queued" and isinstance(reply["task_id"], int)
    client = labelstudio.client()
    (pred,) = client.predictions.list(task=reply["task_id"])
    assert pred.model_version == MODEL_VERSION and pred.score == pytest.approx(conf)
    decoded, label = result_to_mask(pred.result[0])
    np.testing.assert_array_equal(decoded, mask)
    assert label == "object"
    project = client.projects.get(ls.find_project(client, review.config.project_title))
    assert all(f'value="{n}"' in project.label_config for n in ("road", "car", "object"))
    # the task's image is served by Label Studio from the uploads folder
    task = client.tasks.get(reply["task_id"])
    auth = {"Authorization": f"Token {labelstudio.env['LABEL_STUDIO_API_KEY']}"}
    req = urllib.request.Request(labelstudio.env["LABEL_STUDIO_URL"] + task.data["image"],
                                 headers=auth)  # fmt: skip
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.read() == Path(task.data["dinoseg_query"]).read_bytes()


def test_queueing_twice_makes_one_task(review, stack_env, labelstudio) -> None:
    rid, _, _ = low_confidence_result(stack_env, seed=2)
    first = rv.queue(review, rid)
    again = rv.queue(review, rid)
    assert (first["status"], again["status"]) == ("queued", "duplicate")
    assert again["task_id"] == first["task_id"]
    # even with the local ledger lost, the key is found in Label Studio: no second task
    fresh = rv.Review(review.config, Outbox(stack_env.root / "fresh-outbox.sqlite"))
    third = rv.queue(fresh, rid)
    assert third["task_id"] == first["task_id"]
    assert tasks_with_key(labelstudio, first["key"]) == [first["task_id"]]


def test_annotation_syncs_to_labels_folder(review, stack_env, labelstudio) -> None:
    rid, _, _ = low_confidence_result(stack_env, seed=3)
    task_id = rv.queue(review, rid)["task_id"]
    drawn = np.zeros((72, 96), bool)
    drawn[10:50, 20:70] = True
    drawn[60:66, 5:15] = True
    client = labelstudio.client()
    client.annotations.create(id=task_id, result=[mask_to_result(drawn, "car")])
    labels = stack_env.root / review.config.labels_dir
    report = sync(review, labels)
    assert report.new_labels == 1, report.skipped
    meta = store.read_meta(rid)
    stem = meta["query_sha256"][:16]
    written = np.asarray(Image.open(labels / "train" / "masks" / f"{stem}.png"))
    np.testing.assert_array_equal(written, np.where(drawn, 1, 255))  # car = 1, rest ignore
    image = np.asarray(Image.open(labels / "train" / "images" / f"{stem}.png"))
    np.testing.assert_array_equal(image, np.asarray(Image.open(meta["query"])))
    prov = json.loads((labels / "provenance" / f"{stem}.json").read_text())
    assert prov["task_id"] == task_id and prov["annotator"] == "admin@dinoseg.test"
    assert prov["model_version"] == MODEL_VERSION and prov["created_at"]
    assert json.loads((labels / "classes.json").read_text())["classes"]["1"] == "car"
    assert sync(review, labels).new_labels == 0  # already synced: nothing new
    from dinoseg.data.folder import FolderDataset

    assert FolderDataset(labels, "train").class_ids == (0, 1)  # a valid dataset folder


def test_a_task_deleted_in_label_studio_stops_counting(review, stack_env, labelstudio) -> None:
    """An admin deletes a review task: the next sync stops counting it as awaiting review
    (the status showed it for ever); the other task still counts, nothing else is touched."""
    kept, dropped = (rv.queue(review, low_confidence_result(stack_env, seed=s)[0])["task_id"]
                     for s in (11, 12))  # fmt: skip
    waiting = review.outbox.awaiting_annotation()
    assert {kept, dropped} <= review.outbox.awaiting_tasks("items")
    labelstudio.client().tasks.delete(dropped)
    labels = stack_env.root / review.config.labels_dir
    report = sync(review, labels)
    assert report.deleted_tasks == 1 and report.new_labels == 0
    assert review.outbox.awaiting_annotation() == waiting - 1
    assert kept in review.outbox.awaiting_tasks("items")
    assert sync(review, labels).deleted_tasks == 0  # judged once


def test_outbox_holds_items_while_label_studio_is_down(review, stack_env, labelstudio) -> None:
    rid, _, _ = low_confidence_result(stack_env, seed=4)
    labelstudio.stop()
    try:
        reply = rv.queue(review, rid)
        assert reply == {"status": "outbox", "task_id": None, "key": reply["key"]}
        assert review.outbox.depth() == 1
        assert rv.queue(review, rid)["status"] == "outbox"  # still one item
        assert rv.flush(review) == {"delivered": 0, "pending": 1}
    finally:
        labelstudio.start()
    assert rv.flush(review) == {"delivered": 1, "pending": 0}
    assert review.outbox.depth() == 0
    assert rv.queue(review, rid)["status"] == "duplicate"
    assert len(tasks_with_key(labelstudio, reply["key"])) == 1


def _dvc(root: Path, *args: str) -> str:
    import subprocess
    import sys

    dvc = Path(sys.executable).with_name("dvc")
    done = subprocess.run([str(dvc), *args], cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_sync_without_labels_leaves_the_pipeline_input_unchanged(
    review, stack_env, labelstudio, tmp_path
) -> None:
    """A sync with nothing to write (no Label Studio, or no annotation) must not touch
    ``data/labels``: the pipeline's first stage depends on it, and a change reruns it all."""
    from dataclasses import replace

    root = tmp_path / "pipeline"
    (root / "data" / "labels").mkdir(parents=True)
    (root / "data" / "labels" / ".gitkeep").touch()
    (root / "dvc.yaml").write_text(
        "stages:\n  prepare:\n    cmd: ls data/labels > listing.txt\n"
        "    deps: [data/labels]\n    outs: [listing.txt]\n"
    )
    _dvc(root, "init", "--no-scm", "-q")
    _dvc(root, "repro", "-q")
    assert "up to date" in _dvc(root, "status")
    labels = root / "data" / "labels"

    def down() -> None:
        raise ls.Unavailable("Label Studio unreachable (test)")

    with pytest.raises(ls.Unavailable):
        sync(rv.Review(review.config, review.outbox, connect=down), labels)
    empty = rv.Review(replace(review.config, project_title="dinoseg review, nothing annotated"),
                      review.outbox, connect=labelstudio.client)  # fmt: skip
    assert sync(empty, labels).new_labels == 0
    assert sorted(p.name for p in labels.iterdir()) == [".gitkeep"]
    assert "up to date" in _dvc(root, "status")

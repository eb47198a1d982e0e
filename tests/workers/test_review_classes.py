"""Review tasks that name their class and show the support, a labelling config that grows
with new classes, the project's model version following the newest predictions — against the
real Label Studio started by the test suite (loopback only)."""

from __future__ import annotations

import json
import multiprocessing
import urllib.request
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from serving import store
from serving.config import review_config
from serving.uploads import file_sha256
from tests.workers.conftest import LabelStudioServer, Project, blob, upload
from workers.labelstudio import client as ls
from workers.labelstudio import review as rv
from workers.labelstudio.convert import mask_to_result, result_to_mask
from workers.labelstudio.outbox import Outbox
from workers.labelstudio.sync import sync


def stored_result(project: Project, seed: int, *, class_name: str, version: str,
                  confidence: float) -> str:  # fmt: skip
    """A stored prediction of class ``class_name`` with a support example; its result id."""
    image, mask = blob(72, 96, seed)
    query = upload(project, f"cls-query{seed}", image)["image"]
    support = upload(project, f"cls-support{seed}", *blob(60, 80, seed + 100))
    sha = file_sha256(query)
    rid = store.result_id({"query": sha, "model": version, "class_name": class_name})
    meta = {"query": query, "query_sha256": sha, "model_version": version,
            "class_name": class_name, "confidence": confidence, "needs_review": True,
            "support": [{"image": support["image"], "mask": support["mask"]}]}  # fmt: skip
    store.write_record(rid, mask, mask.astype(np.float32), meta)
    return rid


def fresh_review(title: str) -> rv.Review:
    """A review loop on a project of its own (tests stay independent of each other)."""
    return rv.Review(replace(review_config(), project_title=title), Outbox())


def _get(server: LabelStudioServer, path: str) -> bytes:
    auth = {"Authorization": f"Token {server.env['LABEL_STUDIO_API_KEY']}"}
    req = urllib.request.Request(server.env["LABEL_STUDIO_URL"] + path, headers=auth)
    with urllib.request.urlopen(req, timeout=15) as r:
        return bytes(r.read())


def test_task_names_its_class_and_shows_the_support(stack_env, labelstudio) -> None:
    review = fresh_review("classes: task content")
    rid = stored_result(stack_env, 1, class_name="pedestrian", version="3", confidence=0.36)
    reply = rv.queue(review, rid)
    assert reply["status"] == "queued"
    client = labelstudio.client()
    task = client.tasks.get(reply["task_id"])
    assert task.data["class_name"] == "pedestrian"
    assert task.data["context"] == "confidence 0.36 · model 3"
    sheet = np.asarray(Image.open(__import__("io").BytesIO(_get(labelstudio,
                                                                 task.data["support_image"]))))
    assert sheet.shape[0] == 360 and sheet.shape[2] == 3  # served by Label Studio itself
    (pred,) = client.predictions.list(task=reply["task_id"])
    assert result_to_mask(pred.result[0])[1] == "pedestrian"
    project = client.projects.get(ls.find_project(client, review.config.project_title))
    assert ls.config_labels(project.label_config) == ["road", "car", "pedestrian"]


def _add_label(env: dict[str, str], title: str, name: str) -> None:
    import os

    os.environ.update(env)
    client = ls.connect(env["LABEL_STUDIO_URL"], env["LABEL_STUDIO_API_KEY"])
    ls.ensure_labels(client, ls.find_project(client, title), [name])


def test_two_workers_adding_two_classes_keep_both(stack_env, labelstudio) -> None:
    review = fresh_review("classes: concurrent growth")
    rid = stored_result(stack_env, 2, class_name="car", version="3", confidence=0.3)
    task_id = rv.queue(review, rid)["task_id"]
    client = labelstudio.client()
    client.annotations.create(id=task_id, result=[mask_to_result(blob(72, 96, 2)[1], "car")])
    title, env = review.config.project_title, dict(stack_env.env)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_add_label, args=(env, title, n)) for n in ("bus", "tram")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    project = client.projects.get(ls.find_project(client, title))
    assert ls.config_labels(project.label_config) in (["road", "car", "bus", "tram"],
                                                      ["road", "car", "tram", "bus"])
    (task,) = client.tasks.list(project=project.id, fields="all")  # nothing lost
    assert task.id == task_id and len(task.annotations) == 1


def test_project_orders_the_newest_version_first_after_a_promotion(stack_env, labelstudio):
    review = fresh_review("classes: model version")
    old = [rv.queue(review, stored_result(stack_env, s, class_name="car", version="1",
                                          confidence=c))["task_id"]
           for s, c in ((10, 0.5), (11, 0.3))]  # fmt: skip
    client = labelstudio.client()
    project = ls.find_project(client, review.config.project_title)
    assert client.projects.get(project).model_version == "1"
    new = [rv.queue(review, stored_result(stack_env, s, class_name="car", version="2",
                                          confidence=c))["task_id"]
           for s, c in ((12, 0.6), (13, 0.4))]  # fmt: skip
    assert client.projects.get(project).model_version == "2"
    nxt = json.loads(_get(labelstudio, f"/api/projects/{project}/next"))
    assert nxt["id"] == new[1] and nxt["id"] not in old  # the promoted model's least confident
    # an old item delivered late does not take the project back to version 1
    late = stored_result(stack_env, 14, class_name="car", version="1", confidence=0.1)
    review.outbox.add("late:1", late, rv.build_task(rv.item_from_record(late)))
    review.outbox.newest_version("2", float("inf"))  # a newer item exists
    rv.deliver(review, "late:1")
    assert client.projects.get(project).model_version == "2"


def test_sync_adds_new_classes_and_reports_refused_annotations(stack_env, labelstudio,
                                                               tmp_path) -> None:  # fmt: skip
    review = fresh_review("classes: sync")
    rid = stored_result(stack_env, 20, class_name="pedestrian", version="3", confidence=0.2)
    bad = stored_result(stack_env, 21, class_name="car", version="3", confidence=0.2)
    ids = [rv.queue(review, r)["task_id"] for r in (rid, bad)]
    client = labelstudio.client()
    drawn = blob(72, 96, 20)[1]
    client.annotations.create(id=ids[0], result=[mask_to_result(drawn, "pedestrian")])
    client.annotations.create(id=ids[1], result=[mask_to_result(drawn, "unicorn")])
    labels = tmp_path / "labels"
    report = sync(review, labels)
    assert report.new_labels == 1 and "unknown class 'unicorn'" in report.skipped[0]
    classes = json.loads((labels / "classes.json").read_text())["classes"]
    assert classes == {"0": "road", "1": "car", "2": "pedestrian"}
    (mask,) = (labels / "train" / "masks").iterdir()
    assert set(np.unique(np.asarray(Image.open(mask)))) == {2, 255}
    prov = json.loads(next((labels / "provenance").iterdir()).read_text())
    assert prov["class_name"] == "pedestrian" and prov["classes"] == ["pedestrian"]
    count, reasons = review.outbox.rejections()
    assert count >= 1 and any(f"task {ids[1]}" in r and "unicorn" in r for r in reasons)
    from webapp.callbacks import status_markdown

    text = status_markdown({"refused_annotations": count, "refused_reasons": reasons})
    assert "annotation(s) refused" in text and "unicorn" in text
    assert Path(labels / "train" / "images").is_dir()
    # the annotator submits a second, good annotation (not an edit): the refusal is moot
    client.annotations.create(id=ids[1], result=[mask_to_result(drawn, "car")])
    assert sync(review, labels).new_labels == 1
    assert review.outbox.rejections()[0] == count - 1


def test_a_class_renamed_in_label_studio_becomes_a_new_class(stack_env, labelstudio,
                                                              tmp_path) -> None:  # fmt: skip
    from workers.labelstudio.convert import label_config

    review = fresh_review("classes: renamed")
    labels = tmp_path / "labels"
    first = rv.queue(review, stored_result(stack_env, 30, class_name="car", version="3",
                                           confidence=0.2))["task_id"]  # fmt: skip
    client = labelstudio.client()
    drawn = blob(72, 96, 30)[1]
    client.annotations.create(id=first, result=[mask_to_result(drawn, "car")])
    assert sync(review, labels).new_labels == 1  # synced under the old name
    project = ls.find_project(client, review.config.project_title)
    # an admin renames the label in Label Studio (car -> automobile)
    client.projects.update(id=project, label_config=label_config(["road", "automobile"]))
    second = rv.queue(review, stored_result(stack_env, 31, class_name="car", version="3",
                                            confidence=0.2))["task_id"]  # fmt: skip
    client.annotations.create(id=second, result=[mask_to_result(drawn, "automobile")])
    assert sync(review, labels).new_labels == 1
    classes = json.loads((labels / "classes.json").read_text())["classes"]
    assert classes == {"0": "road", "1": "car", "2": "automobile"}
    masks = sorted((labels / "train" / "masks").iterdir())
    assert len(masks) == 2  # the label synced under the old name is kept
    drawn_ids = sorted(int(v) for m in masks for v in np.unique(np.asarray(Image.open(m)))
                       if v != 255)  # fmt: skip
    assert drawn_ids == [1, 2]  # car and automobile, one image each


def test_a_task_imported_by_hand_syncs_too(stack_env, labelstudio, tmp_path) -> None:
    review = fresh_review("classes: hand-imported")
    client = labelstudio.client()
    project = review.project(client)
    image, drawn = blob(72, 96, 40)
    path = upload(stack_env, "by-hand", image)["image"]
    reply = client.projects.import_tasks(project, request=[{"data": {"image": ls.image_url(path)}}],
                                         return_task_ids=True)  # fmt: skip
    (task_id,) = reply.task_ids
    client.annotations.create(id=task_id, result=[mask_to_result(drawn, "car")])
    labels = tmp_path / "labels"
    report = sync(review, labels)
    assert report.new_labels == 1, report.skipped
    (mask,) = (labels / "train" / "masks").iterdir()
    np.testing.assert_array_equal(np.asarray(Image.open(mask)), np.where(drawn, 1, 255))
    (img,) = (labels / "train" / "images").iterdir()
    np.testing.assert_array_equal(np.asarray(Image.open(img)), image)
    prov = json.loads(next((labels / "provenance").iterdir()).read_text())
    assert prov["task_id"] == task_id and prov["class_name"] is None

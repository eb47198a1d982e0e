"""The serving and worker parts without services: RLE, outbox, request validation, the segment
job, results store, models."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from dinoseg.io import InputError
from serving import store
from serving.config import PARAMS_FILE, ServingConfig, review_config, serving_config
from serving.models import ModelHolder
from serving.request import parse_request
from serving.segment import SegmentJob
from serving.uploads import content_sha256, file_sha256
from tests.workers.conftest import Project, blob, make_request, upload
from workers.labelstudio.convert import (
    PLACEHOLDER,
    annotation_to_label_map,
    label_config,
    mask_to_result,
    result_to_mask,
)
from workers.labelstudio.outbox import Outbox


def test_brush_rle_round_trip_and_label_map() -> None:
    mask = np.zeros((37, 53), bool)  # a few blobs and single pixels
    mask[3:20, 5:30] = mask[25:36, 40:52] = mask[0, 0] = mask[36, 52] = True
    mask[10:14, 12:16] = False
    decoded, label = result_to_mask(mask_to_result(mask, "car"))
    np.testing.assert_array_equal(decoded, mask)
    assert label == "car"
    other = np.zeros_like(mask)
    other[:5] = True
    results = [mask_to_result(mask, "car"), mask_to_result(other, PLACEHOLDER)]
    labels, placeholders = annotation_to_label_map(results, {"road": 0, "car": 1}, mask.shape, 255)
    np.testing.assert_array_equal(labels, np.where(mask, 1, 255))
    assert placeholders == 1
    assert 'value="a &amp; b"' in label_config(["a & b"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r["value"].update(rle=[1, 2, 3]), "declares"),
        (lambda r: r["value"].update(rle=[*r["value"]["rle"][:6], 300]), "not a list of bytes"),
        (lambda r: r["value"].update(rle=r["value"]["rle"][:8]), "malformed RLE"),
        (lambda r: r["value"].update(brushlabels=[]), "exactly one label"),
        (lambda r: r.update(original_width=10**9), "bad size"),
    ],
)
def test_malformed_brush_regions_are_input_errors(change, message) -> None:
    result = mask_to_result(np.eye(20, dtype=bool))
    change(result)
    with pytest.raises(InputError, match=message):
        result_to_mask(result)


def test_outbox_keys_claims_and_counters(tmp_path) -> None:
    box = Outbox(tmp_path / "outbox.sqlite")
    item, new = box.add("k1", "r1", {"data": {}})
    assert new and item.state == "pending"
    assert box.add("k1", "r2", {"data": {"other": 1}})[1] is False  # a key is stored once
    assert box.claim("k1") and not box.claim("k1")  # one deliverer at a time
    box.failed("k1", "down")
    assert box.get("k1").last_error == "down" and box.depth() == 1
    assert box.claim("k1")
    box.delivered("k1", 42)
    assert box.depth() == 0 and not box.claim("k1") and box.awaiting_annotation() == 1
    box.record_label(7, 42, "t1", "stem")
    assert box.label_synced(7, "t1") and not box.label_synced(7, "t2")
    assert box.awaiting_annotation() == 0
    assert not box.take_retrain(2)
    box.record_label(8, 43, "t1", "stem2")
    assert not box.take_retrain(0) and not box.take_retrain(-1)  # 0: never; the count is kept
    assert box.take_retrain(2) and not box.take_retrain(2)  # the counter was reset
    aerial = "aerial_labels_since_retrain"  # aerial tiles count apart
    box.record_label(9, 44, "t1", "tile1", aerial)
    box.record_label(10, 45, "t1", "tile2", None)  # rewritten unchanged: not counted
    box.record_label(11, 46, "t1", "tile3", aerial)
    assert box.label_synced(10, "t1") and box.awaiting_annotation() == 0
    assert box.synced_stem(10, "t1") == "tile2" and box.synced_stem(10, "t0") is None
    assert not box.take_retrain(3, aerial) and not box.take_retrain(1)
    box.record_label(11, 46, "t2", "tile3", aerial)  # an edited label counts again
    assert box.take_retrain(3, aerial) and not box.take_retrain(1, aerial)
    box.tiles_sent([("aerial:a", 50), ("aerial:b", 51)])
    box.tiles_sent([("aerial:a", 50)])  # sent again (a duplicate): one row
    assert box.tiles_awaiting() == 2
    box.record_label(12, 51, "t1", "tile4", aerial)
    assert box.tiles_awaiting() == 1 and box.awaiting_tasks("tiles") == {50}
    box.tasks_gone([50])  # deleted in Label Studio: no longer awaited
    assert box.tiles_awaiting() == 0 and box.awaiting_tasks("tiles") == set()
    box.reject(30, 70, "t1", "unknown class 'unicorn'")
    box.reject(31, 70, "t1", "no pixel labelled")  # a newer annotation of the task: replaces it
    box.reject(32, 0, "t1", "no task id")  # (an unknown task never merges with another)
    box.reject(33, 0, "t1", "no task id either")
    count, reasons = box.rejections(10)
    assert count == 3 and sorted(reasons) == ["task 0: no task id", "task 0: no task id either",
                                              "task 70: no pixel labelled"]
    box.record_label(34, 70, "t1", "fixed")  # a good label of the task clears its refusal
    assert box.rejections(10)[0] == 2 and sorted(box.refused_ids()) == [32, 33]
    box.forget_refusal(32)
    assert box.refused_ids() == [33]
    with pytest.raises(ValueError, match="no task table"):
        box.awaiting_tasks("labels; DROP TABLE items")


def test_outbox_claims_are_exclusive_across_threads(tmp_path) -> None:
    box = Outbox(tmp_path / "outbox.sqlite")
    box.add("k", "r", {})
    wins: list[bool] = []
    threads = [threading.Thread(target=lambda: wins.append(box.claim("k"))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(wins) == [False] * 7 + [True]


def test_request_validation(stack_env: Project) -> None:
    request = make_request(stack_env, n_queries=1)
    assert parse_request(request).queries[0].name == "q1.png"
    assert parse_request(request).class_name == "object"  # none named: the annotator chooses
    assert parse_request({**request, "class_name": " Traffic  Light"}).class_name == "traffic_light"
    outside = stack_env.root / "params.yaml"
    bad = [
        ("not a dict", "must be an object"),
        ({**request, "support": []}, "'support' must list"),
        ({**request, "queries": "q.png"}, "'queries' must list"),
        ({**request, "queries": [str(outside)]}, "outside the uploads folder"),
        ({**request, "queries": [str(stack_env.uploads / ".." / "params.yaml")]}, "outside"),
        ({**request, "queries": [str(stack_env.uploads / "missing.png")]}, "file not found"),
        ({**request, "queries": [7]}, "expected a file path"),
        ({**request, "support": [{"image": request["queries"][0]}]}, "support 1 mask"),
        ({**request, "threshold": 1.5}, "between 0 and 1"),
        ({**request, "threshold": "0.5"}, "a number or null"),
        ({**request, "model": ""}, "model spec string"),
        ({**request, "class_name": "<b>"}, "class name"),
        ({**request, "class_name": 7}, "must be text"),
    ]
    for payload, message in bad:
        with pytest.raises(InputError, match=message):
            parse_request(payload)


def _job(threshold: float, root) -> SegmentJob:
    """The segment job of the test project, with ``review.confidence_threshold`` set."""
    params = root / "job-params.yaml"
    params.write_text(PARAMS_FILE.read_text().replace("review:",
                      f"review:\n  confidence_threshold: {threshold}", 1))  # fmt: skip
    return SegmentJob(ModelHolder(serving_config()), params=params)


def test_segment_in_process_writes_records_and_rejects_bad_images(stack_env: Project) -> None:
    request = make_request(stack_env, n_queries=2)
    job = _job(2.0, stack_env.root)  # everything needs review
    seen = []
    outcome = job.run(request, lambda f, d: seen.append((f, d)))
    reply = outcome.reply
    assert [r["needs_review"] for r in reply["results"]] == [True, True]
    assert [i.result_id for i in outcome.review] == [r["id"] for r in reply["results"]]
    for item in outcome.review:  # review items carry the masks still in memory
        np.testing.assert_array_equal(item.mask, store.read_mask(item.result_id))
        assert item.key == f"{item.query_sha256[:32]}:{reply['model_version']}"  # no class named
    assert seen[0] == (0.0, "loading the model") and seen[-1] == (1.0, "done")
    meta = store.read_meta(reply["results"][0]["id"])
    assert meta["support"][0]["image_sha256"] == file_sha256(request["support"][0]["image"])
    assert set(meta) == {"id", "query", "query_sha256", "support", "model_version", "model_spec",
                         "class_name", "notice", "threshold", "confidence", "needs_review",
                         "height", "width", "memory", "created"}  # fmt: skip
    assert reply["class_name"] == meta["class_name"] == "object"
    named = job.run({**request, "class_name": "Pedestrian"})
    assert named.reply["class_name"] == "pedestrian"
    assert {r["id"] for r in named.reply["results"]}.isdisjoint(r["id"] for r in reply["results"])
    item = named.review[0]
    assert item.class_name == "pedestrian"
    assert item.key == f"{item.query_sha256[:32]}:pedestrian:{named.reply['model_version']}"
    version = named.reply["model_version"]
    assert item.context == f"confidence {item.confidence:.2f} · model {version}"
    assert item.supports == [(request["support"][0]["image"], request["support"][0]["mask"])]
    sheet = item.support_sheet(height=60)
    assert sheet.shape[0] == 60 and sheet.dtype == np.uint8
    strict = _job(0.0, stack_env.root).run({**request, "threshold": 0.9})
    assert {r["id"] for r in strict.reply["results"]}.isdisjoint(r["id"] for r in reply["results"])
    assert strict.review == []
    corrupt = stack_env.uploads / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(InputError, match=r"corrupt\.png"):
        job.run({**request, "queries": [str(corrupt)]})
    img, _ = blob(40, 50, seed=9)
    small = upload(stack_env, "wrong-size", img, np.ones((30, 30), bool))
    with pytest.raises(InputError, match="mask is 30x30"):
        job.run({**request, "support": [small]})
    with pytest.raises(InputError, match="not a result id"):
        store.read_meta("../../etc")


def test_upload_names_carry_their_hash(stack_env: Project, tmp_path) -> None:
    from serving.uploads import store_bytes

    stored = store_bytes(b"some image bytes", ".png")
    assert stored.parent == stack_env.uploads and content_sha256(stored) == stored.stem
    stored.write_bytes(b"changed")  # the name is trusted: the web app wrote it by content
    assert content_sha256(stored) == stored.stem != file_sha256(stored)
    other = tmp_path / stored.name  # the same name outside the uploads folder is hashed
    other.write_bytes(b"changed")
    assert content_sha256(other) == file_sha256(other)
    plain = stack_env.uploads / "q1-copy.png"
    plain.write_bytes(b"x")
    assert content_sha256(plain) == file_sha256(plain)


def test_missing_champion_falls_back_to_prototype_with_a_notice(
    stack_env: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{stack_env.root / 'empty-mlflow.db'}")
    cfg = serving_config()
    champion = ServingConfig(model="models:/dinoseg-segmenter@champion", backbone=cfg.backbone,
                             image_size=cfg.image_size)  # fmt: skip
    holder = ModelHolder(champion)
    served = holder.get()
    assert served.model_version == "prototype"
    assert served.notice and "champion" in served.notice and "prototype" in served.notice
    assert holder.get().predictor is served.predictor  # built once per process
    assert holder.last_version == "prototype"
    assert review_config().retrain_after == 2  # the test project's params.yaml is read


def test_a_delivered_task_warms_the_ml_backend(monkeypatch) -> None:
    import http.server
    import json as _json

    from workers.labelstudio.review import warm_ml_backend

    seen: list[dict] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen.append({"path": self.path, **_json.loads(body)})
            self.send_response(202)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.handle_request, daemon=True)
    thread.start()
    monkeypatch.setenv("DINOSEG_ML_BACKEND_URL", f"http://127.0.0.1:{server.server_port}")
    assert warm_ml_backend("/data/local-files/?d=uploads/x.png")
    thread.join(5)
    server.server_close()
    assert seen == [{"path": "/warm", "image": "/data/local-files/?d=uploads/x.png"}]
    assert not warm_ml_backend("/x.png")  # nothing listens any more: ignored, no error


def test_embedded_broker_is_consumed_with_a_short_poll(tmp_path) -> None:
    """The worker reads the SQLite broker through workers.broker.Transport (kombu's 1 s poll of
    an empty queue delayed every task); a message sent by the web app's plain ``sqla`` client
    is read back through it; a Redis broker is left as it is."""
    from dinoseg import runtime
    from webapp.backends.celery import client_app
    from workers.app import make_app
    from workers.broker import POLL_S, Transport

    env = {"DINOSEG_HOME": str(tmp_path / "home")}
    worker = make_app(env)
    with worker.connection_for_read() as conn:
        assert isinstance(conn.transport, Transport) and conn.transport.polling_interval == POLL_S
    client = client_app(runtime.broker_url(env), runtime.result_backend(env))
    with client.connection_for_write() as conn:
        conn.SimpleQueue("probe").put({"n": 1})
    with worker.connection_for_read() as conn:
        assert conn.SimpleQueue("probe").get(timeout=5).payload == {"n": 1}
    redis = make_app({**env, "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0"}).conf
    assert redis.broker_url == "redis://127.0.0.1:6379/0" and not redis.broker_transport


def test_beat_pulls_both_review_projects_and_flushes_the_outbox() -> None:
    """Every periodic entry names a task the worker has: segment reviews and the annotators'
    aerial tiles are both pulled on the review period, so labels reach the pipelines unasked."""
    import workers.tasks  # noqa: F401  (registers the tasks on the app)
    from workers.app import app, beat_schedule

    schedule = beat_schedule(60.0, 30.0)
    assert {e["task"] for e in schedule.values()} == {
        "dinoseg.sync_annotations", "dinoseg.sync_aerial_annotations", "dinoseg.flush_outbox"}
    assert all(e["task"] in app.tasks for e in schedule.values())
    assert schedule["sync-aerial-annotations"]["schedule"] == 60.0

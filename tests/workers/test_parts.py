"""The workers' parts without services: RLE, outbox, request validation, results store, models."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from dinoseg.io import InputError
from tests.workers.conftest import Project, blob, make_request, upload
from workers import store
from workers.config import WorkerConfig, review_config, worker_config
from workers.labelstudio.convert import (
    PLACEHOLDER,
    annotation_to_label_map,
    label_config,
    mask_to_result,
    result_to_mask,
)
from workers.labelstudio.outbox import Outbox
from workers.models import ModelHolder
from workers.segment import parse_request, run_segment


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
    assert box.take_retrain(2) and not box.take_retrain(2)  # the counter was reset


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
    ]
    for payload, message in bad:
        with pytest.raises(InputError, match=message):
            parse_request(payload)


def test_segment_in_process_writes_records_and_rejects_bad_images(stack_env: Project) -> None:
    holder = ModelHolder(worker_config())
    request = make_request(stack_env, n_queries=2)
    reply = run_segment(request, holder, review_threshold=2.0)  # everything needs review
    assert [r["needs_review"] for r in reply["results"]] == [True, True]
    meta = store.read_meta(reply["results"][0]["id"])
    assert meta["support"][0]["image_sha256"] == store.file_sha256(request["support"][0]["image"])
    strict = run_segment({**request, "threshold": 0.9}, holder, review_threshold=0.0)
    assert {r["id"] for r in strict["results"]}.isdisjoint(r["id"] for r in reply["results"])
    corrupt = stack_env.uploads / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(InputError, match=r"corrupt\.png"):
        run_segment({**request, "queries": [str(corrupt)]}, holder, review_threshold=0.5)
    img, _ = blob(40, 50, seed=9)
    small = upload(stack_env, "wrong-size", img, np.ones((30, 30), bool))
    with pytest.raises(InputError, match="mask is 30x30"):
        run_segment({**request, "support": [small]}, holder, review_threshold=0.5)
    with pytest.raises(InputError, match="not a result id"):
        store.read_meta("../../etc")


def test_missing_champion_falls_back_to_prototype_with_a_notice(
    stack_env: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{stack_env.root / 'empty-mlflow.db'}")
    cfg = worker_config()
    champion = WorkerConfig(model="models:/dinoseg-segmenter@champion", backbone=cfg.backbone,
                            image_size=cfg.image_size)  # fmt: skip
    holder = ModelHolder(champion)
    served = holder.get()
    assert served.model_version == "prototype"
    assert served.notice and "champion" in served.notice and "prototype" in served.notice
    assert holder.get().predictor is served.predictor  # built once per process
    assert holder.last_version == "prototype"
    assert review_config().retrain_after == 2  # the test project's params.yaml is read

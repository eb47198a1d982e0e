"""The page's handlers, called as Gradio calls them (no server), on the in-process backend."""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from dinoseg.io import InputError
from tests.webapp.conftest import editor_value, no_slots
from webapp.app import build_app
from webapp.backends import BackendError
from webapp.callbacks import DemoCallbacks, status_markdown


def _run(cb, blobs, *, model="prototype", threshold=0.5, queries=None, **kw):
    return cb.run(
        model, threshold, blobs["queries"] if queries is None else queries,
        [editor_value(blobs["image"], blobs["mask"]), *no_slots()], [None] * 4, **kw,
    )  # fmt: skip


def test_run_shows_every_query_and_stores_records(tiny_backend, blobs, home):
    cb = DemoCallbacks(tiny_backend)
    progress = []
    shown = _run(cb, blobs, report=lambda f, d: progress.append((f, d)))
    assert [v["name"] for v in shown.views] == ["query1.png", "query2.png"]
    assert [row[0] for row in shown.table] == ["query1.png", "query2.png"]
    assert progress[-1] == (1.0, "done") and any("1-2 of 2" in d for _, d in progress)
    for view, (overlay, caption), download in zip(
        shown.views, shown.gallery, shown.all_masks, strict=True
    ):
        record = home / "results" / view["id"]
        meta = json.loads((record / "meta.json").read_text())
        assert meta["model_version"] == "prototype" and meta["threshold"] == 0.5
        assert len(view["id"]) == 24 and meta["needs_review"] == view["needs_review"]
        assert _pixels(overlay).shape == (84, 112, 3) and view["name"] in caption
        assert Path(download).name == view["name"].replace(".png", "_mask.png")
        saved = np.asarray(Image.open(download))
        assert saved.shape == (84, 112) and set(np.unique(saved)) <= {0, 255}
        np.testing.assert_array_equal(saved, np.asarray(Image.open(record / "mask.png")))
        assert 0.0 <= view["confidence"] <= 1.0
    over, mask, heat, summary, download, selected = shown.detail
    assert selected == 0 and "query1.png" in summary and "Confidence" in summary
    assert _pixels(over).shape == _pixels(heat).shape == (84, 112, 3)
    assert _pixels(mask).shape == (84, 112) and over == shown.gallery[0][0]  # drawn once
    assert download == shown.all_masks[0]
    # inputs are stored once, by content
    uploads = sorted(p.name for p in (home / "uploads").iterdir())
    assert len(uploads) == 4 and all(len(Path(n).stem) == 64 for n in uploads)
    _run(cb, blobs)
    assert len(list((home / "uploads").iterdir())) == 4


def _pixels(path: str) -> np.ndarray:
    """A file the page shows, as its pixels."""
    with Image.open(path) as img:
        return np.asarray(img)


def test_threshold_changes_the_mask(tiny_backend, blobs):
    cb = DemoCallbacks(tiny_backend)
    low = _run(cb, blobs, threshold=0.05).views[0]
    high = _run(cb, blobs, threshold=0.95).views[0]
    assert low["coverage"] > high["coverage"]
    assert low["id"] != high["id"]


def test_bad_input_is_a_message_not_a_traceback(tiny_backend, blobs):
    cb = DemoCallbacks(tiny_backend)
    with pytest.raises(gr.Error, match="Support 1: no mask drawn") as err:
        cb.run("prototype", 0.5, blobs["queries"], [editor_value(blobs["image"]), *no_slots()],
               [None] * 4)  # fmt: skip
    assert err.value.print_exception is False
    with pytest.raises(gr.Error, match="no query image"):
        _run(cb, blobs, queries=[])
    with pytest.raises(gr.Error, match="no such checkpoint directory"):
        _run(cb, blobs, model="/nowhere/ckpt")


def test_unexpected_failure_is_one_line(blobs):
    class Broken:
        kind = "local"

        def segment(self, request, report):
            raise ZeroDivisionError("boom")

    with pytest.raises(gr.Error, match=r"Something went wrong on the server \(ZeroDivisionError\)"):
        _run(DemoCallbacks(Broken()), blobs)  # type: ignore[arg-type]


def test_champion_falls_back_to_the_prototype_with_a_notice(tiny_backend, blobs, monkeypatch):
    def no_champion(spec):
        raise InputError("no champion yet — run `dvc repro`")

    monkeypatch.setattr("serving.models.resolve_model_spec", no_champion)
    shown = _run(DemoCallbacks(tiny_backend), blobs, model=None)
    assert shown.notice == ("no champion yet — run `dvc repro` — serving the prototype model "
                            "instead")  # fmt: skip
    assert shown.views[0]["model_version"] == "prototype"


def test_select_shows_the_clicked_result(tiny_backend, blobs):
    cb = DemoCallbacks(tiny_backend)
    views = _run(cb, blobs).views
    detail = cb.select(views, 1)
    assert detail.selected == 1 and "query2.png" in detail.summary
    assert cb.select(views, 7).selected is None and cb.select([], 0).overlay is None


class FakeWorkers:
    """A backend answering like the workers (queue + status)."""

    kind = "celery"

    def __init__(self, tiny_backend, reply):
        self.local, self.reply, self.sent = tiny_backend, reply, []

    def segment(self, request, report):
        return self.local.segment(request, report)

    def queue_for_review(self, result_id):
        self.sent.append(result_id)
        return self.reply

    def status(self):
        return {"model_version": "7", "review_queue_depth": 3, "outbox_depth": 1,
                "aerial_queue_depth": 2, "label_studio_url": "http://127.0.0.1:8080"}  # fmt: skip


@pytest.mark.parametrize(
    ("reply", "text"),
    [
        ({"status": "queued", "task_id": 12}, "sent to Label Studio (task 12)"),
        ({"status": "duplicate", "task_id": 12}, "already in the review queue"),
        ({"status": "outbox", "task_id": None}, "saved in the outbox"),
    ],
)
def test_send_to_annotators(tiny_backend, blobs, reply, text):
    workers = FakeWorkers(tiny_backend, reply)
    cb = DemoCallbacks(workers)  # type: ignore[arg-type]
    views = _run(cb, blobs).views
    assert text in cb.send_to_annotators(views, 1)
    assert workers.sent == [views[1]["id"]]
    status = cb.status()
    assert "`7`" in status and "3 task(s) (+1 waiting in the outbox)" in status
    assert "aerial review 2 tile(s)" in status
    with pytest.raises(gr.Error, match="no result selected"):
        cb.send_to_annotators([], None)


def test_without_workers_send_and_status_degrade(tiny_backend, blobs):
    cb = DemoCallbacks(tiny_backend)
    views = _run(cb, blobs).views
    with pytest.raises(gr.Error, match="needs the workers"):
        cb.send_to_annotators(views, 0)
    status = cb.status()
    assert "in-process" in status and "`prototype`" in status

    class Down:
        kind = "celery"

        def status(self):
            raise BackendError("no answer from the workers after 8 s")

    assert "not answering — no answer from the workers" in DemoCallbacks(Down()).status()  # type: ignore[arg-type]


def test_status_markdown_links_label_studio():
    md = status_markdown({"model_version": None, "review_queue_depth": 0,
                          "label_studio_url": "http://127.0.0.1:8081"})  # fmt: skip
    assert "[http://127.0.0.1:8081](http://127.0.0.1:8081)" in md and "none loaded yet" in md


def test_app_builds_with_offline_examples(tiny_backend):
    demo = build_app(tiny_backend)
    page = demo.page
    assert len(page.editors) == 4 and len(page.mask_files) == 4
    editor = page.editors[0]
    assert editor.type == "numpy" and editor.image_mode == "RGBA"
    examples = [b for b in demo.blocks.values() if isinstance(b, gr.Dataset)]
    assert examples and len(examples[0].samples) >= 1
    assert demo.page.run.elem_id == "run"


def test_offline_examples_are_built_once_and_run(tiny_backend, tmp_path):
    from dinoseg.io import load_image, load_mask
    from webapp.examples import build_examples

    found = build_examples(tmp_path / "ex")
    assert [e.title.split(":")[0] for e in found] == ["Big cats", "Sky"]
    cats, sky = found
    cat_mask = load_mask(cats.mask)
    assert cat_mask.shape == (343, 502) and 0.05 < cat_mask.mean() < 0.15  # the drawn cheetah
    assert 0.5 < load_mask(sky.mask).mean() < 0.7  # the sky around the tower
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "ex").iterdir()}
    build_examples(tmp_path / "ex")
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "ex").iterdir()} == stamps
    image = load_image(cats.support)
    shown = DemoCallbacks(tiny_backend).run(
        "prototype", 0.5, [str(q) for q in cats.queries],
        [editor_value(image), *no_slots()], [str(cats.mask), None, None, None],
    )  # fmt: skip
    assert [v["name"] for v in shown.views] == ["lion.jpg", "cheetah1.jpg"]


def test_nothing_is_built_at_import(tmp_path):
    import subprocess
    import sys

    env = {"DINOSEG_CACHE": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"}
    code = "import webapp.examples, webapp.cli, webapp.serve"
    subprocess.run([sys.executable, "-c", code], check=True, env=env,
                   cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    assert not (tmp_path / "cache").exists()


def test_review_flag_follows_the_params_file(tiny_backbone_dir, blobs, tmp_path):
    from serving.config import ReviewConfig, review_config
    from tests.webapp.conftest import tiny_job
    from webapp.backends.local import LocalBackend

    params = tmp_path / "params.yaml"
    assert review_config(params).confidence_threshold == ReviewConfig().confidence_threshold
    params.write_text("review:\n  confidence_threshold: 0.75\n")
    assert review_config(params).confidence_threshold == 0.75
    backend = LocalBackend(tiny_job(tiny_backbone_dir, params))
    params.write_text("review:\n  confidence_threshold: 1.01\n")  # read per request
    shown = _run(DemoCallbacks(backend), blobs)
    assert all(v["needs_review"] for v in shown.views)
    assert "Low confidence" in shown.detail.summary and shown.table[0][3] == "yes"
    params.write_text("review:\n  confidence_threshold: 0.0\n")
    assert not any(v["needs_review"] for v in _run(DemoCallbacks(backend), blobs).views)


def test_the_class_name_travels_with_the_request(tiny_backend, blobs, home):
    cb = DemoCallbacks(tiny_backend)
    shown = _run(cb, blobs, class_name="  Big Cat ")
    assert {v["class_name"] for v in shown.views} == {"big_cat"}
    assert "big_cat" in shown.detail.summary
    meta = json.loads((home / "results" / shown.views[0]["id"] / "meta.json").read_text())
    assert meta["class_name"] == "big_cat"
    unnamed = _run(cb, blobs)
    assert unnamed.views[0]["class_name"] == "object"
    assert unnamed.views[0]["id"] != shown.views[0]["id"]
    with pytest.raises(gr.Error, match="class name"):
        _run(cb, blobs, class_name="<script>")


def test_class_suggestions_are_the_known_classes(tiny_backend, tmp_path, monkeypatch):
    base = tmp_path / "base"
    labels = tmp_path / "labels"
    for folder, classes in ((base, {"0": "sky", "1": "road"}),
                            (labels, {"0": "sky", "1": "road", "2": "Traffic Light"})):
        folder.mkdir()
        (folder / "classes.json").write_text(json.dumps({"classes": classes}))
    (tmp_path / "params.yaml").write_text(
        f"review:\n  classes_from: {base}\n  labels_dir: {labels}\n")
    monkeypatch.chdir(tmp_path)
    assert DemoCallbacks(tiny_backend).class_choices() == ["sky", "road", "traffic_light"]
    (base / "classes.json").write_text("{broken")
    assert DemoCallbacks(tiny_backend).class_choices() == []  # never breaks the page
    page = build_app(tiny_backend, examples=False).page
    assert page.class_name.allow_custom_value and page.class_name.elem_id == "class-name"

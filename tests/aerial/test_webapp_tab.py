"""The webapp's aerial tab: it builds inside a page, and through the page's backend its job
(the serving layer's, the same one the ``dinoseg.aerial`` worker task runs) makes a city map."""

from __future__ import annotations

import gradio as gr
import numpy as np
import pytest
from aerial_helpers import city_tile
from PIL import Image

from dinoseg.io import InputError
from serving.aerial import aerial_config, run_aerial_job
from webapp.aerial_tab import (
    METHOD_CHOICES,
    AerialCallbacks,
    aerial_request,
    build_aerial_tab,
    default_method,
)


@pytest.fixture
def backend(tmp_path, monkeypatch):
    from serving.config import ServingConfig
    from serving.models import ModelHolder
    from serving.segment import SegmentJob
    from webapp.backends.local import LocalBackend

    monkeypatch.setenv("DINOSEG_HOME", str(tmp_path / "home"))
    job = SegmentJob(ModelHolder(ServingConfig()), params=tmp_path / "no-params.yaml")
    return LocalBackend(job)


def test_tab_builds_with_a_3d_viewer(backend):
    from dinoseg.aerial.build import METHOD_BUILDERS

    with gr.Blocks() as demo, gr.Tab("Aerial"):
        method = build_aerial_tab(backend)
    kinds = {type(b).__name__ for b in demo.blocks.values()}
    assert {"Model3D", "Dataframe", "Image", "Radio", "Checkbox", "Button"} <= kinds
    assert [name for _, name in METHOD_CHOICES] == list(METHOD_BUILDERS)
    assert isinstance(method, gr.Radio) and method.value == "fewshot"


class _Status:
    def __init__(self, reply):
        self.reply = reply

    def status(self):
        if isinstance(self.reply, Exception):
            raise self.reply
        return self.reply


def test_the_method_starts_at_the_servers_default(backend):
    from webapp.callbacks import DemoCallbacks

    def started_on(b) -> str:
        return default_method(DemoCallbacks(b).status_reply()[0])

    assert started_on(backend) == "fewshot"  # nothing registered here
    assert started_on(_Status({"aerial_method": "head"})) == "head"
    assert started_on(_Status({"aerial_method": "bogus"})) == "fewshot"
    assert started_on(_Status({})) == "fewshot"  # an older worker
    assert started_on(_Status(TimeoutError("down"))) == "fewshot"


def test_the_page_reads_the_status_once_on_load_for_panel_and_method(backend):
    from webapp.app import build_app

    calls = []
    status = backend.status
    backend.status = lambda: calls.append(1) or {**status(), "aerial_method": "head"}
    demo = build_app(backend, examples=False)
    loads = [f for f in demo.fns.values() if f.api_name == "status_on_load"]
    assert len(loads) == 1
    assert [type(o).__name__ for o in loads[0].outputs] == ["Markdown", "Radio"]
    panel, radio = loads[0].fn()
    assert "in-process" in panel and radio.value == "head" and calls == [1]


def test_job_writes_map_stats_and_model(backend, tmp_path):
    image, _ = city_tile(84, 112, seed=3)
    Image.fromarray(image).save(tmp_path / "photo.png")
    seen = []
    summary, map_path, rows, glb, paths = AerialCallbacks(backend).make_city_map(
        str(tmp_path / "photo.png"), None, None, "kmeans", False, 112, 3, 0.5, 10.0,
        report=lambda f, d: seen.append((f, d)),
    )  # fmt: skip
    assert np.asarray(Image.open(map_path)).shape[1] > 112
    assert map_path.startswith(str(tmp_path / "home" / "results" / "aerial"))
    assert [r[0] for r in rows][:3] == ["cluster 0", "cluster 1", "cluster 2"]
    assert sum(r[1] for r in rows) == pytest.approx(100, abs=0.1)
    assert glb.endswith("city.glb") and len(paths) == 5 and "kmeans" in summary
    assert seen[0] == (None, "loading the model") and seen[-1][1].startswith("segment: ")
    assert seen[-1][0] == 1.0
    # the photo was stored in the uploads folder by content, like segmentation inputs
    stored = list((tmp_path / "home" / "uploads").iterdir())
    assert len(stored) == 1 and len(stored[0].stem) == 64


def test_request_errors_are_clear(backend, tmp_path):
    with pytest.raises(InputError, match="upload an aerial photo"):
        aerial_request(None, None, None, "fewshot", False)
    with pytest.raises(InputError, match=r"fewshot needs at least one annotated tile .* head .*"
                       r"and kmeans .* need none"):
        aerial_request(str(tmp_path / "x.png"), None, None, "fewshot", False)
    with pytest.raises(InputError, match="one mask each"):
        aerial_request(str(tmp_path / "x.png"), ["a.png"], [], "fewshot", False)
    Image.fromarray(city_tile(56, 70)[0]).save(tmp_path / "p.png")
    request = aerial_request(str(tmp_path / "p.png"), None, None, "head", False, head_views=8)
    assert request["config"]["head_views"] == 8  # the page's slider reaches the job's config
    assert "head_adapt_steps" not in request["config"]  # on: the configured steps
    off = aerial_request(str(tmp_path / "p.png"), None, None, "head", False, adapt=False)
    assert off["config"]["head_adapt_steps"] == 0  # the page's checkbox switches it off
    assert "head_scales" not in request["config"]  # one scale unless asked
    fine = aerial_request(str(tmp_path / "p.png"), None, None, "head", False, fine=True)
    assert aerial_config(fine["config"]).head_scales == (1.0, 1.5)  # the job reads the list
    with pytest.raises(gr.Error, match="upload an aerial photo"):  # the page's one handler
        AerialCallbacks(backend).make_city_map(None, None, None, "kmeans", False, 112, 3, 0.5, 10)


def test_job_refuses_bad_requests(backend, tmp_path):
    uploads = tmp_path / "home" / "uploads"
    uploads.mkdir(parents=True)
    photo = uploads / "photo.png"
    Image.fromarray(city_tile(56, 70)[0]).save(photo)
    Image.fromarray(city_tile(56, 70)[0]).save(tmp_path / "outside.png")
    good = {"image": str(photo), "supports": [], "config": {"method": "kmeans", "tile": 112}}
    bad = [
        ({**good, "image": str(tmp_path / "outside.png")}, "outside the uploads folder"),
        ({**good, "config": {"method": "magic"}}, "unknown method 'magic'"),
        ({**good, "config": {"backbone": "/etc"}}, "unknown config keys"),
        ({**good, "config": {"method": "fewshot"}}, "needs at least one annotated tile"),
        ({**good, "supports": [{"image": str(photo)}]}, "annotated tile 1 mask"),
        ({**good, "config": {"tile": 0}}, "tile must be positive"),
        ({**good, "config": {"method": "head", "head_views": 9}}, "head_views 9: use 1 to 8"),
        ({**good, "config": {"method": "head", "head_scales": [1, 9]}}, "must be between"),
        ({**good, "config": {"method": "head", "head_scales": "fine"}}, "expected tuple"),
        ({**good, "config": {"method": "head", "head_adapt_steps": -1}},
         "head_adapt_steps must be >= 0"),
        ("photo.png", "must be an object"),
    ]
    for request, message in bad:
        with pytest.raises(InputError, match=message):
            run_aerial_job(request, uploads=uploads)
    assert not (tmp_path / "home" / "results").exists()  # nothing half-written


def test_summary_says_when_the_head_adapted_to_the_photo():
    from webapp.aerial_tab import shown

    stats = {"classes": {"land": {"fraction": 1.0, "area_m2": 4.0}},
             "unknown": {"pixels": 0}, "method": "head", "image": {"width": 4, "height": 4},
             "buildings": 0, "seconds_per_megapixel": 1.0}  # fmt: skip
    reply = {"stats": stats, "map": "m.png", "glb": "c.glb", "files": []}
    assert "adapted" not in shown(reply)[0] and "Note" not in shown(reply)[0]
    assert shown({**reply, "notice": "tiles unused"})[0].endswith("*Note: tiles unused.*")
    queued = [{"status": "queued"}, {"status": "queued"}, {"status": "duplicate"}]
    assert shown({**reply, "review_queue": queued})[0].endswith(
        "2 uncertain tiles sent to annotators; 1 already awaiting review (Label Studio's aerial "
        "review project)")
    assert shown({**reply, "review_queue": [{"status": "?"}]})[0] == shown(reply)[0]
    down = [{"status": "not sent", "error": "Label Studio is not answering"}]
    assert shown({**reply, "review_queue": down})[0].endswith(
        "not sent to annotators: Label Studio is not answering")
    stats["adaptation"] = {"adapted": True, "patches": 50, "pseudo_labels": {"land": 30},
                           "loss": 0.1}  # fmt: skip
    assert shown(reply)[0].endswith("adapted to this photo on 30 of 50 patches")

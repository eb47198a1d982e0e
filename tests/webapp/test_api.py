"""The app's programmatic API on a live app (loopback): the README's ``gradio_client`` example,
the endpoints' fixed names, bad API input, and the bounded queue's "busy" answer."""

from __future__ import annotations

import json
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from webapp.app import build_app
from webapp.serve import launch

README = Path(__file__).resolve().parents[2] / "README.md"
EXAMPLE = re.compile(r"<!-- gradio-client-example -->\n```python\n(.*?)```", re.S)


def _free_port() -> int:
    from tests.workers.conftest import free_port

    return free_port()


@pytest.fixture
def live(tiny_backend) -> Iterator[str]:
    demo = build_app(tiny_backend, examples=False)
    launch(demo, port=_free_port(), block=False, quiet=True)
    try:
        yield demo.local_url
    finally:
        demo.close()


@pytest.fixture
def files(blobs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The README example's files in the working directory."""
    Image.fromarray(blobs["image"]).save(tmp_path / "support.jpg", quality=95)
    Image.fromarray(blobs["mask"].astype(np.uint8) * 255).save(tmp_path / "support_mask.png")
    for i, q in enumerate(blobs["queries"], 1):
        Image.open(q).convert("RGB").save(tmp_path / f"q{i}.jpg", quality=95)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_readme_example_runs_against_the_live_app(live, files, home, capsys) -> None:
    code = EXAMPLE.search(README.read_text())
    assert code is not None, "README lost its gradio_client example"
    exec(code.group(1).replace("http://127.0.0.1:7860/", live), {})
    lines = [x for x in capsys.readouterr().out.splitlines() if x.endswith("_mask.png")]
    assert [line.split()[0] for line in lines] == ["q1.jpg", "q2.jpg"]
    for line in lines:
        name, confidence, _, mask = line.split()
        assert 0.0 <= float(confidence) <= 1.0
        png = np.asarray(Image.open(mask))
        assert Path(mask).name == name.replace(".jpg", "_mask.png")
        assert png.shape == (84, 112) and set(np.unique(png)) <= {0, 255}
    assert len(list((home / "results").iterdir())) == 2  # stored like the page's results


def test_public_endpoints_have_fixed_names_and_private_ones_are_hidden(live) -> None:
    from gradio_client import Client

    api = Client(live, verbose=False).view_api(print_info=False, return_format="dict")
    named = set(api["named_endpoints"])
    assert {"/segment", "/review", "/status"} <= named
    assert not named & {"/segment_page", "/select_result", "/send_to_annotators", "/on_run"}
    params = [p["parameter_name"] for p in api["named_endpoints"]["/segment"]["parameters"]]
    assert params == ["support_images", "support_masks", "queries", "class_name", "model",
                      "threshold"]  # fmt: skip


def test_bad_api_input_is_one_clear_message(live, files) -> None:
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    client = Client(live, verbose=False)
    with pytest.raises(AppError, match="1 support images but 0 masks; give one mask per image"):
        client.predict([handle_file("support.jpg")], [], [handle_file("q1.jpg")], "road",
                       "prototype", None, api_name="/segment")  # fmt: skip
    Image.new("L", (112, 84)).save(files / "empty.png")
    with pytest.raises(AppError, match=r"^Support 1: empty\.png: the mask has no foreground"):
        client.predict([handle_file("support.jpg")], [handle_file("empty.png")],
                       [handle_file("q1.jpg")], "road", "prototype", None, api_name="/segment")
    with pytest.raises(AppError, match="is not a result id"):
        client.predict("../etc/passwd", api_name="/review")
    assert "in-process" in client.predict(api_name="/status")


class _Slow:
    """A backend whose ``segment`` waits until released (the queue fills behind it)."""

    kind = "local"

    def __init__(self, local):
        self.local, self.release, self.started = local, threading.Event(), threading.Event()

    def segment(self, request, report):
        self.started.set()
        self.release.wait(60)
        return self.local.segment(request, report)

    def status(self):
        return self.local.status()


def test_a_full_queue_answers_busy_at_once(tiny_backend, files) -> None:
    from gradio_client import Client, handle_file
    from gradio_client.utils import QueueError

    slow = _Slow(tiny_backend)
    demo = build_app(slow, examples=False)  # type: ignore[arg-type]
    launch(demo, port=_free_port(), block=False, quiet=True, max_queue=1)
    try:
        client = Client(demo.local_url, verbose=False)
        args = ([handle_file("support.jpg")], [handle_file("support_mask.png")],
                [handle_file("q1.jpg")], "road", "prototype", None)  # fmt: skip
        running = client.submit(*args, api_name="/segment")
        assert slow.started.wait(60)
        waiting = client.submit(*args, api_name="/segment")  # the one queued place
        _wait_queued(demo)
        with pytest.raises(QueueError, match=r"Queue is full! Please try again\."):
            client.predict(*args, api_name="/segment")
        assert _join_status(demo.local_url) == 503  # what the page turns into "busy, try again"
        slow.release.set()
        assert running.result(timeout=120)[0]["results"] and waiting.result(timeout=120)
    finally:
        slow.release.set()
        demo.close()


def _wait_queued(demo, timeout: float = 30.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while len(demo._queue) < 1:  # the waiting request is in the queue
        assert time.monotonic() < deadline, "the second request never queued"
        time.sleep(0.05)


def _join_status(url: str) -> int:
    """HTTP status of a raw ``queue/join`` for the status endpoint (any endpoint is refused)."""
    body = json.dumps({"data": [], "fn_index": 0, "session_hash": "busytest", "event_data": None,
                       "trigger_id": None}).encode()  # fmt: skip
    req = urllib.request.Request(url.rstrip("/") + "/gradio_api/queue/join", body,
                                 {"Content-Type": "application/json"})  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)

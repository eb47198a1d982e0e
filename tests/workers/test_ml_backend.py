"""dinoseg as Label Studio's ML backend, called by the real Label Studio 1.23 (loopback only).

The backend runs in this process (a werkzeug server thread, tiny random DINOv2); Label Studio
calls it the way the labelling page does: ``POST /api/ml/<id>/interactive-annotating`` for a
smart keypoint or rectangle, the "Retrieve predictions" action for pre-annotation.
"""

from __future__ import annotations

import hashlib
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from PIL import Image

from dinoseg.backbone import DinoBackbone
from dinoseg.interactive import Box, Click, InteractiveConfig, InteractiveEngine
from dinoseg.io import load_image
from dinoseg.predictor import load_predictor
from tests.conftest import tiny_dinov2
from tests.workers.conftest import LabelStudioServer, Project, blob, upload
from workers.labelstudio import client as ls
from workers.labelstudio.convert import result_to_mask
from workers.labelstudio.ml_backend import Backend, create_app
from workers.labelstudio.ml_serve import ensure_ml_backend
from workers.labelstudio.preannotate import ExamplePreannotator

TITLE = "dinoseg ml backend test"
H, W = 72, 96


@dataclass
class MLServer:
    url: str
    backend: Backend
    engine: InteractiveEngine
    preannotate: ExamplePreannotator
    events: list[tuple[str, Any]]


def write_examples(root: Path) -> Path:
    """A dataset folder with three labelled 'car' images (class 1 on road = 0)."""
    for sub in ("train/images", "train/masks"):
        (root / sub).mkdir(parents=True)
    (root / "classes.json").write_text(json.dumps({"classes": {"0": "road", "1": "car"},
                                                   "ignore_index": 255}))  # fmt: skip
    for i in range(3):
        image, mask = blob(H, W, 10 + i)
        Image.fromarray(image).save(root / "train/images" / f"ex{i}.png")
        Image.fromarray(mask.astype(np.uint8)).save(root / "train/masks" / f"ex{i}.png")
    return root


@pytest.fixture(scope="module")
def ml(project: Project, labelstudio: LabelStudioServer, tmp_path_factory) -> Iterator[MLServer]:
    from werkzeug.serving import make_server

    engine = InteractiveEngine(DinoBackbone(tiny_dinov2(), (2,), spec="tiny"),
                               InteractiveConfig(image_size=112))  # fmt: skip
    examples = write_examples(tmp_path_factory.mktemp("examples") / "labels")
    pre = ExamplePreannotator([examples], lambda: load_predictor(
        "prototype", backbone=str(project.root / "tiny-dinov2"), image_size=112))  # fmt: skip
    events: list[tuple[str, Any]] = []
    ls_at = (project.env["LABEL_STUDIO_URL"], project.env["LABEL_STUDIO_API_KEY"])
    backend = Backend(lambda: engine, pre, model_version=lambda: "ml-test", label_studio=ls_at,
                      on_annotation=lambda action, data: events.append((action, data)))  # fmt: skip
    server = make_server("127.0.0.1", 0, create_app(backend), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield MLServer(f"http://127.0.0.1:{server.server_port}", backend, engine, pre, events)
    finally:
        server.shutdown()


@pytest.fixture
def setup(stack_env: Project, labelstudio: LabelStudioServer, ml: MLServer) -> dict[str, Any]:
    """The test project (our labelling config) with the backend connected: ids and client."""
    client = labelstudio.client()
    project = ls.ensure_project(client, TITLE, ["road", "car"])
    backend_id = ensure_ml_backend(client, project, ml.url, "dinoseg")
    return {"client": client, "project": project, "ml": backend_id}


def auth(server: LabelStudioServer) -> dict[str, str]:
    return {"Authorization": f"Token {server.env['LABEL_STUDIO_API_KEY']}"}


def ls_post(server: LabelStudioServer, path: str, body: dict) -> dict:
    reply = requests.post(server.env["LABEL_STUDIO_URL"] + path, json=body, timeout=60,
                          headers=auth(server))  # fmt: skip
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


def keypoint(x: float, y: float, positive: bool = True, label: str = "car") -> dict:
    return {"type": "keypointlabels", "from_name": "click", "to_name": "image",
            "original_width": W, "original_height": H, "is_positive": positive,
            "value": {"x": 100 * x / W, "y": 100 * y / H, "width": 0.5,
                      "keypointlabels": [label]}}  # fmt: skip


def rectangle(box: Box, label: str = "car") -> dict:
    return {"type": "rectanglelabels", "from_name": "box", "to_name": "image",
            "original_width": W, "original_height": H,
            "value": {"x": 100 * box.x0 / W, "y": 100 * box.y0 / H,
                      "width": 100 * (box.x1 - box.x0) / W, "height": 100 * (box.y1 - box.y0) / H,
                      "rotation": 0, "rectanglelabels": [label]}}  # fmt: skip


def interactive(server: LabelStudioServer, setup: dict, task: int, regions: list[dict]) -> dict:
    return ls_post(server, f"/api/ml/{setup['ml']}/interactive-annotating",
                   {"task": task, "context": {"result": regions}})  # fmt: skip


@dataclass
class Task:
    id: int
    path: Path
    mask: np.ndarray


def new_task(stack_env: Project, setup: dict, name: str, seed: int, **data: str) -> Task:
    """A task whose image is a blob in the uploads folder (``data``: more task data)."""
    image, mask = blob(H, W, seed)
    path = Path(upload(stack_env, name, image)["image"])
    task = {"image": ls.image_url(path), **data}
    reply = setup["client"].projects.import_tasks(setup["project"], request=[task],
                                                  return_task_ids=True)  # fmt: skip
    return Task(int(reply.task_ids[0]), path, mask)


def direct(ml: MLServer, path: Path, clicks: list[Click], box: Box | None = None) -> np.ndarray:
    """What the engine answers for the image file itself (no Label Studio in between)."""
    session = ml.engine.session(hashlib.sha256(path.read_bytes()).hexdigest(),
                                lambda: load_image(path))  # fmt: skip
    return ml.engine.segment(session, clicks, box)


def region_mask(reply: dict) -> tuple[np.ndarray, str]:
    assert "errors" not in reply, reply
    (region,) = reply["data"]["result"]
    assert (region["from_name"], region["to_name"], region["type"]) == ("mask", "image",
                                                                        "brushlabels")  # fmt: skip
    return result_to_mask(region)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_connected_to_the_project_as_an_interactive_backend(setup, ml, labelstudio) -> None:
    client, project = setup["client"], setup["project"]
    (backend,) = client.ml.list(project=project)
    assert backend.id == setup["ml"] and backend.is_interactive and backend.url == ml.url
    assert backend.state == "CO"  # Label Studio's health check and /setup passed
    assert ensure_ml_backend(client, project, ml.url, "dinoseg") == setup["ml"]  # idempotent
    assert client.projects.get(id=project).model_version in ("", None)  # not the backend title
    config = client.projects.get(id=project).label_config
    assert 'smart="true"' in config and ls.config_labels(config) == ["road", "car"]


def test_click_to_mask_through_label_studio(setup, stack_env, ml, labelstudio) -> None:
    task = new_task(stack_env, setup, "click", seed=1, class_name="car")
    ys, xs = np.nonzero(task.mask)
    first = Click(float(xs.mean()), float(ys.mean()))
    mask, label = region_mask(interactive(labelstudio, setup, task.id,
                                          [keypoint(first.x, first.y)]))  # fmt: skip
    assert label == "car" and iou(mask, task.mask) > 0.6
    np.testing.assert_array_equal(mask, direct(ml, task.path, [first]))
    corner = Click(float(xs.min()) + 1.5, float(ys.min()) + 1.5, positive=False)
    two, _ = region_mask(interactive(labelstudio, setup, task.id, [
        keypoint(first.x, first.y), keypoint(corner.x, corner.y, positive=False)]))  # fmt: skip
    np.testing.assert_array_equal(two, direct(ml, task.path, [first, corner]))
    assert not two[corner.pixel((H, W))] and two.sum() < mask.sum()


def test_rectangle_through_label_studio(setup, stack_env, ml, labelstudio) -> None:
    task = new_task(stack_env, setup, "rect", seed=2)
    ys, xs = np.nonzero(task.mask)
    box = Box(float(xs.min()) - 4, float(ys.min()) - 4, float(xs.max()) + 5, float(ys.max()) + 5)
    mask, _ = region_mask(interactive(labelstudio, setup, task.id, [rectangle(box)]))
    assert iou(mask, task.mask) > 0.6
    np.testing.assert_array_equal(mask, direct(ml, task.path, [], Box(
        box.x0, box.y0, box.x1, box.y1)))  # fmt: skip


def _retrieve(server: LabelStudioServer, setup: dict, task: int) -> None:
    ls_post(server, f"/api/dm/actions?id=retrieve_tasks_predictions&project={setup['project']}",
            {"selectedItems": {"all": False, "included": [task]}})  # fmt: skip


def test_retrieve_predictions_on_hand_imported_tasks(setup, stack_env, ml, labelstudio) -> None:
    """Tasks with only an image (and a class) import, open and get a pre-annotation of their
    class from the class's labelled examples."""
    client = setup["client"]
    named = new_task(stack_env, setup, "hand-car", seed=3, class_name="car")
    bare = new_task(stack_env, setup, "hand-bare", seed=4)
    assert set(client.tasks.get(id=bare.id).data) == {"image"}  # opens: only its image
    for task in (named, bare):
        _retrieve(labelstudio, setup, task.id)
    (pred,) = client.predictions.list(task=named.id)
    mask, label = result_to_mask(pred.result[0])
    assert label == "car" and pred.model_version == "ml-test"
    np.testing.assert_array_equal(mask, ml.preannotate(load_image(named.path), "car"))
    assert mask.any()
    assert client.predictions.list(task=bare.id) == []  # no class asked for: nothing to guess
    task_json = {"id": bare.id, "data": {"image": ls.image_url(bare.path)}}
    reply = backend_predict(ml, [task_json])
    assert reply.status_code == 400 and "names no class" in reply.json()["error"]


def backend_predict(
    ml: MLServer, tasks: list[dict], context: dict | None = None
) -> requests.Response:
    """``POST /predict`` to the backend itself, as Label Studio sends it."""
    from workers.labelstudio.convert import label_config

    body = {"tasks": tasks, "project": "1.1700000000",
            "label_config": label_config(["road", "car"]),
            "params": {"login": None, "password": None, "context": context}}  # fmt: skip
    return requests.post(ml.url + "/predict", json=body, timeout=60)


def errors(reply: dict) -> str:
    assert "errors" in reply, reply
    return " ".join(reply["errors"])


def test_bad_clicks_and_rectangles_get_a_clear_answer(setup, stack_env, labelstudio) -> None:
    task = new_task(stack_env, setup, "bad", seed=5, class_name="car")
    out = interactive(labelstudio, setup, task.id, [keypoint(W + 3.0, 10.0)])
    assert "outside the 96x72 image" in errors(out)
    out = interactive(labelstudio, setup, task.id, [rectangle(Box(20.0, 10.0, 20.0, 50.0))])
    assert "zero area" in errors(out)
    out = interactive(labelstudio, setup, task.id, [keypoint(40.0, 30.0, label="bus")])
    assert "'bus' is not one of the project's brush labels" in errors(out)


def test_unknown_class_is_reported(setup, stack_env, ml, labelstudio) -> None:
    task = new_task(stack_env, setup, "zebra", seed=6, class_name="zebra")
    _retrieve(labelstudio, setup, task.id)
    assert setup["client"].predictions.list(task=task.id) == []
    reply = backend_predict(ml, [{"id": task.id, "data": {"image": ls.image_url(task.path),
                                                          "class_name": "zebra"}}])  # fmt: skip
    assert reply.status_code == 400
    assert "unknown class 'zebra'" in reply.json()["error"] and "car" in reply.json()["error"]
    assert "unknown class 'zebra'" in reply.reason  # what Label Studio quotes to the page


def test_a_task_whose_image_is_gone(setup, stack_env, ml, labelstudio) -> None:
    task = new_task(stack_env, setup, "gone", seed=7, class_name="car")
    task.path.unlink()
    out = interactive(labelstudio, setup, task.id, [keypoint(40.0, 30.0)])
    assert "the task's image is gone (gone.png)" in errors(out)
    reply = backend_predict(ml, [{"id": task.id, "data": {"image": ls.image_url(task.path),
                                                          "class_name": "car"}}])  # fmt: skip
    assert reply.status_code == 410


def test_label_studio_restarting_mid_request(setup, stack_env, ml, labelstudio) -> None:
    """An image Label Studio serves (uploaded through it) cannot be read while it is down: a
    503 that says so; local-file tasks go on working; after the restart all works again."""
    image, mask = blob(H, W, 8)
    png = stack_env.root / "uploaded.png"
    Image.fromarray(image).save(png)
    with open(png, "rb") as f:
        reply = requests.post(
            f"{labelstudio.env['LABEL_STUDIO_URL']}/api/projects/{setup['project']}/import"
            "?return_task_ids=true",
            files={"file": ("uploaded.png", f, "image/png")}, timeout=60,
            headers=auth(labelstudio))  # fmt: skip
    assert reply.status_code == 201, reply.text
    (uploaded,) = reply.json()["task_ids"]
    data = setup["client"].tasks.get(id=uploaded).data
    assert data["image"].startswith("/data/upload/")
    local = new_task(stack_env, setup, "while-down", seed=9)
    ys, xs = np.nonzero(mask)
    click = keypoint(float(xs.mean()), float(ys.mean()))
    labelstudio.stop()
    try:
        down = backend_predict(ml, [{"id": uploaded, "data": data}], {"result": [click]})
        assert down.status_code == 503 and "Label Studio is unreachable" in down.json()["error"]
        up = backend_predict(ml, [{"id": local.id, "data": {"image": ls.image_url(local.path)}}],
                             {"result": [click]})  # fmt: skip
        assert up.status_code == 200 and up.json()["results"][0]["result"]
    finally:
        labelstudio.start()
    mask_back, _ = region_mask(interactive(labelstudio, setup, uploaded, [click]))
    assert iou(mask_back, mask) > 0.6


def test_two_annotators_on_the_same_task(setup, stack_env, ml, labelstudio) -> None:
    """Concurrent requests on one task (one image session) each get the mask of their own
    clicks."""
    task = new_task(stack_env, setup, "shared", seed=10, class_name="car")
    ys, xs = np.nonzero(task.mask)
    inside = Click(float(xs.mean()), float(ys.mean()))
    sessions = {
        "a": [inside],
        "b": [inside, Click(float(xs.min()) + 1.5, float(ys.min()) + 1.5, positive=False)],
        "c": [Click(5.0, 5.0)],  # a click on the background: another object
    }
    answers: dict[str, np.ndarray] = {}

    def annotate(name: str) -> None:
        regions = [keypoint(c.x, c.y, c.positive) for c in sessions[name]]
        answers[name] = region_mask(interactive(labelstudio, setup, task.id, regions))[0]

    threads = [threading.Thread(target=annotate, args=(n,)) for n in sessions for _ in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert set(answers) == set(sessions)
    for name, clicks in sessions.items():
        np.testing.assert_array_equal(answers[name], direct(ml, task.path, clicks))
    assert not np.array_equal(answers["a"], answers["c"])


def test_health_setup_and_webhook(ml) -> None:
    with urllib.request.urlopen(ml.url + "/health", timeout=10) as r:
        assert json.loads(r.read()) == {"status": "UP", "model_class": "DinosegMLBackend"}
    reply = requests.post(ml.url + "/setup", json={"project": "3.1", "schema": "<View/>"},
                          timeout=10)  # fmt: skip
    assert reply.status_code == 400 and "no BrushLabels" in reply.reason
    from workers.labelstudio.convert import label_config

    ok = requests.post(ml.url + "/setup", json={"project": "3.1", "schema": label_config(["a"])},
                       timeout=10)  # fmt: skip
    assert ok.json() == {"model_version": "ml-test"}
    event = {"action": "ANNOTATION_CREATED", "project": {"id": 3}, "annotation": {"id": 9}}
    reply = requests.post(ml.url + "/webhook", json=event, timeout=10)
    assert reply.status_code == 201 and reply.json()["status"] == "ok"
    assert ml.events[-1] == ("ANNOTATION_CREATED", event)
    other = requests.post(ml.url + "/webhook", json={"action": "PROJECT_UPDATED"}, timeout=10)
    assert other.status_code == 200 and other.json() == {"status": "Unknown event"}
    garbage = requests.post(ml.url + "/predict", data=b"not json", timeout=10)
    assert garbage.status_code == 400 and "not a JSON object" in garbage.json()["error"]


#: every named image is loaded (a natural width) / the sources of the loaded images
# The labelling panel's text and its loaded images, read together once both are there: the data
# manager's table also shows the task's image, and Label Studio may redraw the panel meanwhile.
SHOWN = """([names, text]) => {
  const body = document.body.innerText;
  const srcs = [...document.images].filter(i => i.naturalWidth > 0).map(i => i.src);
  const ready = body.includes(text) && names.every(n => srcs.some(s => s.includes(n)));
  return ready ? [body, srcs] : null;
}"""


def test_labelling_page_opens_with_and_without_the_support(setup, stack_env, labelstudio) -> None:
    """Chromium opens both tasks: the review task shows class, context and support image; a
    task with only its image opens too (the support tags have no data key to require)."""
    from tests.webapp.demo_page import chromium_page
    from tests.workers.test_click_in_browser import login

    support = upload(stack_env, "support-sheet", blob(H, 2 * W, 11)[0])["image"]
    context, sheet = "confidence 0.36 · model 3", ls.image_url(support)
    full = new_task(stack_env, setup, "page-full", seed=12, class_name="car", context=context,
                    support_image=sheet)  # fmt: skip
    bare = new_task(stack_env, setup, "page-bare", seed=13)
    url, env = labelstudio.env["LABEL_STUDIO_URL"], labelstudio.env
    with chromium_page() as page:
        crashes: list[str] = []
        page.on("pageerror", lambda e: crashes.append(str(e)))
        login(page, env)
        seen = {}
        for task, names in ((full, ["page-full", "support-sheet"]), (bare, ["page-bare"])):
            page.goto(f"{url}/projects/{setup['project']}/data?task={task.id}")
            asked = [names, "Class asked for"]
            shown = page.wait_for_function(SHOWN, arg=asked, timeout=120_000)
            seen[task.id] = tuple(shown.json_value())
    text, images = seen[full.id]
    assert "Class asked for: car" in text and "confidence 0.36 · model 3" in text
    assert any("support-sheet" in src for src in images) and any("page-full" in s for s in images)
    text, images = seen[bare.id]
    assert "Class asked for" in text and not any("support" in src for src in images)
    assert any("page-bare" in src for src in images) and crashes == []


def test_the_stack_can_start_it_and_it_connects_itself(stack_env, labelstudio) -> None:
    """``launch`` (what the stack runs) starts ``serve``: it answers /health, adds itself to
    the review project as an interactive backend, and stops on SIGTERM."""
    import signal
    import subprocess
    import time

    from serving.config import review_config
    from tests.workers.conftest import free_port, wait_for
    from workers.labelstudio.ml_serve import READY_LINE, healthy, launch

    url = f"http://127.0.0.1:{free_port()}"
    env = {**stack_env.env, "DINOSEG_ML_BACKEND_URL": url}
    log = stack_env.root / "ml-backend.log"
    with open(log, "wb") as out:
        proc = launch(env, stdout=out, stderr=subprocess.STDOUT, cwd=stack_env.root)
    try:
        wait_for(lambda: healthy(url), 60, "the ML backend's /health")
        client = labelstudio.client()

        def connected() -> bool:
            project = ls.find_project(client, review_config().project_title)
            return project is not None and any(
                b.url == url and b.is_interactive for b in client.ml.list(project=project)
            )

        wait_for(connected, 60, "the ML backend in the review project", step=1.0)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    assert code == 0 and READY_LINE in log.read_text()
    time.sleep(0.5)
    assert not healthy(url)


def test_warm_encodes_a_task_image_before_its_first_click(setup, stack_env, ml) -> None:
    task = new_task(stack_env, setup, "warm", seed=14)
    reply = requests.post(ml.url + "/warm", json={"image": ls.image_url(task.path)}, timeout=10)
    assert reply.status_code == 202
    key = reply.json()["key"]
    assert key == hashlib.sha256(task.path.read_bytes()).hexdigest()

    class NotWarm(Exception):
        pass

    def warm() -> bool:
        try:
            ml.engine.session(key, lambda: (_ for _ in ()).throw(NotWarm()))
        except NotWarm:
            return False
        return True

    from tests.workers.conftest import wait_for

    wait_for(warm, 60, "the image's features")
    gone = requests.post(ml.url + "/warm", json={"image": ls.image_url(task.path) + "x"},
                         timeout=10)  # fmt: skip
    assert gone.status_code == 410 and "gone" in gone.json()["error"]

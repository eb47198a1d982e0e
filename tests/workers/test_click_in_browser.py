"""Click-to-mask inside Label Studio, end to end in a real browser (issue 17's "done when").

The real Label Studio 1.23 (its own venv, started by the suite) and dinoseg's ML backend (in
this process, tiny random DINOv2; ``ml`` from ``test_ml_backend``) on loopback; Debian's
Chromium driven by Playwright. Every UI step is done in the page as an annotator does it; no
step goes through Label Studio's API from the page. Waits are bounded; a missing service fails.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from serving import store
from serving.config import review_config
from serving.uploads import file_sha256
from tests.workers.conftest import LabelStudioServer, Project, blob, upload
from tests.workers.test_ml_backend import MLServer, direct, ml  # noqa: F401 (ml: a fixture)
from workers.labelstudio import review as rv
from workers.labelstudio.interactive import parse_context
from workers.labelstudio.ml_serve import ensure_ml_backend
from workers.labelstudio.outbox import Outbox
from workers.labelstudio.sync import sync

H, W = 240, 320
CAR = 1  # the suite's base classes.json: road 0, car 1 (ignore 255)
#: the labelling config's label groups, top to bottom: BrushLabels, KeyPointLabels, Rectangle...
KEYPOINT_GROUP = 1
#: brush regions listed in the editor's outliner
BRUSH_REGIONS = "() => document.querySelectorAll('.lsf-tree__node_type_brushregion').length"
PAGE_TIMEOUT_MS = 90_000


def queued_task(project: Project, review: rv.Review) -> tuple[int, Path, np.ndarray, np.ndarray]:
    """A low-confidence 'car' result queued for review whose pre-annotation is wrong (a strip
    in the top-left corner, away from the car); (task id, query path, car mask, pre-annotation)
    with masks (H, W) bool."""
    image, car = blob(H, W, 3)
    query = upload(project, "browser-click", image)["image"]
    wrong = np.zeros((H, W), bool)
    wrong[4:20, 4:60] = True
    assert not (wrong & car).any()
    sha = file_sha256(query)
    rid = store.result_id({"query": sha, "model": "5", "class_name": "car"})
    meta = {"query": query, "query_sha256": sha, "model_version": "5", "class_name": "car",
            "confidence": 0.3, "needs_review": True}  # fmt: skip
    store.write_record(rid, wrong, wrong.astype(np.float32), meta)
    reply = rv.queue(review, rid)
    assert reply["status"] == "queued", reply
    return int(reply["task_id"]), Path(query), car, wrong


@contextmanager
def browser_page(shots: Path) -> Iterator[Any]:
    """A Chromium page; on failure a screenshot is left in ``shots`` (named in the error)."""
    from tests.webapp.demo_page import chromium_page

    with chromium_page(viewport={"width": 1400, "height": 1000}) as page:
        page.set_default_timeout(PAGE_TIMEOUT_MS)
        try:
            yield page
        except BaseException as e:
            page.screenshot(path=str(shots / "failure.png"))
            raise AssertionError(f"{e} (screenshot: {shots / 'failure.png'})") from e


def login(page: Any, env: dict[str, str]) -> None:
    page.goto(env["LABEL_STUDIO_URL"] + "/user/login")
    page.fill("input[name=email]", env["LABEL_STUDIO_USERNAME"])
    page.fill("input[name=password]", env["LABEL_STUDIO_PASSWORD"])
    page.click("button[type=submit]")
    page.wait_for_load_state("networkidle")


def click_to_mask(page: Any, where: tuple[float, float]) -> dict[str, Any]:
    """In the open task: Auto-Annotation on (and auto-accept, so the answer becomes a region
    at once), the smart keypoint tool (shown while hovering Auto-Detect), the label "car" of
    KeyPointLabels, one click at ``where`` (fractions of the image's width and height).
    Returns the body Label Studio sent to the ML backend's route and its reply."""
    page.check("[data-testid=bottombar-auto-annotation-toggle]", force=True)
    page.check("[data-testid=bottombar-auto-accept-toggle]", force=True)
    page.locator("button.lsf-tool", has_text="Auto-Detect").first.hover()
    page.locator("button.lsf-tool_smart[aria-label=key-point-tool]").click()
    page.locator(".lsf-labels").nth(KEYPOINT_GROUP).locator(".lsf-label", has_text="car").click()
    stage = page.locator(".konvajs-content").first.bounding_box()
    with page.expect_response(lambda r: "/interactive-annotating" in r.url) as answer:
        page.mouse.click(stage["x"] + where[0] * stage["width"],
                         stage["y"] + where[1] * stage["height"])  # fmt: skip
    reply = answer.value
    assert reply.status == 200, reply.text()
    return {"sent": reply.request.post_data_json, "reply": reply.json()}


def test_click_to_mask_in_the_browser_lands_in_labels(
    stack_env: Project,
    labelstudio: LabelStudioServer,
    ml: MLServer,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    """login -> open the queued review task -> smart keypoint tool, label "car" -> click on the
    car -> the ML backend's mask appears as a brush region -> submit -> sync writes the label
    into data/labels with class "car" (the clicked mask plus the kept pre-annotation)."""
    review = rv.Review(replace(review_config(), project_title="click in the browser"), Outbox())
    client = labelstudio.client()
    task, query, car, wrong = queued_task(stack_env, review)
    project = review.project(client)
    ensure_ml_backend(client, project, ml.url, "dinoseg")
    ys, xs = np.nonzero(car)
    where = (float(xs.mean()) / W, float(ys.mean()) / H)
    url = labelstudio.env["LABEL_STUDIO_URL"]
    with browser_page(tmp_path) as page:
        crashes: list[str] = []
        page.on("pageerror", lambda e: crashes.append(str(e)))
        login(page, labelstudio.env)
        page.goto(f"{url}/projects/{project}/data?task={task}")
        page.wait_for_selector("text=Class asked for: car")
        page.wait_for_function(f"{BRUSH_REGIONS} === 1")  # the pre-annotation
        call = click_to_mask(page, where)
        page.wait_for_function(f"{BRUSH_REGIONS} === 2")  # the mask, as a region
        with page.expect_response(lambda r: f"/api/tasks/{task}/annotations" in r.url
                                  and r.request.method == "POST") as saved:  # fmt: skip
            page.click("[data-testid=bottombar-submit-button]")
        assert saved.value.status == 201, saved.value.text()
    assert crashes == []
    prompts = parse_context(call["sent"]["context"], (H, W))
    (click,) = prompts.clicks
    assert click.positive and prompts.label == "car" and car[click.pixel((H, W))]
    (region,) = call["reply"]["data"]["result"]
    assert region["type"] == "brushlabels" and region["value"]["brushlabels"] == ["car"]
    clicked = direct(ml, query, [click])
    assert (clicked & car).sum() > 0.5 * car.sum() and (clicked & car).sum() > 0.9 * clicked.sum()

    labels = stack_env.root / review.config.labels_dir
    report = sync(review, labels)
    assert report.new_labels == 1 and report.skipped == [], report.as_dict()
    stem = file_sha256(str(query))[:16]
    written = np.asarray(Image.open(labels / "train" / "masks" / f"{stem}.png"))
    np.testing.assert_array_equal(written, np.where(clicked | wrong, CAR, 255))
    prov = json.loads((labels / "provenance" / f"{stem}.json").read_text())
    assert prov["task_id"] == task and prov["class_name"] == "car" and prov["classes"] == ["car"]
    assert prov["annotator"] == labelstudio.env["LABEL_STUDIO_USERNAME"]
    assert json.loads((labels / "classes.json").read_text())["classes"][str(CAR)] == "car"
    assert [a.id for a in client.annotations.list(id=task)] == [prov["annotation_id"]]

"""Label Studio's ML backend requests, read: the project's schema, the smart-tool context, the
task's image. Everything that cannot be used is a :class:`BackendError` with an HTTP status and
one line for the annotator.

Label Studio 1.23 sends ``POST /predict`` with ``{"tasks", "project": "<id>.<created ts>",
"label_config", "params": {"context"}}``. An interactive request (a smart keypoint or rectangle
placed) carries ``context.result``: the smart regions of one tool and one label, in the order
they were placed — keypoints as ``{"type": "keypointlabels", "value": {"x", "y",
"keypointlabels": [label]}, "is_positive": bool, "original_width", "original_height"}``,
rectangles with ``value.width`` / ``value.height``; coordinates in percent of the image.
"""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urljoin, urlsplit

import numpy as np

from dinoseg import runtime
from dinoseg.interactive import Box, Click
from dinoseg.io import InputError, load_image

FETCH_TIMEOUT = 10.0
MAX_IMAGE_BYTES = 100 * 1024**2


class BackendError(RuntimeError):
    """A request the backend cannot answer: ``status`` is the HTTP status to reply with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Schema:
    """What the backend needs of a labelling config: the BrushLabels tag (its name, labels)
    and the image it labels (tag name and task-data key)."""

    brush: str
    image: str
    image_key: str
    labels: tuple[str, ...]


def parse_schema(label_config: object) -> Schema:
    """The :class:`Schema` of a labelling config (the first BrushLabels tag)."""
    if not isinstance(label_config, str) or not label_config.strip():
        raise BackendError(400, "the request carries no label_config")
    try:
        root = ET.fromstring(label_config)
    except ET.ParseError as e:
        raise BackendError(400, f"the label_config is not XML ({e})") from e
    brush = next(root.iter("BrushLabels"), None)
    if brush is None or not brush.get("name") or not brush.get("toName"):
        raise BackendError(400, "the project's labelling config has no BrushLabels tag")
    to_name = brush.get("toName", "")
    image = next((t for t in root.iter("Image") if t.get("name") == to_name), None)
    value = image.get("value", "") if image is not None else ""
    if not value.startswith("$"):
        raise BackendError(400, f"BrushLabels label {to_name!r}, which is not an Image of $data")
    labels = tuple(lab.get("value", "") for lab in brush.iter("Label"))
    return Schema(brush.get("name", ""), to_name, value[1:], labels)


@dataclass(frozen=True)
class Prompts:
    """The clicks (in the order placed) or the rectangle of one smart-tool request, and the
    label the annotator chose for it."""

    clicks: list[Click]
    box: Box | None
    label: str


def _percent(value: Mapping[str, Any], key: str) -> float:
    v = value.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise BackendError(400, f"smart region: {key!r} is not a number")
    return float(v)


def parse_context(context: Mapping[str, Any], shape: tuple[int, int]) -> Prompts:
    """Keypoints and the last rectangle of ``context.result`` on an image of ``shape`` (H, W).
    A keypoint without ``is_positive`` counts as positive (a plain click)."""
    h, w = shape
    regions = context.get("result")
    if not isinstance(regions, list) or not regions:
        raise BackendError(400, "the smart-tool context holds no region")
    clicks: list[Click] = []
    box: Box | None = None
    label = ""
    for region in regions:
        kind = region.get("type") if isinstance(region, dict) else None
        value = region.get("value") if isinstance(region, dict) else None
        if kind not in ("keypointlabels", "rectanglelabels") or not isinstance(value, dict):
            continue
        x, y = _percent(value, "x") * w / 100, _percent(value, "y") * h / 100
        names = value.get(kind)
        if isinstance(names, list) and names and isinstance(names[0], str):
            label = names[0]
        if kind == "keypointlabels":
            clicks.append(Click(x, y, bool(region.get("is_positive", True))))
        else:
            bw, bh = _percent(value, "width") * w / 100, _percent(value, "height") * h / 100
            box = Box(x, y, x + bw, y + bh)
    if not clicks and box is None:
        raise BackendError(400, "the smart-tool context holds no keypoint or rectangle")
    return Prompts(clicks, box, label)


@dataclass(frozen=True)
class TaskImage:
    """A task's image: ``key`` (sha256 of its bytes) and ``load()`` -> (H, W, 3) uint8."""

    key: str
    load: Callable[[], np.ndarray]


def _bytes_image(data: bytes) -> TaskImage:
    return TaskImage(hashlib.sha256(data).hexdigest(), lambda: load_image(data))


def _local(url: str) -> Path | None:
    """The file under ``DINOSEG_HOME`` that a ``/data/local-files/?d=`` URL names, if any."""
    parts = urlsplit(url)
    if not parts.path.endswith("/data/local-files/"):
        return None
    rel = (parse_qs(parts.query).get("d") or [""])[0]
    home = runtime.home().resolve()
    path = (home / unquote(rel)).resolve()
    if not rel or not path.is_relative_to(home):
        raise BackendError(400, f"image {url[:120]!r} is not under this stack's home")
    return path


def fetch_image(url: object, ls_url: str, token: str | None) -> TaskImage:
    """The image of a task-data URL: a local file of this stack (``/data/local-files/?d=``),
    else a file Label Studio serves (fetched with the API token). Other hosts are refused."""
    if not isinstance(url, str) or not url:
        raise BackendError(400, "the task has no image URL")
    local = _local(url)
    if local is not None:
        try:
            return _bytes_image(local.read_bytes())
        except FileNotFoundError:
            raise BackendError(410, f"the task's image is gone ({local.name})") from None
        except OSError as e:
            raise BackendError(410, f"the task's image cannot be read ({e})") from e
    full = urljoin(ls_url + "/", url)
    if urlsplit(full)[:2] != urlsplit(ls_url)[:2]:
        raise BackendError(400, f"image {url[:120]!r} is not served by Label Studio ({ls_url})")
    request = urllib.request.Request(full, headers={"Authorization": f"Token {token}"} if token
                                     else {})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT) as r:
            data = r.read(MAX_IMAGE_BYTES + 1)
    except urllib.error.HTTPError as e:
        if e.code in (404, 410):
            raise BackendError(410, f"the task's image is gone (Label Studio: {e.code})") from e
        raise BackendError(502, f"Label Studio answered {e.code} for the task's image") from e
    except (urllib.error.URLError, OSError) as e:
        raise BackendError(503, "Label Studio is unreachable (restarting?) while reading the "
                                "task's image; try again in a moment") from e  # fmt: skip
    if len(data) > MAX_IMAGE_BYTES:
        raise BackendError(400, f"the task's image is over {MAX_IMAGE_BYTES >> 20} MB")
    return _bytes_image(data)


def load_or_fail(image: TaskImage) -> np.ndarray:
    """The pixels, or a 400 naming what is wrong with the file."""
    try:
        return image.load()
    except InputError as e:
        raise BackendError(400, f"the task's image cannot be used: {e}") from e


def task_class(task: Mapping[str, Any]) -> str:
    """The class a task asks for (``data.class_name`` normalised; the placeholder when none)."""
    from dinoseg.data.classnames import normalize_class_name

    data = task.get("data")
    try:
        return normalize_class_name(data.get("class_name") if isinstance(data, dict) else None)
    except InputError as e:
        raise BackendError(400, f"task {task.get('id')}: {e}") from e

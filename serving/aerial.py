"""The ``aerial`` job: an uploaded photo (+ annotated tiles) -> city map outputs.

Run in-process by the web app or by the Celery task ``dinoseg.aerial`` (10-78 CPU s per
megapixel: with workers, never inside the web app's process). Request (JSON)::

    {"image": path, "supports": [{"image": path, "mask": path}, ...],
     "config": {AerialConfig field: value, ...}}

Paths must lie in the uploads folder; masks are class-index PNGs (the Dubai layout: 0 land,
1 water, 2 building, 3 vegetation, 4 road, 255 unlabelled). ``method: head`` needs no tiles: it
runs the supervised head ``model`` names (a checkpoint directory or ``models:/...``; by default
the registered champion, ``AerialConfig.head_model``). The config is layered: code
defaults <- params.yaml ``aerial`` <- the request's ``config``. Reply::

    {"id", "out", "map", "glb", "files": [path, ...], "stats": {...}, "notice", "review": [...]}

(``notice``: "" or what the visitor should know, e.g. annotated tiles the method does not read)
with the outputs in ``runtime.results_dir()/aerial/<id>/``. ``review`` (method ``head``) lists
the :data:`REVIEW_TILES` least confident tiles (confidence: the mean top-class probability),
each ``{"image", "labels", "image_sha256", "box", "confidence", "model", "classes"}`` with the
tile and its class-index map stored in the uploads folder: what ``workers.labelstudio.aerial``
sends to annotators.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from dinoseg import runtime
from dinoseg.aerial.build import (
    USES_SUPPORTS,
    build_method,
    check_method,
    check_supports,
    head_path,
    head_spec,
)
from dinoseg.aerial.categories import DEFAULT_CLASS_NAMES
from dinoseg.aerial.config import AerialConfig
from dinoseg.config import load_params, resolve
from dinoseg.io import InputError
from serving.config import PARAMS_FILE
from serving.progress import Report, no_report
from serving.request import upload_path

log = logging.getLogger(__name__)

#: request ``config`` keys a visitor may set (the rest come from params.yaml)
REQUEST_KEYS = ("method", "refine", "tile", "overlap", "k", "pixel_size", "building_height",
                "model", "head_views", "head_scales", "head_adapt_steps")
#: least confident tiles of a head's map offered for review
REVIEW_TILES = 3


def aerial_config(overrides: Any, params: Path = PARAMS_FILE) -> AerialConfig:
    """Code defaults <- ``params`` section ``aerial`` <- the request's overrides, checked."""
    if not isinstance(overrides, Mapping):
        raise InputError("aerial: 'config' must be an object")
    unknown = sorted(set(overrides) - set(REQUEST_KEYS))
    if unknown:
        raise InputError(f"aerial: unknown config keys {unknown}; allowed: {list(REQUEST_KEYS)}")
    section = load_params(params, "aerial") if params.is_file() else {}
    cfg = resolve(AerialConfig, section, dict(overrides))
    check_method(cfg.method)
    cfg.check()
    return cfg


def default_method(params: Path = PARAMS_FILE) -> str:
    """The method a visitor starts with: ``head`` when the head model resolves (the registered
    champion by default, or a checkpoint folder), else params.yaml's ``aerial.method``."""
    cfg = aerial_config({}, params)
    try:
        found = head_path(cfg)
    except Exception as e:  # no champion, no registry, a store that fails: a default, not an error
        log.debug("no aerial head to serve by default: %s", e)
        return cfg.method
    return "head" if (Path(found) / "config.json").is_file() else cfg.method


class DefaultMethod:
    """:func:`default_method`, looked up again at most every ``check_seconds`` (the serving
    section's ``model_check_seconds``, as the segment model's champion): the status asks on
    every page load and after every run, and the answer moves only with a promotion."""

    def __init__(self, params: Path = PARAMS_FILE, check_seconds: float | None = None,
                 clock: Callable[[], float] = time.monotonic):  # fmt: skip
        from serving.config import serving_config

        self.params, self.clock = params, clock
        self.check_seconds = (serving_config(params).model_check_seconds
                              if check_seconds is None else check_seconds)  # fmt: skip
        self._known: tuple[float, str] | None = None

    def __call__(self) -> str:
        now = self.clock()
        if self._known is None or now - self._known[0] >= self.check_seconds:
            self._known = (now, default_method(self.params))
        return self._known[1]


def _supports(value: Any, uploads: Path) -> list[tuple[Path, Path]]:
    if not isinstance(value, list):
        raise InputError("aerial: 'supports' must list {'image': path, 'mask': path} pairs")
    pairs = []
    for i, s in enumerate(value, 1):
        if not isinstance(s, Mapping):
            raise InputError(f"annotated tile {i}: expected {{'image': path, 'mask': path}}")
        pairs.append((upload_path(s.get("image"), f"annotated tile {i}", uploads),
                      upload_path(s.get("mask"), f"annotated tile {i} mask", uploads)))  # fmt: skip
    return pairs


def run_aerial_job(
    request: Any,
    report: Report = no_report,
    *,
    params: Path = PARAMS_FILE,
    uploads: Path | None = None,
    results: Path | None = None,
) -> dict[str, Any]:
    """Run one aerial request (see the module docstring)."""
    from dinoseg.aerial.pipeline import OUTPUT_FILES, load_supports, run_aerial

    uploads = (uploads or runtime.uploads_dir()).resolve()
    if not isinstance(request, Mapping):
        raise InputError(f"aerial: the request must be an object, got {type(request).__name__}")
    image = upload_path(request.get("image"), "aerial photo", uploads)
    pairs = _supports(request.get("supports") or [], uploads)
    cfg = aerial_config(request.get("config") or {}, params)
    check_supports(cfg.method, len(pairs))
    names = list(DEFAULT_CLASS_NAMES)
    supports = load_supports(pairs, names) if pairs else None
    rid = uuid.uuid4().hex[:24]
    out = (results or runtime.results_dir()) / "aerial" / rid

    def progress(stage: str, done: int, total: int) -> None:
        report(done / max(total, 1), f"{stage}: {done}/{total} tiles")

    report(None, "loading the model")
    method = build_method(cfg, supports, names)
    stats = run_aerial(image, supports, names, cfg, out, method=method, progress=progress)
    notice = (f"the {cfg.method} method does not read annotated tiles: the {len(pairs)} given "
              "were not used" if pairs and cfg.method not in USES_SUPPORTS else "")
    return {"id": rid, "out": str(out), "map": str(out / "map.png"), "glb": str(out / "city.glb"),
            "files": [str(out / n) for n in OUTPUT_FILES], "stats": stats, "notice": notice,
            "review": review_tiles(image, out, method,
                                   head_spec(cfg) if cfg.method == "head" else cfg.model)}


def review_tiles(image: Path, out: Path, method: Any, model: str,
                 n: int = REVIEW_TILES) -> list[dict[str, Any]]:  # fmt: skip
    """The ``n`` least confident tiles of a method that scores its tiles (see the module
    docstring); ``[]`` for the others."""
    import hashlib

    import numpy as np
    from PIL import Image

    from dinoseg.aerial.methods.head import least_confident
    from dinoseg.aerial.reader import open_large_image
    from serving.uploads import png_bytes, store_bytes

    scored = least_confident(getattr(method, "tile_confidence", []), n)
    if not scored:
        return []
    source = open_large_image(image)
    labels = np.asarray(Image.open(out / "classes.png"))
    items = []
    for (y0, x0, y1, x1), confidence in scored:
        tile = png_bytes(source.read(y0, x0, y1, x1))
        items.append({"image": str(store_bytes(tile, ".png")),
                      "image_sha256": hashlib.sha256(tile).hexdigest(),
                      "labels": str(store_bytes(png_bytes(labels[y0:y1, x0:x1]), ".png")),
                      "box": [y0, x0, y1, x1], "confidence": round(float(confidence), 4),
                      "model": model, "classes": list(method.class_names)})  # fmt: skip
    return items

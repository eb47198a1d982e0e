"""A ``dinoseg.segment`` reply -> what the page shows (overlays, masks, heatmaps, downloads).

A *view* is a plain JSON-able dict kept in the visitor's ``gr.State``::

    {"id", "name", "query", "mask", "prob", "confidence", "needs_review", "model_version",
     "class_name", "coverage"}

where ``query``/``mask``/``prob`` are file paths (the stored query, the 0/255 mask PNG and the
probability PNG of the results store).

What the page shows are files: each result's overlay and heat map are drawn once, as JPEGs in a
per-result folder of the temporary directory (:func:`shown_files`), and the mask is the
store's own PNG, so Gradio copies files instead of encoding arrays, and the gallery and the
detail panel share one drawing.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dinoseg.io import load_image
from dinoseg.visualize import heatmap, overlay

#: the headers of the results table
TABLE_HEADERS = ["query", "confidence", "foreground %", "review?", "result id"]


def read_mask(path: str | Path) -> np.ndarray:
    """A results-store mask PNG -> (H, W) bool."""
    with Image.open(path) as img:
        return np.asarray(img.convert("L")) > 127


def read_prob(path: str | Path) -> np.ndarray:
    """A results-store probability PNG (prob * 255) -> (H, W) float32 in [0, 1]."""
    with Image.open(path) as img:
        return np.asarray(img.convert("L"), dtype=np.float32) / 255.0


def views_from_reply(reply: Mapping[str, Any], names: Mapping[str, str]) -> list[dict[str, Any]]:
    """One view per result, in query order; ``names`` maps stored query paths to file names."""
    views = []
    for r in reply.get("results") or []:
        mask = read_mask(r["mask"])
        views.append(
            {
                "id": str(r["id"]),
                "name": names.get(r["query"], Path(r["query"]).name),
                "query": r["query"],
                "mask": r["mask"],
                "prob": r["prob"],
                "confidence": float(r["confidence"]),
                "needs_review": bool(r.get("needs_review")),
                "model_version": str(reply.get("model_version") or "?"),
                "class_name": str(reply.get("class_name") or "object"),
                "coverage": float(mask.mean()),
            }
        )
    return views


def render(view: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> (overlay (H, W, 3) uint8, mask (H, W) uint8 0/255, heatmap (H, W, 3) uint8)."""
    image = load_image(view["query"])
    mask = read_mask(view["mask"])
    return overlay(image, mask), mask.astype(np.uint8) * 255, heatmap(read_prob(view["prob"]))


#: JPEG quality of the drawn overlay and heat map (what the page shows, not what is stored)
JPEG_QUALITY = 90


def result_folder(view: Mapping[str, Any]) -> Path:
    """The per-result folder of what the page shows (temporary directory, by result id)."""
    folder = Path(tempfile.gettempdir()) / "dinoseg-demo" / str(view["id"])
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def shown_files(view: Mapping[str, Any]) -> tuple[str, str, str]:
    """-> (overlay JPEG, mask PNG (the store's), heat map JPEG) paths; drawn on first use."""
    folder = result_folder(view)
    over, heat = folder / "overlay.jpg", folder / "heatmap.jpg"
    if not (over.is_file() and heat.is_file()):
        drawn_over, _, drawn_heat = render(view)
        for array, path in ((drawn_over, over), (drawn_heat, heat)):
            tmp = path.with_name(f".{path.name}.tmp")
            Image.fromarray(array).save(tmp, format="JPEG", quality=JPEG_QUALITY)
            tmp.replace(path)
    return str(over), str(view["mask"]), str(heat)


def caption(view: Mapping[str, Any]) -> str:
    """Short gallery caption: file name and confidence."""
    flag = " · review" if view["needs_review"] else ""
    return f"{view['name']} · confidence {view['confidence']:.2f}{flag}"


def table_rows(views: list[dict[str, Any]]) -> list[list[Any]]:
    """Rows under :data:`TABLE_HEADERS`."""
    return [
        [
            v["name"],
            round(v["confidence"], 3),
            round(100 * v["coverage"], 1),
            "yes" if v["needs_review"] else "",
            v["id"],
        ]
        for v in views
    ]


def describe(view: Mapping[str, Any]) -> str:
    """Markdown summary of one result."""
    text = (
        f"### {view['name']} · {view.get('class_name', 'object')}\n"
        f"**Confidence {view['confidence']:.2f}** · foreground {100 * view['coverage']:.1f}% "
        f"of the image · model `{view['model_version']}` · result `{view['id']}`"
    )
    if view["needs_review"]:
        text += "\n\n⚠️ Low confidence: send it to the annotators so a person fixes the mask."
    return text


def download_file(view: Mapping[str, Any]) -> str:
    """A copy of the mask PNG named after the query (``<stem>_mask.png``) for the download."""
    target = result_folder(view) / f"{Path(str(view['name'])).stem}_mask.png"
    if not target.is_file():
        shutil.copyfile(view["mask"], target)
    return str(target)

"""The "Aerial images" tab: a photo (and optional annotated tiles) in, a city map and 3D out.

The work runs through the page's backend like segmentation (``dinoseg.aerial`` on a worker when
the stack runs workers, :mod:`serving.aerial` in-process otherwise), with progress; errors go
through the page's one handler (:func:`webapp.callbacks.user_errors`).
:func:`aerial_request` (inputs -> request) and :func:`shown` (reply -> widgets) are plain
functions, tested without a browser.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import gradio as gr

from dinoseg.aerial.build import check_supports
from dinoseg.aerial.methods.head import FINE_SCALES
from dinoseg.io import InputError
from serving.uploads import store_file
from webapp.backends import Backend, Report, no_report
from webapp.callbacks import user_errors

INTRO = """### Aerial photo → city map
Upload an aerial photo of any size (tiled inference, up to 150 MP). For **few-shot** and
**SAM matching**, add one or more annotated tiles: a tile and its mask PNG whose pixel values
are class indices — 0 land, 1 water, 2 building, 3 vegetation, 4 road, 255 unlabelled (the
Dubai dataset's format). **k-means** works without them (clusters are then left unnamed);
**SegFormer** needs its ADE20K weights on the server. The **supervised head** needs no tiles: it
runs the registered champion head (`dinoseg aerial train`), or the model named under Settings;
the tab starts on it once a champion is registered.
"""
METHOD_CHOICES = [
    ("Few-shot (DINOv2 prototypes)", "fewshot"),
    ("DINOv2 + k-means", "kmeans"),
    ("DINOv2 + SAM automatic masks", "sam-match"),
    ("SegFormer-B5 (ADE20K)", "segformer"),
    ("DINOv2 + supervised head (trained on labelled tiles)", "head"),
]
STATS_HEADERS = ["class", "share %", "area m²"]
FALLBACK_METHOD = "fewshot"  # the radio's value before the server named its default


def _path(f: Any) -> str:
    """A gradio file value (path string or object with ``.name``) as a path."""
    return str(getattr(f, "name", f))


def aerial_request(image: Any, support_images: Sequence[Any] | None,
                   support_masks: Sequence[Any] | None, method: str, refine: bool, *,
                   tile: int = 518, k: int = 8, pixel_size: float = 0.5,
                   building_height: float = 10.0, model: str = "",
                   head_views: int = 1, adapt: bool = True,
                   fine: bool = False) -> dict[str, Any]:  # fmt: skip
    """Store the uploaded files (content-addressed) and build the ``dinoseg.aerial`` request."""
    if not image:
        raise InputError("upload an aerial photo first")
    imgs, masks = list(support_images or []), list(support_masks or [])
    if len(imgs) != len(masks):
        raise InputError(f"{len(imgs)} support tiles but {len(masks)} masks: give one mask each")
    check_supports(method, len(imgs), "annotated tile (a tile and its mask)")
    supports = [{"image": str(store_file(_path(i))), "mask": str(store_file(_path(m)))}
                for i, m in zip(imgs, masks, strict=True)]  # fmt: skip
    config = {"method": method, "refine": bool(refine), "tile": int(tile),
              "overlap": min(96, int(tile) // 4), "k": int(k), "pixel_size": float(pixel_size),
              "building_height": float(building_height), "head_views": int(head_views)}  # fmt: skip
    if model.strip():
        config["model"] = model.strip()
    if not adapt:  # on: params.yaml / the code default's steps
        config["head_adapt_steps"] = 0
    if fine:  # off: params.yaml / the code default's scales
        config["head_scales"] = list(FINE_SCALES)
    return {"image": str(store_file(_path(image))), "supports": supports, "config": config}


def shown(reply: Mapping[str, Any]) -> tuple[str, str, list[list[Any]], str, list[str]]:
    """An aerial reply -> (summary, coloured map path, stats rows, .glb path, all outputs)."""
    stats = reply["stats"]
    rows = [[name, round(100 * c["fraction"], 2), round(c["area_m2"], 1)]
            for name, c in stats["classes"].items()]  # fmt: skip
    if stats["unknown"]["pixels"]:
        rows.append(["unknown", round(100 * stats["unknown"]["fraction"], 2),
                     round(stats["unknown"]["area_m2"], 1)])  # fmt: skip
    summary = (f"**{stats['method']}**: {stats['image']['width']}×{stats['image']['height']} px, "
               f"{stats['buildings']} buildings, {stats['seconds_per_megapixel']:.1f} s/MP")
    adapted = stats.get("adaptation", {})
    if adapted.get("adapted"):
        used = sum(adapted["pseudo_labels"].values())
        summary += f"; adapted to this photo on {used} of {adapted['patches']} patches"
    if reply.get("notice"):
        summary += f"  \n*Note: {reply['notice']}.*"
    review = review_line(reply.get("review_queue") or [])
    if review:
        summary += f"  \n{review}"
    return summary, str(reply["map"]), rows, str(reply["glb"]), [str(f) for f in reply["files"]]


def review_line(queue: Sequence[Mapping[str, Any]]) -> str:
    """What became of the map's uncertain tiles (the worker's ``review_queue``), in words."""
    failed = [q for q in queue if q.get("status") == "not sent"]
    if failed:
        return f"Uncertain tiles not sent to annotators: {failed[0].get('error', 'unknown')}"
    sent = sum(q.get("status") == "queued" for q in queue)
    waiting = sum(q.get("status") == "duplicate" for q in queue)
    said = [f"{sent} uncertain tile{'s' * (sent != 1)} sent to annotators"] if sent else []
    if waiting:
        said.append(f"{waiting} already awaiting review")
    return "; ".join(said) + " (Label Studio's aerial review project)" if said else ""


class AerialCallbacks:
    """The tab's handler bound to the page's backend."""

    def __init__(self, backend: Backend):
        self.backend = backend

    @user_errors
    def make_city_map(self, image: Any, imgs: Any, masks: Any, method: str, refine: bool,
                      tile: float, k: float, pixel_size: float, height: float,
                      report: Report = no_report, model: str = "",
                      head_views: float = 1, adapt: bool = True,
                      fine: bool = False) -> tuple[Any, ...]:  # fmt: skip
        request = aerial_request(image, imgs, masks, method, refine, tile=int(tile), k=int(k),
                                 pixel_size=pixel_size, building_height=height, model=model,
                                 head_views=int(head_views), adapt=bool(adapt),
                                 fine=bool(fine))  # fmt: skip
        return shown(self.backend.aerial(request, report))


def default_method(status: Mapping[str, Any] | None) -> str:
    """The method the tab starts on, from the backend's status reply (``aerial_method``:
    ``head`` once a head champion is registered, :func:`serving.aerial.default_method`);
    :data:`FALLBACK_METHOD` when the backend did not answer or named no method of the tab."""
    method = (status or {}).get("aerial_method")
    return method if method in {value for _, value in METHOD_CHOICES} else FALLBACK_METHOD


def build_aerial_tab(backend: Backend) -> gr.Radio:
    """The tab's components and wiring (call inside a ``gr.Tab``); returns the method radio,
    which the page sets to :func:`default_method` of the status it reads on load."""
    cb = AerialCallbacks(backend)
    gr.Markdown(INTRO)
    with gr.Row():
        with gr.Column(scale=1):
            image = gr.File(label="Aerial photo", file_types=["image", ".tif", ".tiff", ".ppm"])
            imgs = gr.File(label="Annotated tiles (optional)", file_count="multiple",
                           file_types=["image"])
            masks = gr.File(label="Their class-index masks, same order", file_count="multiple",
                            file_types=[".png"])
            method = gr.Radio(METHOD_CHOICES, value=FALLBACK_METHOD, label="Method")
            refine = gr.Checkbox(label="Refine boundaries with SAM (slower)", value=False)
            with gr.Accordion("Settings", open=False):
                tile = gr.Slider(224, 1036, value=518, step=14, label="Tile size (px)")
                k = gr.Slider(2, 16, value=8, step=1, label="k-means clusters")
                pixel_size = gr.Number(value=0.5, label="Ground size of a pixel (m)")
                height = gr.Number(value=10.0, label="Building height (m)")
                model = gr.Textbox(value="", label="Model (few-shot or head checkpoint, "
                                   "models:/...; empty = the default)")  # fmt: skip
                views = gr.Slider(1, 8, value=1, step=1, label="Head method: orientations per "
                                  "tile (up to 8: a better map, that many times slower)")
                adapt = gr.Checkbox(value=True, label="Head method: adapt to the photo first "
                                    "(self-training on its confident patches)")
                fine = gr.Checkbox(value=False, label="Head method: also read each tile at "
                                   "1.5x resolution (finer roads, about 4x slower)")
            run = gr.Button("Make the city map", variant="primary", elem_id="aerial-run")
        with gr.Column(scale=2):
            summary = gr.Markdown()
            city_map = gr.Image(label="City map", type="filepath", interactive=False)
            stats = gr.Dataframe(headers=STATS_HEADERS, label="Areas", interactive=False)
            city = gr.Model3D(label="3D city model", clear_color=(0.9, 0.9, 0.9, 1.0))
            files = gr.File(label="Downloads", file_count="multiple", interactive=False)

    def on_run(image: Any, imgs: Any, masks: Any, method: str, refine: bool, tile: float,
               k: float, pixel_size: float, height: float, model: str, views: float,
               adapt_on: bool, fine_on: bool,
               progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008
        return cb.make_city_map(image, imgs, masks, method, refine, tile, k, pixel_size, height,
                                report=lambda f, d: progress(f or 0.0, desc=d), model=model,
                                head_views=views, adapt=adapt_on, fine=fine_on)  # fmt: skip

    run.click(on_run, inputs=[image, imgs, masks, method, refine, tile, k, pixel_size, height,
                              model, views, adapt, fine],
              outputs=[summary, city_map, stats, city, files], api_name="aerial_map",
              concurrency_limit=2 if backend.kind == "celery" else 1)  # fmt: skip
    return method

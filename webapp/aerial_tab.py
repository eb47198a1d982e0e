"""The "Aerial images" tab: a photo (and optional annotated tiles) in, a city map and 3D out.

``build_aerial_tab()`` lays the components out inside the caller's ``gr.Tab``; the work is
:func:`make_city_map`, a plain function over :func:`dinoseg.aerial.pipeline.run_aerial` (testable
without a browser). Outputs go to ``runtime.results_dir()/aerial/<id>/``. Models are loaded per
request (no module-level state); the page shows progress while the job runs.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gradio as gr

from dinoseg.io import InputError

log = logging.getLogger(__name__)

INTRO = """### Aerial photo → city map
Upload an aerial photo of any size (tiled inference, up to 150 MP). For **few-shot** and
**SAM matching**, add one or more annotated tiles: a tile and its mask PNG whose pixel values
are class indices — 0 land, 1 water, 2 building, 3 vegetation, 4 road, 255 unlabelled (the
Dubai dataset's format). **k-means** works without them (clusters are then left unnamed);
**SegFormer** needs its ADE20K weights on the server.
"""
METHOD_CHOICES = [
    ("Few-shot (DINOv2 prototypes)", "fewshot"),
    ("DINOv2 + k-means", "kmeans"),
    ("DINOv2 + SAM automatic masks", "sam-match"),
    ("SegFormer-B5 (ADE20K)", "segformer"),
]
STATS_HEADERS = ["class", "share %", "area m²"]
Progress = Callable[[str, int, int], None]


def _path(f: Any) -> str:
    """A gradio file value (path string or object with ``.name``) as a path."""
    return str(getattr(f, "name", f))


def make_city_map(
    image: Any,
    support_images: Sequence[Any] | None,
    support_masks: Sequence[Any] | None,
    method: str,
    refine: bool,
    *,
    tile: int = 518,
    k: int = 8,
    pixel_size: float = 0.5,
    building_height: float = 10.0,
    out_root: Path | None = None,
    progress: Progress | None = None,
) -> tuple[str, list[list[Any]], str, list[str], str]:
    """Run the aerial pipeline on uploaded files.

    Returns:
        (coloured map path, stats rows, .glb path, all output paths, a one-line summary).
    """
    from dinoseg import runtime
    from dinoseg.aerial.categories import DEFAULT_CLASS_NAMES
    from dinoseg.aerial.pipeline import OUTPUT_FILES, AerialConfig, load_supports, run_aerial

    if not image:
        raise InputError("upload an aerial photo first")
    imgs, masks = list(support_images or []), list(support_masks or [])
    if len(imgs) != len(masks):
        raise InputError(f"{len(imgs)} support tiles but {len(masks)} masks: give one mask each")
    names = list(DEFAULT_CLASS_NAMES)
    supports = (
        load_supports([(_path(i), _path(m)) for i, m in zip(imgs, masks, strict=True)], names)
        if imgs else None
    )
    if supports is None and method in ("fewshot", "sam-match"):
        raise InputError("this method needs at least one annotated tile (tile + mask)")
    cfg = AerialConfig(method=method, refine=bool(refine), tile=int(tile),
                       overlap=min(96, int(tile) // 4), k=int(k), pixel_size=float(pixel_size),
                       building_height=float(building_height))
    out = (out_root or runtime.results_dir() / "aerial") / uuid.uuid4().hex[:12]
    stats = run_aerial(_path(image), supports, names, cfg, out, progress=progress)
    rows = [[name, round(100 * c["fraction"], 2), round(c["area_m2"], 1)]
            for name, c in stats["classes"].items()]
    if stats["unknown"]["pixels"]:
        rows.append(["unknown", round(100 * stats["unknown"]["fraction"], 2),
                     round(stats["unknown"]["area_m2"], 1)])
    summary = (f"**{stats['method']}**: {stats['image']['width']}×{stats['image']['height']} px, "
               f"{stats['buildings']} buildings, {stats['seconds_per_megapixel']:.1f} s/MP")
    return (str(out / "map.png"), rows, str(out / "city.glb"),
            [str(out / n) for n in OUTPUT_FILES], summary)


def _on_page(fn: Callable[..., Any]) -> Callable[..., Any]:
    """User errors as one-line ``gr.Error``; anything else logged, shown as a short notice."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except InputError as e:
            raise gr.Error(str(e), print_exception=False) from None
        except Exception as e:
            log.exception("aerial job failed")
            raise gr.Error(f"the aerial job failed ({type(e).__name__}); see the server log",
                           print_exception=False) from None

    return wrapper


@_on_page
def _run(image: Any, imgs: Any, masks: Any, method: str, refine: bool, tile: float, k: float,
         pixel_size: float, height: float, progress: Any = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008
    def report(stage: str, done: int, total: int) -> None:
        progress(done / max(total, 1), desc=f"{stage}: {done}/{total} tiles")

    map_path, rows, glb, paths, text = make_city_map(
        image, imgs, masks, method, refine, tile=int(tile), k=int(k), pixel_size=pixel_size,
        building_height=height, progress=report,
    )
    return text, map_path, rows, glb, paths


def build_aerial_tab() -> None:
    """The tab's components and wiring (call inside a ``gr.Tab``)."""
    gr.Markdown(INTRO)
    with gr.Row():
        with gr.Column(scale=1):
            image = gr.File(label="Aerial photo", file_types=["image", ".tif", ".tiff", ".ppm"])
            imgs = gr.File(label="Annotated tiles (optional)", file_count="multiple",
                           file_types=["image"])
            masks = gr.File(label="Their class-index masks, same order", file_count="multiple",
                            file_types=[".png"])
            method = gr.Radio(METHOD_CHOICES, value="fewshot", label="Method")
            refine = gr.Checkbox(label="Refine boundaries with SAM (slower)", value=False)
            with gr.Accordion("Settings", open=False):
                tile = gr.Slider(224, 1036, value=518, step=14, label="Tile size (px)")
                k = gr.Slider(2, 16, value=8, step=1, label="k-means clusters")
                pixel_size = gr.Number(value=0.5, label="Ground size of a pixel (m)")
                height = gr.Number(value=10.0, label="Building height (m)")
            run = gr.Button("Make the city map", variant="primary", elem_id="aerial-run")
        with gr.Column(scale=2):
            summary = gr.Markdown()
            city_map = gr.Image(label="City map", type="filepath", interactive=False)
            stats = gr.Dataframe(headers=STATS_HEADERS, label="Areas", interactive=False)
            model = gr.Model3D(label="3D city model", clear_color=(0.9, 0.9, 0.9, 1.0))
            files = gr.File(label="Downloads", file_count="multiple", interactive=False)

    run.click(_run, inputs=[image, imgs, masks, method, refine, tile, k, pixel_size, height],
              outputs=[summary, city_map, stats, model, files])

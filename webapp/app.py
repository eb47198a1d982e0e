"""``build_app(backend) -> gr.Blocks``: the demo page (layout and wiring only).

The handlers live in :mod:`webapp.callbacks`; the visitor's results live in ``gr.State``. The app
is built by a function and launched by :mod:`webapp.serve`, so tests import it without a server.

Every event has a fixed ``api_name``. The public API (``gradio_client``; README "Use"):

- ``/segment``: support image files, their mask files, query files, class name, model spec,
  threshold -> (summary JSON, one mask PNG per query) (:meth:`DemoCallbacks.api_segment`);
- ``/review``: a result id -> a message (queued for Label Studio, or why not);
- ``/status``: the service status panel (Markdown);
- ``/aerial_map``: the aerial tab's city map.

The page's own events (editor values, per-visitor state) are private: ``segment_page``,
``status_after_run``, ``select_result``, ``select_row``, ``send_to_annotators``,
``status_on_load``, ``class_choices``.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

import gradio as gr

from webapp.backends import Backend, make_backend
from webapp.callbacks import DemoCallbacks, Detail, discover_checkpoints
from webapp.examples import build_examples
from webapp.inputs import MAX_SUPPORTS
from webapp.results import TABLE_HEADERS
from webapp.uploads import CHAMPION

INTRO = """# dinoseg · few-shot segmentation
Show the model **one to four example images with the object marked** (paint over it with the
brush, or upload a mask PNG), add the **images to segment**, and press **Segment**. No
training per object: a frozen DINOv2 compares every pixel of your images with your examples.
"""
CSS = """
#run {min-height: 3em}
.dinoseg-notice p {color: var(--color-accent)}
"""


def _model_choices() -> list[tuple[str, str]]:
    choices = [("Champion (model registry)", CHAMPION), ("Prototype baseline", "prototype")]
    return choices + [(f"Checkpoint {p}", p) for p in discover_checkpoints()]


def _support_inputs() -> tuple[list[gr.ImageEditor], list[gr.File]]:
    editors, mask_files = [], []
    with gr.Tabs():
        for i in range(1, MAX_SUPPORTS + 1):
            with gr.Tab(f"Support {i}", id=f"support-tab-{i}"):
                editors.append(
                    gr.ImageEditor(
                        label=f"Support {i}: the image — paint over the object",
                        type="numpy",
                        image_mode="RGBA",
                        sources=["upload", "clipboard"],
                        brush=gr.Brush(colors=["#ff4020"], color_mode="fixed"),
                        layers=gr.LayerOptions(allow_additional_layers=False, layers=["object"]),
                        transforms=(),
                        height=440,
                        elem_id=f"support-{i}",
                    )
                )
                mask_files.append(
                    gr.File(
                        label="…or upload its mask: a PNG, white (nonzero) = object; "
                        "used instead of brush strokes",
                        file_types=["image"],
                        height=120,
                        elem_id=f"support-mask-{i}",
                    )
                )
    return editors, mask_files


@dataclass
class Page:
    """Handles to the page's components (the wiring and the tests use them)."""

    views: gr.State
    selected: gr.State
    editors: list[gr.ImageEditor]
    mask_files: list[gr.File]
    queries: gr.File
    class_name: gr.Dropdown
    model: gr.Dropdown
    threshold: gr.Slider
    run: gr.Button
    notice: gr.Markdown
    gallery: gr.Gallery
    overlay: gr.Image
    mask: gr.Image
    heat: gr.Image
    summary: gr.Markdown
    download: gr.DownloadButton
    send: gr.Button
    table: gr.Dataframe
    all_masks: gr.File
    status: gr.Markdown
    refresh: gr.Button

    @property
    def detail(self) -> list[Any]:
        """Outputs of a :class:`Detail`, in its field order."""
        return [self.overlay, self.mask, self.heat, self.summary, self.download, self.selected]


def build_app(backend: Backend | None = None, *, examples: bool = True) -> gr.Blocks:
    """The demo page bound to an execution backend (default: :func:`make_backend`).

    The component handles are kept on the returned Blocks as ``demo.page`` (:class:`Page`).
    """
    cb = DemoCallbacks(backend or make_backend())
    with gr.Blocks(title="dinoseg · few-shot segmentation") as demo:
        gr.Markdown(INTRO)
        with gr.Accordion("Service status", open=True), gr.Row():
            status = gr.Markdown(elem_id="status")
            refresh = gr.Button("Refresh status", size="sm", scale=0)
        with gr.Tabs():
            with gr.Tab("Few-shot segmentation", id="segment"):
                page = _segment_page(status, refresh, examples=examples)
            aerial_method = _add_aerial_tab(cb.backend)
        _wire(page, cb)
        _add_api(cb)
        if aerial_method is None:
            demo.load(cb.status, outputs=page.status, api_name="status_on_load",
                      api_visibility="private")  # fmt: skip
        else:  # one status call on load: the panel and the aerial tab's starting method
            demo.load(lambda: _status_and_aerial_method(cb), outputs=[page.status, aerial_method],
                      api_name="status_on_load", api_visibility="private")  # fmt: skip
        demo.load(lambda: gr.Dropdown(choices=cb.class_choices()), outputs=page.class_name,
                  api_name="class_choices", api_visibility="private")  # fmt: skip
    demo.page = page  # type: ignore[attr-defined]
    return demo


def _segment_page(status: gr.Markdown, refresh: gr.Button, *, examples: bool) -> Page:
    """Inputs on top (supports | queries + model), the examples, then the results."""
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            gr.Markdown("### 1 · Examples of the object (support)")
            editors, mask_files = _support_inputs()
        with gr.Column(scale=2):
            gr.Markdown("### 2 · Images to segment (queries)")
            queries = gr.File(
                label="Query images", file_count="multiple", file_types=["image"],
                elem_id="queries",
            )  # fmt: skip
            class_name = gr.Dropdown(
                [], value=None, allow_custom_value=True, filterable=True,
                label="What is it? The class name (pick one or type a new one; annotators "
                "see it)", elem_id="class-name",
            )  # fmt: skip
            gr.Markdown("### 3 · Model")
            model = gr.Dropdown(
                _model_choices(), value=CHAMPION, allow_custom_value=True,
                label="Model (or type a checkpoint directory)", elem_id="model",
            )  # fmt: skip
            threshold = gr.Slider(0.05, 0.95, value=0.5, step=0.05, label="Threshold")
            run = gr.Button("Segment", variant="primary", elem_id="run")
            notice = gr.Markdown(elem_id="notice", elem_classes="dinoseg-notice")
    if examples:
        _add_examples(editors[0], mask_files[0], queries, class_name, model)
    gr.Markdown("## Results")
    gallery = gr.Gallery(
        label="Overlays — click one for its details", columns=6, fit_columns=False,
        height=180, object_fit="contain", allow_preview=False, elem_id="gallery",
    )  # fmt: skip
    with gr.Row():
        overlay = gr.Image(label="Overlay", interactive=False, elem_id="result-overlay")
        mask = gr.Image(
            label="Mask", image_mode="L", format="png", interactive=False, elem_id="result-mask"
        )
        heat = gr.Image(label="Probability", interactive=False, elem_id="result-heatmap")
    summary = gr.Markdown(elem_id="result-summary")
    with gr.Row():
        download = gr.DownloadButton("Download mask PNG", elem_id="download-mask")
        send = gr.Button("Send to annotators", elem_id="send")
    table = gr.Dataframe(headers=TABLE_HEADERS, interactive=False, elem_id="results-table")
    all_masks = gr.File(label="All masks", file_count="multiple", interactive=False)
    return Page(
        gr.State([]), gr.State(None), editors, mask_files, queries, class_name, model, threshold,
        run,
        notice, gallery, overlay, mask, heat, summary, download, send, table, all_masks,
        status, refresh,
    )  # fmt: skip


def _wire(page: Page, cb: DemoCallbacks) -> None:
    """Connect the events to the handlers."""
    p = page

    def on_run(data: dict[Any, Any], progress: gr.Progress = gr.Progress()) -> tuple:  # noqa: B008
        shown = cb.run(
            data[p.model], data[p.threshold], data[p.queries],
            [data[e] for e in p.editors], [data[f] for f in p.mask_files],
            report=lambda f, d: progress(f or 0.0, desc=d), class_name=data[p.class_name],
        )  # fmt: skip
        if shown.notice:
            gr.Info(shown.notice)
        return (shown.views, shown.gallery, shown.table, shown.all_masks, shown.notice,
                *shown.detail)  # fmt: skip

    def on_gallery(views: list[dict[str, Any]], evt: gr.SelectData) -> Detail:
        return cb.select(views, evt.index)

    def on_table(views: list[dict[str, Any]], evt: gr.SelectData) -> Detail:
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        return cb.select(views, row)

    def on_send(views: list[dict[str, Any]], index: int | None) -> str:
        gr.Info(cb.send_to_annotators(views, index))
        return cb.status()

    private: dict[str, Any] = {"api_visibility": "private"}
    p.run.click(
        on_run, inputs={p.model, p.threshold, p.queries, p.class_name, *p.editors, *p.mask_files},
        outputs=[p.views, p.gallery, p.table, p.all_masks, p.notice, *p.detail],
        concurrency_limit=run_limit(cb), concurrency_id="segment", api_name="segment_page",
        **private,
    ).then(cb.status, outputs=p.status, api_name="status_after_run", **private)  # fmt: skip
    p.gallery.select(on_gallery, inputs=p.views, outputs=p.detail, api_name="select_result",
                     **private)  # fmt: skip
    p.table.select(on_table, inputs=p.views, outputs=p.detail, api_name="select_row", **private)
    p.send.click(on_send, inputs=[p.views, p.selected], outputs=p.status,
                 api_name="send_to_annotators", **private)  # fmt: skip
    p.refresh.click(cb.status, outputs=p.status, api_name="status")


def run_limit(cb: DemoCallbacks) -> int:
    """Segment requests run at once (in-process: one model, one at a time)."""
    return 4 if cb.backend.kind == "celery" else 1


def _add_api(cb: DemoCallbacks) -> None:
    """``/segment`` and ``/review`` for programs (hidden components; see the module docstring)."""
    with gr.Group(visible=False):
        images = gr.File(label="support images", file_count="multiple", file_types=["image"])
        masks = gr.File(label="support masks (nonzero = the object)", file_count="multiple",
                        file_types=["image"])  # fmt: skip
        queries = gr.File(label="queries", file_count="multiple", file_types=["image"])
        class_name = gr.Textbox(label="class name")
        model = gr.Textbox(label="model spec (default: the champion)")
        threshold = gr.Number(label="threshold (default: the model's)", value=None)
        summary = gr.JSON(label="results")
        mask_files = gr.File(label="masks", file_count="multiple")
        result_id = gr.Textbox(label="result id")
        message = gr.Textbox(label="message")
        segment, review = gr.Button("segment"), gr.Button("review")
    segment.click(cb.api_segment, inputs=[images, masks, queries, class_name, model, threshold],
                  outputs=[summary, mask_files], api_name="segment",
                  concurrency_limit=run_limit(cb), concurrency_id="segment")  # fmt: skip
    review.click(cb.api_review, inputs=result_id, outputs=message, api_name="review")


def _add_examples(
    editor: gr.ImageEditor, mask_file: gr.File, queries: gr.File, class_name: gr.Dropdown,
    model: gr.Dropdown,
) -> None:
    """Example rows: a support image, its mask file, the queries, the class, the prototype."""
    found = build_examples()
    rows = [
        [
            {"background": str(e.support), "layers": [], "composite": None},
            str(e.mask),
            [str(q) for q in e.queries],
            e.class_name,
            "prototype",
        ]
        for e in found
    ]
    if rows:
        gr.Examples(
            rows, inputs=[editor, mask_file, queries, class_name, model],
            label="Examples (offline: pictures shipped with the installed packages)",
            example_labels=[e.title for e in found],
        )  # fmt: skip


def _add_aerial_tab(backend: Backend) -> gr.Radio | None:
    """The aerial use case's tab, when the ``aerial`` extra (scikit-learn, scipy, trimesh) is
    installed; its method radio (None: no tab)."""
    if importlib.util.find_spec("trimesh") is None:
        return None
    from webapp.aerial_tab import build_aerial_tab

    with gr.Tab("Aerial images", id="aerial"):
        return build_aerial_tab(backend)


def _status_and_aerial_method(cb: DemoCallbacks) -> tuple[str, gr.Radio]:
    """On page load: the status panel and the aerial tab's starting method, from one reply."""
    from webapp.aerial_tab import default_method

    reply, markdown = cb.status_reply()
    return markdown, gr.Radio(value=default_method(reply))

"""How many uploads Gradio's image editor makes per button click, on a minimal page (one editor
like the demo's support editor, one button, headless Chromium): the check to re-run after a
Gradio upgrade (README "End to end": the editor re-uploads its unchanged layers after every
event, which costs the browser row its goal).

Three pages, one CamVid image in the editor, ``--clicks`` clicks each:
``none`` (the button does not touch the editor, which has no listener), ``listener`` (the
editor has an ``upload`` listener, the button does not read it), ``input`` (the button reads
the editor, as the demo's "Segment" does). Prints, per page and click, the uploads before
the request joins the queue and in the ``--settle`` seconds after the answer is shown.

Usage: python bench/editor_uploads.py [--clicks 4] [--settle 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IMAGE = next(iter(sorted((REPO.parent / "shared/data/camvid/val/images").glob("*.jpg"))), None)


def build_page(mode: str):  # -> gr.Blocks
    import gradio as gr

    with gr.Blocks() as demo:
        editor = gr.ImageEditor(
            type="numpy", image_mode="RGBA", sources=["upload"], transforms=(),
            brush=gr.Brush(colors=["#ff4020"], color_mode="fixed"), elem_id="editor",
            layers=gr.LayerOptions(allow_additional_layers=False, layers=["object"]),
        )  # fmt: skip
        out = gr.Markdown(elem_id="answer")
        button = gr.Button("Go", elem_id="go")
        answer = lambda *_: f"answer {time.monotonic():.3f}"  # noqa: E731
        if mode == "input":
            button.click(answer, inputs=editor, outputs=out)
        else:
            button.click(answer, outputs=out)
        if mode == "listener":
            editor.upload(lambda v: None, inputs=editor)
    return demo


def clicks(url: str, n: int, settle: float) -> list[tuple[int, int, float]]:
    """(uploads before the join, uploads after the answer, seconds to the answer) per click."""
    sys.path.insert(0, str(REPO))
    from tests.webapp.demo_page import chromium_page

    seen: list[tuple[float, str]] = []
    out = []
    with chromium_page(viewport={"width": 1200, "height": 900}) as page:
        page.goto(url)
        page.wait_for_selector("#go")
        page.wait_for_timeout(2000)
        page.on("request", lambda r: seen.append((time.monotonic(), r.url.split("?")[0])))
        page.set_input_files("#editor input[type=file]", str(IMAGE))
        page.wait_for_timeout(int(settle * 1000))
        for _ in range(n):
            seen.clear()
            old, start = page.inner_text("#answer"), time.monotonic()
            page.click("#go")
            page.wait_for_function("(old) => document.querySelector('#answer').innerText != old",
                                   arg=old, polling=20)  # fmt: skip
            shown = time.monotonic()
            page.wait_for_timeout(int(settle * 1000))
            joins = [t for t, u in seen if u.endswith("/queue/join")]
            first = joins[0] if joins else shown
            ups = [t for t, u in seen if u.endswith("/upload")]
            out.append((sum(t < first for t in ups), sum(t > shown for t in ups), shown - start))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clicks", type=int, default=4)
    ap.add_argument("--settle", type=float, default=3.0, help="seconds watched after a click")
    ap.add_argument("--port", type=int, default=7899)
    args = ap.parse_args()
    if IMAGE is None:
        sys.exit("no CamVid image under ../shared/data/camvid/val/images")
    import gradio as gr

    print(f"gradio {gr.__version__}; uploads per click: before the join / after the answer")
    for mode in ("none", "listener", "input"):
        demo = build_page(mode)
        demo.launch(server_port=args.port, prevent_thread_lock=True, quiet=True)
        try:
            rows = clicks(f"http://127.0.0.1:{args.port}/", args.clicks, args.settle)
        finally:
            demo.close()
        cells = "  ".join(f"{b}/{a}" for b, a, _ in rows)
        print(f"{mode:9s} {cells}   median click -> answer "
              f"{statistics.median(s for _, _, s in rows):.2f} s")


if __name__ == "__main__":
    main()

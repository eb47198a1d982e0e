"""The demo page in Debian's Chromium driven by Playwright: the one page driver of the browser
test (``test_browser.py``) and the latency bench's browser leg (``bench/latency_e2e.py``).

Gradio renders with JavaScript, so every step waits for an element. Playwright never downloads
a browser here: ``/usr/bin/chromium`` (``apt-get install -y chromium chromium-driver``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
#: a result's summary names its query and its mask image has finished loading
RESULT_SHOWN = ("(name) => (document.querySelector('#result-summary')?.innerText || '')"
                ".includes(name) && !!document.querySelector('#result-mask img')?.complete")


def wait_text(page, selector: str, text: str, present: bool = True,
              timeout_ms: float = 60_000) -> None:  # fmt: skip
    """Wait until the element's text contains (or no longer contains) ``text``."""
    script = ("([sel, text, want]) => (document.querySelector(sel)?.innerText || '')"
              ".includes(text) == want")  # fmt: skip
    page.wait_for_function(script, arg=[selector, text, present], timeout=timeout_ms)


class DemoPage:
    """One open demo page: uploads, the model choice and the "Segment" click."""

    def __init__(self, page):
        self.page = page
        self._open: set[Any] = set()  # requests started and not finished (settle)
        self._last = time.monotonic()
        page.on("request", self._started)
        page.on("requestfinished", self._ended)
        page.on("requestfailed", self._ended)

    def _started(self, request: Any) -> None:
        if "/queue/data" not in request.url and "heartbeat" not in request.url:
            self._open.add(request)
        self._last = time.monotonic()

    def _ended(self, request: Any) -> None:
        self._open.discard(request)
        self._last = time.monotonic()

    def _clear(self, selector: str, label: str) -> None:
        button = self.page.locator(f"{selector} button[aria-label='{label}']")
        if button.count():
            button.first.click()

    def upload(self, support: tuple[Path, Path] | None, queries: list[Path]) -> None:
        """Upload a support (image, mask file; ``None`` keeps the current one) and the queries,
        then wait until the page shows all of them (the support image drawn on its canvas)."""
        p = self.page
        if support is not None:
            self._clear("#support-1", "Clear canvas")
            self._clear("#support-mask-1", "Clear")
            self._upload_support_image(support[0])
            p.set_input_files("#support-mask-1 input[type=file]", str(support[1]))
        self._clear("#queries", "Clear")
        p.set_input_files("#queries input[type=file]", [str(q) for q in queries])
        if support is not None:
            wait_text(p, "#support-mask-1", support[1].stem)
        for q in queries:
            wait_text(p, "#queries", q.stem)
        wait_text(p, "#support-1", "Upload an image", present=False)
        if support is not None:
            p.wait_for_timeout(300)  # the canvas draws the new background

    def _upload_support_image(self, image: Path, tries: int = 3) -> None:
        """Gradio's image editor now and then drops an upload (seen in the bench, right after
        another request): the file is given again until the canvas shows it."""
        for attempt in range(tries):
            if attempt:  # the same file again is no change to the input: empty it first
                self.page.set_input_files("#support-1 input[type=file]", [])
            self.page.set_input_files("#support-1 input[type=file]", str(image))
            try:
                wait_text(self.page, "#support-1", "Upload an image", False, timeout_ms=20_000)
                return
            except Exception:
                if attempt == tries - 1:
                    raise

    def settle(self, quiet_s: float = 0.5, timeout_s: float = 15.0) -> None:
        """Wait until no request of the page has started or been open for ``quiet_s`` (Gradio's
        image editor re-uploads its layers for a second or two after every event); the queue's
        event stream does not count."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self._open and time.monotonic() - self._last >= quiet_s:
                return
            self.page.wait_for_timeout(50)

    def choose_prototype(self) -> None:
        self.page.click("#model input")
        self.page.get_by_role("option", name="Prototype baseline").click()

    def segment(self, first: Path, timeout_ms: float = 180_000) -> float:
        """Click "Segment"; seconds until ``first``'s result (summary and mask) is shown."""
        start = time.monotonic()
        self.page.click("#run")
        self.page.wait_for_function(RESULT_SHOWN, arg=first.name, timeout=timeout_ms,
                                    polling=20)  # fmt: skip
        return time.monotonic() - start


@contextmanager
def chromium_page(**options: Any) -> Iterator[Any]:
    """A new page (``options``: Playwright's ``new_page`` options) in Debian's headless
    Chromium, closed on the way out (also the Label Studio browser tests')."""
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.is_file():
        raise RuntimeError(f"{CHROMIUM} missing: apt-get install -y chromium chromium-driver")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS, headless=True)
        try:
            yield browser.new_page(**options)
        finally:
            browser.close()


@contextmanager
def demo_page(url: str, **options: Any) -> Iterator[DemoPage]:
    """The demo at ``url`` open in a 1400x1000 page (``options``: more new_page options)."""
    with chromium_page(viewport={"width": 1400, "height": 1000}, **options) as page:
        page.set_default_timeout(60_000)
        page.goto(url, wait_until="domcontentloaded")
        page.wait_for_selector("#run")
        # the support editor drops a file given before its canvas exists (0.3-0.9 s after load;
        # the first page of a freshly started app lost every upload without this wait)
        page.wait_for_selector("#support-1 canvas", state="attached")
        yield DemoPage(page)

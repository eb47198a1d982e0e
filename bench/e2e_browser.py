"""The browser leg of ``bench/latency_e2e.py``: Debian's Chromium driven by Playwright on the
demo page, timed from the click on "Segment" until the first result's mask is on the page.

Each run uploads new queries (and, for a new support, a new support image and mask file)
before the clock starts; the clock stops when the summary names the first new query and its
mask image is shown.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _contains(page, selector: str, text: str, want: bool = True,
              timeout: float = 60_000) -> None:
    script = ("([sel, text, want]) => (document.querySelector(sel)?.innerText || '')"
              ".includes(text) == want")  # fmt: skip
    page.wait_for_function(script, arg=[selector, text, want], timeout=timeout)


class DemoPage:
    """The demo page in a headless Chromium."""

    def __init__(self, page):
        self.page = page
        self.support_set = False

    def _clear(self, selector: str, label: str) -> None:
        button = self.page.locator(f"{selector} button[aria-label='{label}']")
        if button.count():
            button.first.click()

    def set_support(self, image: Path, mask: Path) -> None:
        p = self.page
        if self.support_set:
            self._clear("#support-1", "Clear canvas")
            self._clear("#support-mask-1", "Clear")
        for attempt in range(3):  # an upload right after the page loads is sometimes dropped
            p.set_input_files("#support-1 input[type=file]", str(image))
            try:
                _contains(p, "#support-1", "Upload an image", want=False, timeout=15_000)
                break
            except Exception:
                if attempt == 2:
                    raise
        p.set_input_files("#support-mask-1 input[type=file]", str(mask))
        _contains(p, "#support-mask-1", mask.stem)
        p.wait_for_timeout(300)  # the canvas draws the new background
        self.support_set = True

    def set_queries(self, queries: list[Path]) -> None:
        self._clear("#queries", "Clear")
        self.page.set_input_files("#queries input[type=file]", [str(q) for q in queries])
        for q in queries:
            _contains(self.page, "#queries", q.stem)

    def choose_prototype(self) -> None:
        self.page.click("#model input")
        self.page.get_by_role("option", name="Prototype baseline").click()

    def segment(self, first: Path, timeout_ms: float = 180_000) -> float:
        """Click "Segment"; seconds until ``first``'s result (summary and mask) is shown."""
        p = self.page
        start = time.monotonic()
        p.click("#run")
        script = ("(name) => (document.querySelector('#result-summary')?.innerText || '')"
                  ".includes(name) && document.querySelector('#result-mask img')?.complete")
        p.wait_for_function(script, arg=first.name, timeout=timeout_ms, polling=20)
        return time.monotonic() - start


@contextmanager
def demo_page(url: str) -> Iterator[DemoPage]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            page.goto(url, wait_until="domcontentloaded")
            page.wait_for_selector("#run")
            demo = DemoPage(page)
            demo.choose_prototype()
            yield demo
        finally:
            browser.close()

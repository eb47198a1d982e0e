"""The rounds of one strategy, the same for both ways of running the loop.

Round 0 measures the served system before any label. Each next round: segment the pool (every
class's request) -> the strategy picks ``budget`` results -> the annotator labels them -> the
system learns (support memory at once, then retrain + promotion gate) -> the test split is
segmented again and scored. A :class:`Driver` does the work (in-process or on the stack); a
round that fails records its error and the loop goes on with the last good model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from mlops.loop.scenario import Scenario
from mlops.loop.strategies import Candidate, pick

log = logging.getLogger("mlops.loop")


@dataclass
class Learned:
    """What the system did with a round's labels."""

    labels: int  # labels written this round
    champion: str | None  # the served model version after the round
    errors: list[str] = field(default_factory=list)


class Driver(Protocol):
    """How the loop reaches the served system."""

    def segment_pool(self, scen: Scenario) -> list[Candidate]:
        """Every class's request on the pool; one candidate per (image, class)."""
        ...

    def annotate(self, scen: Scenario, picked: list[Candidate]) -> Learned:
        """Queue ``picked`` for review, let the oracle label them, sync, retrain and gate."""
        ...

    def test(self, scen: Scenario) -> tuple[dict[str, dict[str, float]], str | None]:
        """Per part of the test split (``all``, ``choose``, ``tell``) and class: IoU (percent)
        of the served system; and the champion."""
        ...


def _miou(ious: dict[str, float]) -> float | None:
    values = [v for v in ious.values() if v is not None and v == v]  # not NaN
    return float(np.mean(values)) if values else None


def _row(r: int, labels: int, ious: dict[str, dict[str, float]], champion: str | None,
         seconds: float, seed: int, errors: list[str]) -> dict[str, Any]:  # fmt: skip
    parts = {p: {"miou": _miou(v), "class_iou": v} for p, v in ious.items() if p != "all"}
    return {"round": r, "labels": labels, "miou": _miou(ious["all"]),
            "class_iou": ious["all"], "parts": parts, "champion": champion,
            "seconds": round(seconds, 1), "seed": seed, "errors": errors}  # fmt: skip


def run_rounds(driver: Driver, scen: Scenario, strategy: str, rounds: int, budget: int,
               seed: int, on_round: Callable[[dict[str, Any]], None] | None = None
               ) -> list[dict[str, Any]]:  # fmt: skip
    """The rounds of ``strategy`` (see the module docstring); one row per round."""
    rng = np.random.default_rng(seed)
    done: set[tuple[str, str]] = set()
    start = time.monotonic()
    ious, champion = driver.test(scen)
    rows = [_row(0, 0, ious, champion, time.monotonic() - start, seed, [])]
    if on_round:
        on_round(rows[-1])
    total = 0
    for r in range(1, rounds + 1):
        t0, errors = time.monotonic(), []
        try:
            picked = pick(strategy, driver.segment_pool(scen), budget, rng, done,
                          getattr(driver, "describe", None))
            learned = driver.annotate(scen, picked)
            done.update((c.image, c.class_name) for c in picked)
            total += learned.labels
            errors += learned.errors
        except Exception as e:  # the round reports it; labels already written stay
            log.exception("round %d of %s failed", r, strategy)
            errors.append(f"{type(e).__name__}: {e}")
        ious, champion = driver.test(scen)
        rows.append(_row(r, total, ious, champion, time.monotonic() - t0, seed, errors))
        log.info("%s round %d: %d labels, mIoU %s", strategy, r, total, rows[-1]["miou"])
        if on_round:
            on_round(rows[-1])
    return rows

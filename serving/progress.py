"""Progress reports of a long job: ``report(fraction in [0, 1] or None when unknown, text)``."""

from __future__ import annotations

from collections.abc import Callable

Report = Callable[[float | None, str], None]


def no_report(fraction: float | None, desc: str) -> None:
    """A progress callback that ignores progress."""

"""In-process execution: the serving layer's jobs run in the web app's process.

Used by ``dinoseg demo --no-worker`` and by the tests: the same :class:`serving.segment.SegmentJob`
the Celery task wraps (one model holder following the champion, one results store, one review
threshold), so the page cannot tell which backend answered. Review and status need the workers.
"""

from __future__ import annotations

import logging
from typing import Any

from dinoseg import runtime
from serving.aerial import DefaultMethod, run_aerial_job
from serving.progress import Report, no_report
from serving.segment import SegmentJob
from webapp.backends import BackendError

log = logging.getLogger(__name__)


class LocalBackend:
    """Serves ``segment`` and ``aerial`` in-process; review needs the workers (clear error).

    Args:
        job: the segment job (default: built from ``params.yaml`` section ``serving``).
    """

    kind = "local"

    def __init__(self, job: SegmentJob | None = None):
        self.job = job or SegmentJob.from_params()
        self.aerial_method = DefaultMethod(self.job.params)

    def warm(self) -> None:
        """Load the served model now, so the first visitor does not wait for it."""
        try:
            self.job.holder.get()
        except Exception:  # the first request will report the problem to the visitor
            log.warning("could not preload the served model", exc_info=True)

    def segment(self, request: dict[str, Any], report: Report = no_report) -> dict[str, Any]:
        return self.job.run(request, report).reply

    def aerial(self, request: dict[str, Any], report: Report = no_report) -> dict[str, Any]:
        return run_aerial_job(request, report, params=self.job.params)

    def queue_for_review(self, result_id: str) -> dict[str, Any]:
        raise BackendError(
            "Sending to annotators needs the workers and Label Studio; start the demo with "
            "`dinoseg demo` (without --no-worker)."
        )

    def status(self) -> dict[str, Any]:
        return {
            **self.job.status(),
            "aerial_method": self.aerial_method(),
            "review_queue_depth": None,
            "aerial_queue_depth": None,
            "outbox_depth": None,
            "label_studio_url": runtime.label_studio_url(),
            "backend": "in-process (no workers)",
        }

"""The page's event handlers, free of layout so tests call them without a server.

Each handler takes widget values and returns what the widgets show. Bad input
(:class:`InputError`) and unavailable services (:class:`BackendError`) become a ``gr.Error``
with the message only; anything else is logged with its traceback and shown as one line.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, ParamSpec, TypeVar

import gradio as gr

from dinoseg import runtime
from dinoseg.data.classnames import normalize_class_name
from dinoseg.io import InputError
from serving.config import known_classes
from webapp import results
from webapp.backends import Backend, BackendError, Report, no_report
from webapp.inputs import read_queries, read_support_files, read_supports
from webapp.uploads import CHAMPION, StoredArrays, make_request

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")


def user_errors(fn: Callable[P, T]) -> Callable[P, T]:
    """Turn exceptions into a one-line ``gr.Error`` (never a stack trace on the page)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except (InputError, BackendError) as e:
            raise gr.Error(str(e), print_exception=False) from None
        except Exception as e:
            log.exception("%s failed", fn.__name__)
            raise gr.Error(
                f"Something went wrong on the server ({type(e).__name__}); details are in the "
                "server log.",
                print_exception=False,
            ) from None

    return wrapper


class Detail(NamedTuple):
    """The selected result: three image files (overlay JPEG, mask PNG, heat map JPEG), its
    summary, its mask download, its index."""

    overlay: str | None
    mask: str | None
    heatmap: str | None
    summary: str
    download: str | None
    selected: int | None


class Shown(NamedTuple):
    """Everything a run updates (the app wires its outputs in this order)."""

    views: list[dict[str, Any]]
    gallery: list[tuple[str, str]]
    table: list[list[Any]]
    all_masks: list[str]
    notice: str
    detail: Detail


EMPTY_DETAIL = Detail(None, None, None, "", None, None)


def detail(views: Sequence[dict[str, Any]] | None, index: int | None) -> Detail:
    """The detail panel for ``views[index]`` (empty when there is no such result)."""
    if not views or index is None or not 0 <= index < len(views):
        return EMPTY_DETAIL
    view = views[index]
    over, mask, heat = results.shown_files(view)
    return Detail(over, mask, heat, results.describe(view), results.download_file(view), index)


class DemoCallbacks:
    """Handlers bound to one execution backend (shared); user data travels in ``gr.State``."""

    def __init__(self, backend: Backend):
        self.backend = backend
        self.arrays = StoredArrays()  # supports stored lately: not PNG-encoded again

    @user_errors
    def run(
        self,
        model: str | None,
        threshold: float | None,
        queries: str | Sequence[str] | None,
        editors: Sequence[dict[str, Any] | None],
        mask_files: Sequence[str | None],
        report: Report = no_report,
        class_name: str | None = None,
    ) -> Shown:
        """Validate the inputs, run ``dinoseg.segment`` and show the first result."""
        reply, views = self._segment(read_supports(editors, mask_files), read_queries(queries),
                                     model, threshold, class_name, report)  # fmt: skip
        gallery = [(results.shown_files(v)[0], results.caption(v)) for v in views]
        masks = [results.download_file(v) for v in views]
        notice = str(reply.get("notice") or "")
        return Shown(
            views, gallery, results.table_rows(views), masks, notice, detail(views, 0)
        )

    @user_errors
    def api_segment(
        self,
        support_images: Sequence[str] | None,
        support_masks: Sequence[str] | None,
        queries: Sequence[str] | None,
        class_name: str | None = None,
        model: str | None = None,
        threshold: float | None = None,
    ) -> tuple[dict[str, Any], list[str]]:
        """The ``/segment`` API: support image files with their mask files (nonzero = the
        object), query files -> (summary JSON, one mask PNG per query, named after it)."""
        supports = read_support_files(support_images, support_masks)
        reply, views = self._segment(supports, read_queries(queries), model or CHAMPION,
                                     threshold, class_name, no_report)  # fmt: skip
        summary = {
            "model_version": reply.get("model_version"), "notice": reply.get("notice"),
            "class_name": reply.get("class_name"),
            "results": [{"id": v["id"], "query": v["name"], "confidence": v["confidence"],
                         "needs_review": v["needs_review"],
                         "foreground": round(v["coverage"], 6)} for v in views],
        }  # fmt: skip
        return summary, [results.download_file(v) for v in views]

    def _segment(self, supports: list[Any], queries: list[Any], model: str | None,
                 threshold: float | None, class_name: str | None,
                 report: Report) -> tuple[dict[str, Any], list[dict[str, Any]]]:  # fmt: skip
        """Store the inputs, run ``dinoseg.segment``: (reply, views)."""
        request, names = make_request(supports, queries, model=model, threshold=threshold,
                                      class_name=normalize_class_name(class_name),
                                      arrays=self.arrays)  # fmt: skip
        reply = self.backend.segment(request, report)
        views = results.views_from_reply(reply, names)
        if not views:
            raise BackendError("the workers returned no result")
        return reply, views

    @user_errors
    def select(self, views: list[dict[str, Any]] | None, index: int | None) -> Detail:
        """Show one result in the detail panel (gallery click or table row)."""
        return detail(views, index)

    @user_errors
    def send_to_annotators(self, views: list[dict[str, Any]] | None, index: int | None) -> str:
        """Queue the selected result for review in Label Studio; returns a message."""
        if not views or index is None or not 0 <= index < len(views):
            raise InputError("no result selected: run a segmentation first, then pick a result")
        view = views[index]
        return review_message(view["name"], self.backend.queue_for_review(view["id"]))

    @user_errors
    def api_review(self, result_id: str | None) -> str:
        """The ``/review`` API: queue a stored result (by its id) for review; a message."""
        from serving.store import read_meta

        rid = str(result_id or "").strip()
        read_meta(rid)  # a well-formed id of a stored result, else a clear InputError
        return review_message(rid, self.backend.queue_for_review(rid))

    def class_choices(self) -> list[str]:
        """Suggestions for the class-name box: the known classes (never raises)."""
        try:
            return known_classes()
        except Exception:  # a broken params file or dataset folder: no suggestions
            log.warning("cannot list the known classes", exc_info=True)
            return []

    def status(self) -> str:
        """Markdown for the status panel; never raises (a down service is a status)."""
        return self.status_reply()[1]

    def status_reply(self) -> tuple[dict[str, Any] | None, str]:
        """The backend's status reply (None when it did not answer) and the panel's Markdown;
        never raises (a down service is a status)."""
        try:
            s = self.backend.status()
        except (BackendError, InputError) as e:
            return None, f"**Workers:** not answering — {e}"
        except Exception as e:  # the panel must render whatever happens
            log.exception("status failed")
            return None, f"**Workers:** status unavailable ({type(e).__name__})"
        return s, status_markdown(s)


def review_message(name: str, reply: dict[str, Any]) -> str:
    """A ``dinoseg.queue_for_review`` reply -> one sentence for the visitor."""
    status = reply.get("status")
    if status == "queued":
        return f"{name}: sent to Label Studio (task {reply.get('task_id')})."
    if status == "duplicate":
        return f"{name}: already in the review queue (task {reply.get('task_id')})."
    if status == "outbox":
        return (f"{name}: Label Studio is not reachable; saved in the outbox, it will be "
                "delivered when Label Studio is up.")  # fmt: skip
    return f"{name}: {reply}"


def status_markdown(s: dict[str, Any]) -> str:
    """``dinoseg.status`` reply -> one Markdown block."""
    depth = s.get("review_queue_depth")
    queue = "unavailable without workers" if depth is None else f"{depth} task(s)"
    if s.get("outbox_depth"):
        queue += f" (+{s['outbox_depth']} waiting in the outbox)"
    if s.get("aerial_queue_depth") is not None:
        queue += f", aerial review {s['aerial_queue_depth']} tile(s)"
    url = s.get("label_studio_url") or runtime.label_studio_url()
    text = (
        f"**Execution:** {s.get('backend', 'Celery workers')} · "
        f"**Served model:** `{s.get('model_version') or 'none loaded yet'}` · "
        f"**Review queue:** {queue} · "
        f"**Label Studio:** [{url}]({url})"
    )
    if s.get("refused_annotations"):
        reasons = "; ".join(str(r) for r in s.get("refused_reasons") or [])
        text += (f"\n\n⚠️ **{s['refused_annotations']} annotation(s) refused** (not written to "
                 f"the labels; fix them in Label Studio): {reasons}")  # fmt: skip
    return text


def discover_checkpoints(root: Path = Path("runs"), limit: int = 20) -> list[str]:
    """Checkpoint directories (``model.safetensors`` + ``config.json``) under ``root``."""
    if not root.is_dir():
        return []
    found = sorted(
        str(p.parent) for p in root.glob("**/model.safetensors") if (p.parent / "config.json")
        .is_file()
    )
    return found[:limit]

"""What ``dinoseg demo`` prints once its stack is up: each service and where (no passwords)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from dinoseg import runtime
from infra.supervisor import ROOT, Service, Supervisor, redact


class Asked(Protocol):
    """What the banner reads of the stack's configuration (``infra.stack.StackConfig``)."""

    workers: int
    labelstudio: bool | None


def banner(sup: Supervisor, cfg: Asked, env: Mapping[str, str]) -> str:
    """What is up and where, printed once the app (and the worker) answer (no passwords)."""
    by_name = {s.name: s for s in sup.services}
    lines = ["dinoseg demo is up:", f"  app           {by_name['app'].url}"]
    nodes = [s for s in sup.services if s.name.startswith("worker")]
    if nodes:
        where = "" if len(nodes) == 1 else f" in each of {len(nodes)} workers"
        lines.append(f"  workers       {cfg.workers} Celery process(es){where}, broker "
                     f"{redact(runtime.broker_url(env))}")  # fmt: skip
    else:
        lines.append("  workers       none: the app runs the model in-process (--no-worker)")
    ls = by_name.get("labelstudio")
    if ls is None and cfg.labelstudio is False:
        lines.append("  Label Studio  not started (--no-labelstudio)")
    elif ls is None:
        lines.append(f"  Label Studio  not installed ({ROOT}/infra/labelstudio/install.sh)")
    elif ls.name not in sup.ready and ls.name not in sup.procs:
        lines.append(f"  Label Studio  {ls.url} did not start; see {sup.log_path(ls.name)}")
    elif ls.name not in sup.ready:
        lines.append(f"  Label Studio  {ls.url} starting (about a minute the first time)")
    else:
        lines.append(label_studio_line(ls, env))
    backend = by_name.get("mlbackend")
    if backend is not None:
        state = "up" if backend.name in sup.ready else "starting (loads DINOv2 and LiteMedSAM)"
        lines.append(f"  ML backend    {backend.url} ({state}; click-to-mask and pre-annotation "
                     "in the review project)")  # fmt: skip
    ml = by_name.get("mlflow")
    if ml is not None:
        store = redact(ml.env["MLFLOW_BACKEND_STORE_URI"])
        lines.append(f"  MLflow        {ml.url} (store {store})")
    else:
        lines.append(f"  MLflow store  {redact(runtime.tracking_uri(env))}")
    lines += [f"  logs          {sup.logs}", "Press Ctrl-C to stop."]
    return "\n".join(lines)


def label_studio_line(s: Service, env: Mapping[str, str]) -> str:
    creds = runtime.home(env) / "labelstudio-credentials.json"
    login = f" (login in {creds})" if creds.is_file() else ""
    return f"  Label Studio  {s.url}{login}"

"""Stage ``heads``: the supervised head that learns every labelled class (:mod:`dinoseg.heads`).

Reads ``params.yaml`` ``heads`` (every :class:`~dinoseg.heads.HeadTrainConfig` field, plus
``warm_start`` and ``warm_steps``) and ``data/train_set`` (the base dataset and the
annotators' training labels; ``labels_val`` is never read). With ``warm_start`` the run
continues from the registry champion's head when that head's classes are among the new ones
(a new class gets a new row), on the shorter ``warm_steps`` schedule; otherwise it starts from
scratch. Writes ``pipeline/head/`` (a head checkpoint directory) and ``metrics/heads.json``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from dinoseg.cache import cache_dir
from dinoseg.config import resolve
from dinoseg.heads import HeadTrainConfig
from mlops.pipeline import HEAD, METRICS, TRAIN_SET, section, stage_main

log = logging.getLogger("mlops.heads")


def champion_head(model_name: str) -> Path | None:
    """The registry champion's head directory, if there is a champion with a head."""
    from mlops import registry

    try:
        client = registry.registry_client()
        mv = registry.find_version(client, model_name, registry.CHAMPION)
        if mv is None:
            return None
        head = registry.download(client, mv) / "head"
    except Exception as e:  # no registry yet, or unreachable: train from scratch
        log.warning("no champion head to continue from (%s: %s)", type(e).__name__, e)
        return None
    return head if (head / "config.json").is_file() else None


def config(params: dict[str, Any] | None = None) -> tuple[HeadTrainConfig, bool]:
    """The stage's head config (pipeline wiring applied) and whether it warm-starts."""
    params = dict(section("heads") if params is None else params)
    warm, warm_steps = bool(params.pop("warm_start", True)), int(params.pop("warm_steps", 100))
    wired = {"data": [f"{TRAIN_SET}:train"],
             "feature_cache": params.get("feature_cache") or str(cache_dir("features"))}
    cfg = resolve(HeadTrainConfig, params, wired)
    if warm:
        init = champion_head(str(section("register").get("model_name", "dinoseg-segmenter")))
        if init is not None and _classes_grow(init, cfg):
            cfg = dataclasses.replace(cfg, init=str(init), steps=warm_steps)
    return cfg, bool(cfg.init)


def _classes_grow(init: Path, cfg: HeadTrainConfig) -> bool:
    """Whether the champion head can be continued: same blocks and backbone."""
    from dinoseg.heads.checkpoint import load_head

    head, ck = load_head(init)
    return tuple(head.spec.blocks) == tuple(cfg.blocks) and ck.backbone == cfg.backbone


def run() -> None:
    """The stage (see the module docstring)."""
    from dinoseg.heads import train_head
    from mlops.tracking import stage_run

    cfg, warm = config()
    with stage_run("heads", {**dataclasses.asdict(cfg), "warm_start": warm}) as run:
        out = train_head(cfg, HEAD)
        metrics = json.loads((out / "metrics.json").read_text())
        numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        numbers["warm_start"] = int(warm)
        METRICS.mkdir(parents=True, exist_ok=True)
        (METRICS / "heads.json").write_text(json.dumps(numbers, indent=1) + "\n")
        run.log_metrics(numbers)
        run.log_artifacts(out, "head")
        log.info("head: %s (warm start: %s)", numbers, warm)


if __name__ == "__main__":
    stage_main(run)

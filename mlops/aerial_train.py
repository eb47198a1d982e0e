"""Stage ``aerial_train``: the supervised aerial head (:mod:`dinoseg.aerial.train`).

Reads ``aerial/params.yaml`` section ``aerial_train`` (every
:class:`~dinoseg.aerial.train.AerialTrainConfig` field) and section ``aerial_review``
(:class:`~serving.aerial_review.AerialReviewConfig`, which the workers read too):
``labels_dir``, the annotators' aerial tile labels (default ``data/aerial_labels``), appended to
``data`` as the last, winning source once it holds a ``classes.json``, the head then of kind
``aerial_review.retrain_kind``. Writes ``pipeline/aerial/head/`` and
``metrics/aerial_train.json``; the head goes to the stage's MLflow run as ``head``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from dinoseg.aerial.train import AerialTrainConfig
from dinoseg.cache import cache_dir
from dinoseg.config import resolve
from mlops.aerial_common import HEAD, METRICS, section, use_run_id
from mlops.pipeline import stage_main
from serving.aerial_review import AerialReviewConfig

log = logging.getLogger("mlops.aerial_train")


def config(params: dict[str, Any] | None = None, review: dict[str, Any] | None = None
           ) -> AerialTrainConfig:  # fmt: skip
    """The stage's config from the ``aerial_train`` and ``aerial_review`` sections (read from
    aerial/params.yaml when not given): the labels folder wired in, a persistent cache.

    Once the labels folder holds annotators' tiles (labels of the scenes being mapped), the head
    kind is ``aerial_review.retrain_kind`` (``mlp``: it learns them without losing the base
    scenes, where a linear head must split one boundary between both; ``""`` keeps
    ``aerial_train.kind``); the head's ``resolved_config.json`` records the kind trained.
    """
    params = dict(section("aerial_train") if params is None else params)
    loop = resolve(AerialReviewConfig, section("aerial_review") if review is None else review)
    labels = Path(loop.labels_dir)
    data = [str(d) for d in params.pop("data", AerialTrainConfig.data)]
    wired: dict[str, Any] = {}
    if (labels / "classes.json").is_file():
        data.append(f"{labels}:train")
        if loop.retrain_kind:
            wired["kind"] = loop.retrain_kind
    wired.update(data=data, feature_cache=params.pop("feature_cache", "")
                 or str(cache_dir("aerial-features")))  # fmt: skip
    return resolve(AerialTrainConfig, params, wired)


def run() -> None:
    """The stage (see the module docstring)."""
    from dinoseg.aerial.train import config_dict, train_aerial_head
    from mlops.tracking import stage_run

    use_run_id()
    cfg = config()
    with stage_run("aerial_train", config_dict(cfg)) as run:
        out = train_aerial_head(cfg, HEAD)
        metrics = json.loads((out / "metrics.json").read_text())
        numbers: dict[str, Any] = {k: v for k, v in metrics.items()
                                   if isinstance(v, (int, float))}  # fmt: skip
        if metrics.get("val"):
            numbers["held_back_miou"] = metrics["val"]["miou"]
        METRICS.mkdir(parents=True, exist_ok=True)
        (METRICS / "aerial_train.json").write_text(json.dumps(numbers, indent=1) + "\n")
        run.log_metrics(numbers)
        run.log_artifacts(out, "head")
        log.info("aerial head: %s", numbers)


if __name__ == "__main__":
    stage_main(run)

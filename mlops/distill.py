"""Stage ``distill``: coarse-to-fine adapter distillation (:mod:`dinoseg.distill`).

Reads ``params.yaml`` ``distill``; the pipeline wires ``data`` (the teacher stage's subset,
already cut to ``max_images`` / ``max_val_images``) and ``teacher_cache`` (its embeddings).
Writes the checkpoint directory ``pipeline/distilled/``. MLflow: the resolved config, the
loss of each coarse-to-fine stage (step = stage), the validation agreement with the teacher, the
checkpoint directory.
"""

from __future__ import annotations

import dataclasses
import json
import logging

from dinoseg.cache import cache_dir
from dinoseg.config import resolve
from dinoseg.distill.loop import DistillConfig
from mlops.pipeline import DISTILLED, section, stage_main
from mlops.teacher import EMBEDDINGS, SUBSET

log = logging.getLogger("mlops.distill")


def config() -> DistillConfig:
    """The ``distill`` section with the pipeline's wiring."""
    params = section("distill")
    wired = {"data": str(SUBSET), "teacher_cache": str(EMBEDDINGS), "max_images": 0,
             "max_val_images": 0,
             "feature_cache": params.get("feature_cache") or str(cache_dir("features"))}
    return resolve(DistillConfig, params, wired)


def run() -> None:
    """The stage (see the module docstring)."""
    from dinoseg.distill.run import run_distillation
    from mlops.tracking import stage_run

    cfg = config()
    with stage_run("distill", dataclasses.asdict(cfg)) as run:
        out = run_distillation(cfg, DISTILLED)
        metrics = json.loads((out / "metrics.json").read_text())
        for i, stage in enumerate(metrics["stages"]):
            run.log_metrics({"first_loss": stage["first_loss"], "last_loss": stage["last_loss"],
                             "size": stage["size"]}, step=i)
        for key in ("val_distilled", "val_untrained"):
            run.log_metrics({f"{key}_{k}": v for k, v in metrics[key].items()})
        run.log_metrics({k: metrics[k] for k in ("teacher_seconds", "total_seconds")})
        run.log_artifacts(out, "checkpoint")
        log.info("distilled adapter: %s", {k: metrics[k] for k in ("val_distilled",
                                                                   "val_untrained")})


if __name__ == "__main__":
    stage_main(run)

"""Stage ``train``: episodic meta-training of the few-shot segmenter (:mod:`dinoseg.train`).

Reads ``params.yaml`` ``train``; the pipeline wires ``data`` (the base dataset,
``prepare.base``) and ``init`` (``pipeline/distilled``). The segmenter learns from the base
dataset only: annotators' labels teach the supervised head (stage ``heads``) and the support
memory, measured to gain more, in seconds instead of minutes (README "Served classes"), so
new labels never rerun this stage. Writes the checkpoint directory ``pipeline/model/``,
``metrics/train.json`` and ``metrics/train_history.csv`` (one row per validation epoch, a DVC
plot). MLflow: the resolved config, per-epoch loss / bank-validation mIoU / learning rate, the
checkpoint directory and its model card.

An interrupted run resumes from ``pipeline/model.work`` when the pipeline's inputs are the
same (:func:`mlops.pipeline.pipeline_run_id`); otherwise that state is thrown away first.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from dinoseg.cache import cache_dir
from dinoseg.config import resolve
from dinoseg.train.loop import TrainConfig
from mlops.pipeline import DISTILLED, METRICS, MODEL, section, stage_main

log = logging.getLogger("mlops.train")
WORK = MODEL.with_name(MODEL.name + ".work")
HISTORY_FIELDS = ("step", "loss", "val_miou_bank", "val_fb_iou_bank", "lr", "seconds")


def config() -> TrainConfig:
    """The ``train`` section with the pipeline's wiring."""
    params = section("train")
    base = str(section("prepare").get("base") or "../shared/data/camvid")
    wired = {"data": base, "init": str(DISTILLED),
             "feature_cache": params.get("feature_cache") or str(cache_dir("features"))}
    return resolve(TrainConfig, params, wired)


def reset_stale_work(work: Path, run_id: str) -> None:
    """Keep ``work`` (resume) only if it was left by a run on the same inputs."""
    marker = work / "pipeline_run.txt"
    if work.exists() and (not marker.is_file() or marker.read_text().strip() != run_id):
        log.info("discarding %s (left by a run on other inputs)", work)
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    marker.write_text(run_id + "\n")


def epoch_row(record: dict[str, Any]) -> dict[str, Any]:
    """A training epoch record under the names logged and plotted."""
    return {"step": record["step"], "loss": record["loss"], "val_miou_bank": record["miou"],
            "val_fb_iou_bank": record["fb_iou"], "lr": record["lr"],
            "seconds": record["seconds"]}


def write_metrics(checkpoint: Path, out_dir: Path) -> dict[str, Any]:
    """``train.json`` (summary) and ``train_history.csv`` from the checkpoint's metrics."""
    metrics = json.loads((checkpoint / "metrics.json").read_text())
    rows = [epoch_row(r) for r in metrics["history"]]
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "train_history.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HISTORY_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    summary = {"best_val_miou_bank": metrics["val_miou_bank"],
               "final_loss": rows[-1]["loss"] if rows else None,
               "steps": rows[-1]["step"] if rows else 0,
               "train_seconds": metrics["train_seconds"]}
    (out_dir / "train.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def run() -> None:
    """The stage (see the module docstring)."""
    from dinoseg.train.run import run_training
    from mlops.tracking import stage_run

    cfg = config()
    with stage_run("train", dataclasses.asdict(cfg)) as run:
        reset_stale_work(WORK, run.pipeline_run)
        out = run_training(cfg, MODEL, on_epoch=lambda r: run.log_metrics(epoch_row(r),
                                                                          step=r["step"]))
        shutil.rmtree(WORK, ignore_errors=True)
        summary = write_metrics(out, METRICS)
        run.log_metrics(summary)
        run.log_artifacts(out, "checkpoint")
        run.log_artifacts(METRICS / "train_history.csv")
        log.info("trained: %s", summary)


if __name__ == "__main__":
    stage_main(run)

"""Stage ``evaluate``: the trained model and the prototype baseline on the fixed episodes, and
the served system on the gate's episodes.

Reads ``params.yaml`` ``evaluate``; the benchmark episodes are ``data/episodes/val.json``
(written by ``prepare``) over ``data/train_set``'s val split. The baseline runs on the model's
backbone, layers and image size, so the two differ only in the few-shot head. Then
:mod:`mlops.served_eval` measures the served system (model + ``pipeline/head`` + the support
memory ``pipeline/memory``) on ``served.json`` and ``guard.json``. Writes ``pipeline/eval/``
(``report.json`` as ``dinoseg eval`` writes it, with its plots; ``served/``, ``guard/``),
``metrics/eval.json`` (DVC metrics) and ``metrics/eval_class_iou.csv`` (DVC plot).
A failed evaluation fails the stage: nothing downstream (registration, promotion) runs.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dinoseg.cache import cache_dir
from dinoseg.config import resolve
from dinoseg.eval.protocol import EvalResult
from dinoseg.predictor import FewShotPredictor
from mlops.episodes import ListedEpisodes, list_digest, read_list
from mlops.pipeline import (
    EPISODES,
    EVAL,
    HEAD,
    MEMORY,
    METRICS,
    MODEL,
    TRAIN_SET,
    section,
    stage_main,
)
from mlops.served_eval import figures

log = logging.getLogger("mlops.evaluate")
EPISODE_LIST = EPISODES / "val.json"
CANDIDATE = "model"
BASELINE = "prototype"


@dataclass
class EvaluateConfig:
    """``params.yaml`` section ``evaluate``."""

    image_size: int = 0  # encoder input long side; 0 = the checkpoint's
    examples: int = 3  # example episodes drawn as pictures
    cache_gb: float = 1.0  # in-memory feature cache (models share the episodes' features)
    feature_cache: str = ""  # backbone features kept on disk across runs; "" = $DINOSEG_CACHE


def predictors(checkpoint: Path, cfg: EvaluateConfig) -> dict[str, FewShotPredictor]:
    """The checkpoint's predictor and the prototype baseline on the same encoder settings."""
    from dinoseg.checkpoint import read_config
    from dinoseg.predictor import load_predictor

    ck = read_config(checkpoint)
    size = cfg.image_size or ck.image_size
    return {
        CANDIDATE: load_predictor(str(checkpoint), image_size=size),
        BASELINE: load_predictor("prototype", backbone=ck.backbone, layers=ck.layers,
                                 image_size=size),
    }


def feature_cache(cfg: EvaluateConfig) -> Any:
    """The evaluation's feature cache (in memory, and on disk across runs)."""
    from dinoseg.feature_cache import FeatureCache

    disk = cfg.feature_cache or str(cache_dir("features"))
    return FeatureCache(max_bytes=int(cfg.cache_gb * 1024**3), disk_dir=disk)


def run_episodes(models: Mapping[str, FewShotPredictor], cfg: EvaluateConfig) -> EvalResult:
    """Every model on the fixed evaluation episodes."""
    from dinoseg.data import FolderDataset
    from dinoseg.eval.protocol import evaluate

    spec = read_list(EPISODE_LIST)
    dataset = FolderDataset(TRAIN_SET, spec["split"])
    episodes = ListedEpisodes(dataset, spec)
    settings = {"data": str(TRAIN_SET), "split": spec["split"], "fold": spec["fold"],
                "episode_list": str(EPISODE_LIST), "episode_list_sha": list_digest(EPISODE_LIST)}
    return evaluate(models, episodes, class_names=dataset.class_names, cache=feature_cache(cfg),
                    settings=settings, n_examples=cfg.examples, progress=False)


def miou_of(report: Mapping[str, Any], name: str) -> float | None:
    """A model's mIoU (percent) in a report, ``None`` if it has none."""
    value = report["models"][name]["metrics"]["miou"]
    return None if value is None else float(value)


def summary(report: Mapping[str, Any]) -> dict[str, Any]:
    """``metrics/eval.json``: the model's figures and the baseline's on the same episodes."""
    model, base = (report["models"][n]["metrics"] for n in (CANDIDATE, BASELINE))
    return {"miou": model["miou"], "fb_iou": model["fb_iou"], "boundary_f1": model["boundary_f1"],
            "pixel_accuracy": model["pixel_accuracy"], "baseline_miou": base["miou"],
            "baseline_fb_iou": base["fb_iou"], "episodes": model["episodes"],
            "seconds_per_episode": report["models"][CANDIDATE]["timing"]["seconds_per_episode"]}


def write_class_iou(report: Mapping[str, Any], path: Path) -> None:
    """Per-class IoU of both models, one row per class (the plot's data)."""
    rows = []
    names = report["settings"]["class_names"]
    for cid in sorted(names, key=int):
        row: dict[str, Any] = {"class": names[cid]}
        for model in (CANDIDATE, BASELINE):
            entry = report["models"][model]["metrics"]["per_class"].get(cid) or {}
            row[model] = entry.get("iou")
        rows.append(row)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["class", CANDIDATE, BASELINE])
        writer.writeheader()
        writer.writerows(rows)


def run() -> None:
    """The stage (see the module docstring)."""
    from dinoseg.eval.report import write_outputs
    from mlops.tracking import stage_run

    cfg = resolve(EvaluateConfig, section("evaluate"))
    with stage_run("evaluate", dataclasses.asdict(cfg)) as run:
        result = run_episodes(predictors(MODEL, cfg), cfg)
        shutil.rmtree(EVAL, ignore_errors=True)
        write_outputs(result, EVAL / "report.json")
        numbers = summary(result.report)
        if numbers["miou"] is None:
            raise RuntimeError("evaluation produced no mIoU (no valid episodes)")
        gate = figures(MODEL, HEAD, MEMORY, cfg.image_size, feature_cache(cfg))
        numbers.update({k: v for k, v in gate.items() if not k.endswith(("_sha", "_version"))})
        METRICS.mkdir(parents=True, exist_ok=True)
        (METRICS / "eval.json").write_text(json.dumps(numbers, indent=1) + "\n")
        write_class_iou(result.report, METRICS / "eval_class_iou.csv")
        run.log_metrics(numbers)
        run.log_artifacts(EVAL, "eval")
        run.set_tags({"episode_list_sha": result.report["settings"]["episode_list_sha"],
                      **{k: str(v) for k, v in gate.items() if k.endswith(("_sha", "_version"))}})
        (EVAL / "gate.json").write_text(json.dumps(gate, indent=1) + "\n")
        log.info("mIoU %.2f (prototype baseline %.2f) on %d episodes; served %s (prototype + "
                 "memory %s), guard %s", numbers["miou"], numbers["baseline_miou"] or 0.0,
                 numbers["episodes"], gate["served_miou"], gate["served_baseline_miou"],
                 gate["guard_miou"])


if __name__ == "__main__":
    stage_main(run)

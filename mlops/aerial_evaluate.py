"""Stage ``aerial_evaluate``: the aerial head on fixed labelled tiles, beside the few-shot
baseline (:func:`dinoseg.aerial.evaluate.evaluate_method`).

Reads ``aerial/params.yaml`` section ``aerial_evaluate`` (:class:`AerialEvalConfig`: the folder,
split and image stems the gate compares on) and ``pipeline/aerial/head/``. Writes
``pipeline/aerial/eval/report.json`` (the head), ``baseline.json`` (the few-shot prototype with
``baseline_shots`` train tiles showing every class as supports, on the head's backbone; the
first model must beat it)
and ``metrics/aerial_eval.json`` (mIoU, per class IoU, boundary F1, pixel accuracy, road false
negatives, water false positives, s/MP, and ``eval_sha``: which tiles).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from dinoseg.config import resolve
from mlops.aerial_common import EVAL, HEAD, METRICS, AerialEvalConfig, section, use_run_id
from mlops.pipeline import stage_main

log = logging.getLogger("mlops.aerial_evaluate")


def evaluate_head(head: Path, cfg: AerialEvalConfig) -> dict[str, Any]:
    """The report of the head checkpoint ``head`` on the configured tiles."""
    from dinoseg.aerial.build import build_method
    from dinoseg.aerial.config import AerialConfig
    from dinoseg.aerial.evaluate import evaluate_method

    aerial = AerialConfig(method="head", model=str(head), tile=cfg.tile, overlap=cfg.overlap)
    method = build_method(aerial, None, [])
    return evaluate_method(method, aerial, cfg.data, cfg.split, only=cfg.only)


def evaluate_baseline(cfg: AerialEvalConfig, backbone: str) -> dict[str, Any] | None:
    """The few-shot prototype's report with ``baseline_shots`` supports on ``backbone`` (the
    head's), None when ``baseline_shots`` is 0."""
    if cfg.baseline_shots < 1:
        return None
    from dinoseg.aerial.build import build_method
    from dinoseg.aerial.categories import read_class_names
    from dinoseg.aerial.config import AerialConfig
    from dinoseg.aerial.evaluate import evaluate_method, support_tiles
    from dinoseg.aerial.pipeline import load_supports

    names = read_class_names(cfg.data)
    pairs = support_tiles(cfg.data, "train", cfg.baseline_shots)
    aerial = AerialConfig(method="fewshot", backbone=backbone, tile=cfg.tile, overlap=cfg.overlap)
    method = build_method(aerial, load_supports(pairs, names), names)
    report = evaluate_method(method, aerial, cfg.data, cfg.split, only=cfg.only)
    report["supports"] = [str(p) for p, _ in pairs]
    return report


def numbers_of(report: dict[str, Any], baseline: dict[str, Any] | None,
               cfg: AerialEvalConfig) -> dict[str, Any]:  # fmt: skip
    """The figures ``metrics/aerial_eval.json`` keeps."""
    out: dict[str, Any] = {"miou": report["miou"], "boundary_f1": report["boundary_f1"],
                           "pixel_accuracy": report["pixel_accuracy"],
                           "cpu_s_per_mp": report["cpu_s_per_mp"], "eval_sha": cfg.eval_sha(),
                           "images": len(report["images"])}  # fmt: skip
    for name, v in report["per_class"].items():
        out[f"iou_{name}"] = v["iou"]
    for name, v in report["safety"]["fnr"].items():
        out[f"fnr_{name}"] = v
    for name, v in report["safety"]["hazard_fpr"].items():
        out[f"fpr_{name}"] = v
    out["baseline_miou"] = None if baseline is None else baseline["miou"]
    return out


def run() -> None:
    """The stage (see the module docstring)."""
    import torch

    from dinoseg.aerial.evaluate import write_report
    from dinoseg.checkpoint import read_config
    from mlops.tracking import stage_run

    use_run_id()
    cfg = resolve(AerialEvalConfig, section("aerial_evaluate"))
    torch.set_num_threads(cfg.threads)
    with stage_run("aerial_evaluate", dataclasses.asdict(cfg)) as run:
        report = evaluate_head(HEAD, cfg)
        baseline = evaluate_baseline(cfg, read_config(HEAD).backbone)
        write_report(report, EVAL / "report.json")
        if baseline is not None:
            write_report(baseline, EVAL / "baseline.json")
        numbers = numbers_of(report, baseline, cfg)
        METRICS.mkdir(parents=True, exist_ok=True)
        (METRICS / "aerial_eval.json").write_text(json.dumps(numbers, indent=1) + "\n")
        run.log_metrics(numbers)
        run.log_artifacts(EVAL, "eval")
        log.info("aerial head: %s", numbers)


if __name__ == "__main__":
    stage_main(run)

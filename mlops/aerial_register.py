"""Stage ``aerial_register``: the aerial head into the MLflow registry, through the same gate.

Reads ``aerial/params.yaml`` section ``aerial_register``, ``pipeline/aerial/head/``,
``pipeline/aerial/eval/`` and ``metrics/aerial_eval.json``. Every new head becomes a version of
its own registered model (default ``dinoseg-aerial-head``; the checkpoint directory is the
version's artifact, so ``models:/dinoseg-aerial-head@champion`` is what ``dinoseg aerial
--method head`` runs by default) with the alias ``challenger``; :func:`mlops.gate.decide` gives it
``champion`` when its mIoU is at least the champion's minus ``tolerance`` (both on the same
tiles: the champion's version tags when measured on them, else the champion evaluated again),
or, for the first head, when it beats the few-shot baseline. The decision goes to the version's
tags, the stage run and ``metrics/aerial_register.json``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from typing import Any

from dinoseg.config import resolve
from mlops import gate, registry
from mlops.aerial_common import (
    EVAL,
    HEAD,
    METRICS,
    AerialEvalConfig,
    section,
    use_run_id,
)
from mlops.pipeline import stage_main

log = logging.getLogger("mlops.aerial_register")


@dataclass
class AerialRegisterConfig:
    """``aerial/params.yaml`` section ``aerial_register``."""

    model_name: str = registry.AERIAL_MODEL_NAME
    tolerance: float = 1.0  # mIoU points a challenger may fall below the champion and still win


def new_version(client: Any, name: str, run: Any, tags: dict[str, Any]) -> Any:
    """Register ``run``'s ``model`` artifact as a version of ``name`` (created if needed), alias
    ``challenger``."""
    mv = registry.create_version(client, name, run, tags,
                                 description="dinoseg aerial head (city maps)",
                                 card=HEAD / "MODEL_CARD.md")  # fmt: skip
    client.set_registered_model_alias(name, registry.CHALLENGER, mv.version)
    return mv


def champion_miou(client: Any, champion: Any, cfg: AerialEvalConfig) -> tuple[float | None, str]:
    """The champion's mIoU on this run's tiles, and where it came from."""
    tags = champion.tags or {}
    if tags.get("eval_sha") == cfg.eval_sha() and tags.get("miou") not in (None, "", "None"):
        return float(tags["miou"]), "registry tags (same tiles)"
    from mlops.aerial_evaluate import evaluate_head

    log.info("champion v%s was measured on other tiles; evaluating it again", champion.version)
    report = evaluate_head(registry.download(client, champion), cfg)
    return report["miou"], "evaluated again on this run's tiles"


def run() -> None:
    """The stage (see the module docstring)."""
    from mlops.tracking import stage_run

    use_run_id()
    cfg = resolve(AerialRegisterConfig, section("aerial_register"))
    eval_cfg = resolve(AerialEvalConfig, section("aerial_evaluate"))
    numbers = json.loads((METRICS / "aerial_eval.json").read_text())
    with stage_run("aerial_register", dataclasses.asdict(cfg)) as run:
        client = run.client
        run.log_artifacts(HEAD, "model")
        run.log_artifacts(EVAL, "eval")
        previous = registry.find_version(client, cfg.model_name, registry.CHAMPION)
        tags = {k: numbers.get(k) for k in ("miou", "baseline_miou", "eval_sha", "fnr_road",
                                            "fpr_water", "boundary_f1")}  # fmt: skip
        tags["pipeline_run"] = run.pipeline_run
        mv = new_version(client, cfg.model_name, run, tags)
        champ, source = (None, "no champion yet") if previous is None else champion_miou(
            client, previous, eval_cfg)
        decision = gate.decide(numbers["miou"], champ, numbers.get("baseline_miou"),
                               cfg.tolerance)  # fmt: skip
        if decision.promote:
            client.set_registered_model_alias(cfg.model_name, registry.CHAMPION, mv.version)
        record = {
            "model_name": cfg.model_name, "version": int(mv.version),
            "promoted": decision.promote, "reason": decision.reason,
            "decision": "promoted" if decision.promote else "refused",
            "challenger_miou": decision.challenger, "champion_miou": champ,
            "baseline_miou": numbers.get("baseline_miou"), "champion_miou_source": source,
            "champion_before": None if previous is None else int(previous.version),
            "tolerance": cfg.tolerance,
        }  # fmt: skip
        for key in ("decision", "reason", "champion_before"):
            client.set_model_version_tag(cfg.model_name, mv.version, key, str(record[key]))
        run.set_tags({k: record[k] for k in ("decision", "reason", "version")})
        run.log_metrics({k: v for k, v in record.items() if isinstance(v, (int, float))})
        METRICS.mkdir(parents=True, exist_ok=True)
        (METRICS / "aerial_register.json").write_text(json.dumps(record, indent=1) + "\n")
        log.info("%s version %s: %s", cfg.model_name, mv.version, decision.reason)


if __name__ == "__main__":
    stage_main(run)

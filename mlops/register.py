"""Stage ``register``: log the model to MLflow, register it, apply the promotion gate.

Reads ``params.yaml`` ``register``, ``pipeline/model/``, ``pipeline/eval/report.json`` and
``metrics/eval.json``. Every new model becomes a version of the registered model (default
``dinoseg-segmenter``) with the alias ``challenger``; :mod:`mlops.gate` decides whether it also
takes ``champion``. The champion's mIoU comes from its version tags when it was measured on the
same episode list, else the champion is evaluated again on this run's episodes. The decision
and both numbers go to the version's tags, the stage run, the pipeline's parent run and
``metrics/register.json``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dinoseg.config import resolve
from mlops import gate, registry
from mlops.pipeline import EVAL, METRICS, MODEL, section, stage_main

log = logging.getLogger("mlops.register")


@dataclass
class RegisterConfig:
    """``params.yaml`` section ``register``."""

    model_name: str = registry.MODEL_NAME
    tolerance: float = 1.0  # mIoU points a challenger may fall below the champion


def new_version(client: Any, name: str, run: Any, tags: dict[str, Any]) -> Any:
    """Register ``run``'s ``model`` artifact as a new version (the model created if needed)
    and point ``challenger`` at it."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name, description="dinoseg few-shot segmenter")
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    card = (MODEL / "MODEL_CARD.md").read_text() if (MODEL / "MODEL_CARD.md").is_file() else ""
    mv = client.create_model_version(name, run.artifact_uri("model"), run_id=run.run_id,
                                     tags={k: str(v) for k, v in tags.items()}, description=card)
    client.set_registered_model_alias(name, registry.CHALLENGER, mv.version)
    return mv


def champion_miou(client: Any, champion: Any, episode_sha: str) -> tuple[float | None, str]:
    """The champion's mIoU on this run's episodes and where it came from."""
    tags = champion.tags or {}
    if tags.get("episode_list_sha") == episode_sha and tags.get("val_miou") not in (None, ""):
        return float(tags["val_miou"]), "registry tag (same episodes)"
    from mlops.evaluate import CANDIDATE, EvaluateConfig, miou_of, predictors, run_episodes

    log.info("champion v%s was measured on other episodes; evaluating it again",
             champion.version)
    cfg = resolve(EvaluateConfig, section("evaluate"))
    model = predictors(registry.download(client, champion), cfg)[CANDIDATE]
    result = run_episodes({CANDIDATE: model}, dataclasses.replace(cfg, examples=0))
    return miou_of(result.report, CANDIDATE), "evaluated again on this run's episodes"


def run() -> None:
    """The stage (see the module docstring)."""
    from mlops.tracking import stage_run

    cfg = resolve(RegisterConfig, section("register"))
    numbers = json.loads((METRICS / "eval.json").read_text())
    report = json.loads((EVAL / "report.json").read_text())
    episode_sha = report["settings"]["episode_list_sha"]
    with stage_run("register", dataclasses.asdict(cfg)) as run:
        client = run.client
        run.log_artifacts(MODEL, "model")
        run.log_artifacts(EVAL, "eval")
        previous = registry.find_version(client, cfg.model_name, registry.CHAMPION)
        tags = {"val_miou": numbers["miou"], "baseline_miou": numbers["baseline_miou"],
                "episode_list_sha": episode_sha, "pipeline_run": run.pipeline_run}
        mv = new_version(client, cfg.model_name, run, tags)
        champ, source = (None, "no champion yet") if previous is None else champion_miou(
            client, previous, episode_sha)
        decision = gate.decide(numbers["miou"], champ, numbers["baseline_miou"], cfg.tolerance)
        if decision.promote:
            client.set_registered_model_alias(cfg.model_name, registry.CHAMPION, mv.version)
        record = record_of(decision, mv.version, previous, source, cfg)
        record["baseline_miou"] = numbers["baseline_miou"]
        for key in ("decision", "reason", "champion_before"):
            client.set_model_version_tag(cfg.model_name, mv.version, key, str(record[key]))
        run.set_tags({k: record[k] for k in ("decision", "reason", "version")})
        run.client.set_tag(run.parent_id, "decision", f"v{mv.version} {record['decision']}")
        run.log_metrics(record)
        write_record(record, METRICS / "register.json")
        log.info("model version %s: %s", mv.version, decision.reason)


def record_of(decision: gate.Decision, version: str, previous: Any, source: str,
              cfg: RegisterConfig) -> dict[str, Any]:
    """What the gate decided, with both numbers (``metrics/register.json``)."""
    return {
        "version": int(version), "promoted": decision.promote,
        "decision": "promoted" if decision.promote else "refused", "reason": decision.reason,
        "challenger_miou": decision.challenger,
        "champion_miou": decision.reference if decision.against == "champion" else None,
        "champion_before": None if previous is None else int(previous.version),
        "champion_miou_source": source, "tolerance": cfg.tolerance,
    }


def write_record(record: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    stage_main(run)

"""Stage ``register``: log the model to MLflow, register it, apply the promotion gate.

Reads ``params.yaml`` ``register``, ``pipeline/model/`` (+ ``pipeline/head/``, registered as
the model's ``head/``), ``pipeline/eval/`` and ``metrics/eval.json``. Every new model becomes a
version of the registered model (default ``dinoseg-segmenter``), an MLflow ``python_function``
model (:mod:`mlops.pyfunc`), with the alias ``challenger``;
:mod:`mlops.gate` decides whether it also takes ``champion``, on the served figure (the served
system on the held-back labelled images) when measured, else on the benchmark episodes, and
with the generality guard. The champion's figures come from its version tags when it was
measured on the same episode lists and memory, else the champion is evaluated again. The
decision and the numbers go to the version's tags, the stage run, the pipeline's parent run and
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
from mlops.pipeline import EVAL, HEAD, MEMORY, METRICS, MODEL, section, stage_main

log = logging.getLogger("mlops.register")


@dataclass
class RegisterConfig:
    """``params.yaml`` section ``register``."""

    model_name: str = registry.MODEL_NAME
    tolerance: float = 1.0  # mIoU points a challenger may fall below the champion
    guard_tolerance: float = 2.0  # guard mIoU points it may fall below the champion's


def new_version(client: Any, name: str, run: Any, tags: dict[str, Any]) -> Any:
    """Register ``run``'s ``model`` artifact as a new version (the model created if needed),
    make it an MLflow ``python_function`` model (:mod:`mlops.pyfunc`: its ``MLmodel`` beside
    the checkpoint) and point ``challenger`` at it."""
    from mlops.pyfunc import log_pyfunc

    mv = registry.create_version(client, name, run, tags, description="dinoseg few-shot segmenter",
                                 card=MODEL / "MODEL_CARD.md")  # fmt: skip
    log_pyfunc(run, f"models:/{name}/{mv.version}")
    client.set_registered_model_alias(name, registry.CHALLENGER, mv.version)
    return mv


def _number(value: Any) -> float | None:
    return None if value in (None, "", "None") else float(value)


def champion_figures(client: Any, champion: Any, episode_sha: str, gate_info: dict[str, Any]
                     ) -> tuple[dict[str, float | None], str]:  # fmt: skip
    """The champion's benchmark, served and guard mIoU on this run's episodes (and memory),
    and where they came from: its version tags when measured on the same lists and memory,
    else the champion evaluated again."""
    tags = champion.tags or {}
    keys = ("served_list_sha", "guard_list_sha", "memory_version")
    if (tags.get("episode_list_sha") == episode_sha and tags.get("val_miou") not in (None, "")
            and all(tags.get(k) == str(gate_info.get(k)) for k in keys)):  # fmt: skip
        return ({"miou": _number(tags["val_miou"]), "served_miou": _number(tags.get("served_miou")),
                 "guard_miou": _number(tags.get("guard_miou"))},
                "registry tags (same episodes and memory)")  # fmt: skip
    import tempfile

    from mlops.evaluate import (
        CANDIDATE,
        EvaluateConfig,
        feature_cache,
        miou_of,
        predictors,
        run_episodes,
    )
    from mlops.served_eval import figures

    log.info("champion v%s was measured on other episodes; evaluating it again",
             champion.version)
    cfg = resolve(EvaluateConfig, section("evaluate"))
    bundle = registry.download(client, champion)
    model = predictors(bundle, cfg)[CANDIDATE]
    result = run_episodes({CANDIDATE: model}, dataclasses.replace(cfg, examples=0))
    with tempfile.TemporaryDirectory() as tmp:
        again = figures(bundle, bundle / "head", MEMORY, cfg.image_size, feature_cache(cfg),
                        Path(tmp))  # fmt: skip
    return ({"miou": miou_of(result.report, CANDIDATE), "served_miou": again["served_miou"],
             "guard_miou": again["guard_miou"]}, "evaluated again on this run's episodes")


def judge(numbers: dict[str, Any], champ: dict[str, float | None] | None,
          cfg: RegisterConfig) -> tuple[gate.Decision, str]:  # fmt: skip
    """The gate on the served figure when it was measured (else the benchmark's), then the
    generality guard; returns the decision and which figure decided."""
    served = numbers.get("served_miou") is not None
    key, base = ("served_miou", "served_baseline_miou") if served else ("miou", "baseline_miou")
    reference = None if champ is None else champ.get(key)
    decision = gate.decide(numbers[key], reference, numbers.get(base), cfg.tolerance)
    if champ is None or reference is None:
        guard_ref = numbers.get("guard_baseline_miou")
    else:
        guard_ref = champ.get("guard_miou")
    decision = gate.with_guard(decision, numbers.get("guard_miou"), guard_ref,
                               cfg.guard_tolerance)  # fmt: skip
    return decision, "served" if served else "benchmark"


def run() -> None:
    """The stage (see the module docstring)."""
    from mlops.tracking import stage_run

    cfg = resolve(RegisterConfig, section("register"))
    numbers = json.loads((METRICS / "eval.json").read_text())
    report = json.loads((EVAL / "report.json").read_text())
    gate_info = json.loads((EVAL / "gate.json").read_text()) if (EVAL / "gate.json").is_file() \
        else {}
    episode_sha = report["settings"]["episode_list_sha"]
    with stage_run("register", dataclasses.asdict(cfg)) as run:
        client = run.client
        run.log_artifacts(MODEL, "model")
        if (HEAD / "config.json").is_file():
            run.log_artifacts(HEAD, "model/head")
        run.log_artifacts(EVAL, "eval")
        previous = registry.find_version(client, cfg.model_name, registry.CHAMPION)
        tags = {"val_miou": numbers["miou"], "baseline_miou": numbers["baseline_miou"],
                "served_miou": numbers.get("served_miou"), "guard_miou": numbers.get("guard_miou"),
                "episode_list_sha": episode_sha, "pipeline_run": run.pipeline_run,
                **{k: gate_info.get(k) for k in ("served_list_sha", "guard_list_sha",
                                                 "memory_version")}}  # fmt: skip
        mv = new_version(client, cfg.model_name, run, tags)
        champ, source = (None, "no champion yet") if previous is None else champion_figures(
            client, previous, episode_sha, gate_info)
        decision, figure = judge(numbers, champ, cfg)
        if decision.promote:
            client.set_registered_model_alias(cfg.model_name, registry.CHAMPION, mv.version)
        record = record_of(decision, mv.version, previous, source, cfg)
        record.update(baseline_miou=numbers["baseline_miou"], figure=figure,
                      guard_miou=numbers.get("guard_miou"),
                      champion_guard_miou=None if champ is None else champ.get("guard_miou"))
        for key in ("decision", "reason", "champion_before", "figure"):
            client.set_model_version_tag(cfg.model_name, mv.version, key, str(record[key]))
        run.set_tags({k: record[k] for k in ("decision", "reason", "version", "figure")})
        run.client.set_tag(run.parent_id, "decision", f"v{mv.version} {record['decision']}")
        run.log_metrics({k: v for k, v in record.items() if isinstance(v, (int, float))})
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

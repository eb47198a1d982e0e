"""What the promotion gate measures: the served system on the served episodes (held-back
labelled images of the served classes, with the support memory as served) and on the
generality guard (few-shot episodes on a dataset the served model never trains on).

The served system is the few-shot checkpoint with its head (``pipeline/head``) and the support
memory (``pipeline/memory``), loaded by :func:`dinoseg.served.load_served` as serving loads it;
the baseline is the training-free prototype with the same memory. Reports go to
``pipeline/eval/served/`` and ``pipeline/eval/guard/``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dinoseg.eval.protocol import EvalResult
from dinoseg.feature_cache import FeatureCache
from mlops.episodes import list_digest, open_list
from mlops.pipeline import EPISODES, EVAL, TRAIN_SET

SERVED_LIST = EPISODES / "served.json"
GUARD_LIST = EPISODES / "guard.json"
SERVED, BASELINE = "served", "prototype"


def served_models(model: Path, head: Path | None, memory: Path | None, image_size: int,
                  cache: FeatureCache) -> dict[str, Any]:  # fmt: skip
    """The served system and the prototype baseline, both with the memory (when built)."""
    from dinoseg.checkpoint import read_config
    from dinoseg.memory import SupportMemory
    from dinoseg.predictor import load_predictor
    from dinoseg.served import load_served

    ck = read_config(model)
    size = image_size or ck.image_size
    mem = None
    if memory is not None and (memory / "index.safetensors").is_file():
        mem = SupportMemory.open(memory)
    head_dir = head if head is not None and (head / "config.json").is_file() else None
    served = load_served(str(model), image_size=size, head_dir=head_dir, cache=cache)
    baseline = load_predictor("prototype", backbone=ck.backbone, layers=ck.layers,
                              image_size=size)  # fmt: skip
    if mem is not None:
        served.attach_memory(mem)
        baseline.attach_memory(mem)
    return {SERVED: served, BASELINE: baseline}


def run_list(models: Mapping[str, Any], root: Path | None, path: Path, cache: FeatureCache,
             out: Path) -> EvalResult | None:  # fmt: skip
    """Every model on the list ``path`` (dataset ``root``, else the list's own ``root``);
    None when the list is absent or empty."""
    from dinoseg.eval.protocol import evaluate
    from dinoseg.eval.report import write_outputs
    from mlops.episodes import read_list

    if not path.is_file() or not read_list(path)["episodes"]:
        return None
    spec = read_list(path)
    data = root or Path(spec["root"])
    episodes, spec = open_list(data, path)
    settings = {"data": str(data), "split": spec["split"], "episode_list": str(path),
                "episode_list_sha": list_digest(path)}  # fmt: skip
    result = evaluate(models, episodes, class_names=episodes.dataset.class_names, cache=cache,
                      settings=settings, n_examples=0, progress=False)  # fmt: skip
    write_outputs(result, out / "report.json")
    return result


def figures(model: Path, head: Path | None, memory: Path | None, image_size: int,
            cache: FeatureCache, out_dir: Path = EVAL) -> dict[str, Any]:  # fmt: skip
    """The gate's figures of a model bundle: served and guard mIoU (and the baseline's), the
    list digests they were measured on and the memory version (None where not measured);
    reports in ``out_dir/served`` and ``out_dir/guard``."""
    models = served_models(model, head, memory, image_size, cache)
    out: dict[str, Any] = {"memory_version": None}
    mem = models[SERVED].memory
    if mem is not None:
        out["memory_version"] = mem.version
    for name, root, path in (("served", TRAIN_SET, SERVED_LIST), ("guard", None, GUARD_LIST)):
        result = run_list(models, root, path, cache, out_dir / name)
        report = result.report if result is not None else None
        out[f"{name}_miou"] = _miou(report, SERVED)
        out[f"{name}_baseline_miou"] = _miou(report, BASELINE)
        out[f"{name}_episodes"] = len(result.report["models"][SERVED]["episodes"]) if result else 0
        out[f"{name}_list_sha"] = list_digest(path) if path.is_file() else None
    return out


def _miou(report: Mapping[str, Any] | None, name: str) -> float | None:
    if report is None:
        return None
    value = report["models"][name]["metrics"]["miou"]
    return None if value is None else float(value)

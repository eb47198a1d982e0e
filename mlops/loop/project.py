"""A simulation's own project: the base without the scenario's classes, params, a pipeline.

The served segmenter is the training-free prototype (the measured 1-shot default, README
"Support memory"), written once as ``pipeline/model``; the pipeline of the simulation keeps
the stages that learn from labels — ``prepare``, ``heads``, ``memory``, ``evaluate``,
``register`` — of the repository's ``dvc.yaml``, so every round retrains, evaluates and gates
exactly as ``dvc repro`` does for ML ops. The project holds a copy of the code (``PACKAGES``),
which the stack started in it runs.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from mlops.loop.scenario import Scenario, derive_base

REPO = Path(__file__).resolve().parents[2]
LOOP_STAGES = ("prepare", "heads", "memory", "evaluate", "register")
#: copied into the project: the pipeline's code deps, and (run from the project folder) the code
#: of the stack a real-mode simulation starts, so a long simulation runs one version throughout
PACKAGES = ("mlops", "dinoseg", "serving", "workers", "webapp", "infra")
#: what a simulation changes in the repository's params.yaml (faster, same methods)
SIM_PARAMS: dict[str, dict[str, Any]] = {
    "prepare": {"served_episodes": 100, "guard_episodes": 40, "val_episodes": 40},
    "heads": {"warm_start": True},
    "serving": {"model": "models:/dinoseg-segmenter@champion", "image_size": 336,
                "memory": "auto", "model_check_seconds": 1, "feature_cache_mb": 3072},
    "review": {"auto_queue": False, "labels_dir": "data/labels", "retrain_after": 0,
               "sync_seconds": 3600, "outbox_seconds": 3600},
}


def write_project(root: Path, scen: Scenario, guard: str = "",
                  overrides: dict[str, dict[str, Any]] | None = None) -> Path:  # fmt: skip
    """Create the simulation's project in ``root`` (see the module docstring); ``overrides``
    (section -> values) change the params further (e.g. a tiny backbone in tests)."""
    from dinoseg.checkpoint import CheckpointConfig, save_checkpoint
    from dinoseg.models.build import build_segmenter

    root.mkdir(parents=True, exist_ok=True)
    base = derive_base(scen, root / "base")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in [*SIM_PARAMS.items(), *(overrides or {}).items()]:
        params.setdefault(section, {}).update(values)
    params["prepare"].update(base=str(base), labels="data/labels", guard=guard)
    params["review"]["classes_from"] = str(base)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    dvc = {"stages": {name: stages[name] for name in LOOP_STAGES}}
    (root / "dvc.yaml").write_text(yaml.safe_dump(dvc, sort_keys=False))
    (root / "data" / "labels").mkdir(parents=True, exist_ok=True)
    (root / "data" / "labels" / ".gitkeep").touch()
    model = root / "pipeline" / "model"
    if not (model / "config.json").is_file():
        train = params["train"]
        ck = CheckpointConfig(arch="prototype", backbone=train.get("backbone", "packaged:dinov2-s"),
                              layers=list(train.get("layers", [6, 7, 8, 9, 10])),
                              image_size=params["serving"]["image_size"], version="prototype")
        save_checkpoint(model, build_segmenter("prototype"), ck, metrics={},
                        card="# The training-free prototype (the served few-shot side)\n")
    for package in PACKAGES:  # a snapshot: the stages' code deps, and what the stack runs
        if not (root / package).exists():
            shutil.copytree(REPO / package, root / package,
                            ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    venv = REPO / ".venv-labelstudio"  # Label Studio's own environment (the snapshot's
    if venv.is_dir() and not (root / venv.name).exists():  # infra/ looks beside itself)
        (root / venv.name).symlink_to(venv.resolve(), target_is_directory=True)
    return root

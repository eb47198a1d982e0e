"""What the aerial pipeline's stages share (``aerial/dvc.yaml``, run with ``dvc repro
aerial/dvc.yaml``): paths, ``aerial/params.yaml`` sections, the run id, the stage configs.

The aerial head has its own pipeline file so that the segmenter's ``dvc repro`` never waits on
it, and its own registered model (``mlops.registry.AERIAL_MODEL_NAME``). Stage commands run in
the project root (``wdir: ..``); every path here is relative to it and written the same in
``aerial/dvc.yaml`` (tests/mlops/test_mlops_aerial.py keeps them in step).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops.pipeline import RUN_ENV, _tree_digest
from serving.aerial_review import AERIAL_PARAMS_FILE, AerialReviewConfig

AERIAL_DVC = Path("aerial/dvc.yaml")
AERIAL_PARAMS = AERIAL_PARAMS_FILE  # its sections: one per stage, and the workers' aerial_review
LABELS_DEP = "${aerial_review.labels_dir}"  # aerial/dvc.yaml's dep on the annotators' tile labels
HEAD = Path("pipeline/aerial/head")  # aerial_train: the head checkpoint directory
EVAL = Path("pipeline/aerial/eval")  # aerial_evaluate: report.json (+ baseline.json)
METRICS = Path("metrics")


def section(name: str, path: Path = AERIAL_PARAMS) -> dict[str, Any]:
    """Section ``name`` of ``aerial/params.yaml`` (``{}`` when absent)."""
    from dinoseg.config import load_params

    return dict(load_params(path, name)) if path.is_file() else {}


def aerial_run_id() -> str:
    """``$DINOSEG_PIPELINE_RUN`` when set, else ``aerial-`` + a digest of what the aerial
    pipeline reads (its dvc.yaml and params, the annotators' aerial labels in the configured
    ``aerial_review.labels_dir``): one id for the stages of one ``dvc repro aerial/dvc.yaml``,
    apart from the segmenter's runs."""
    given = os.environ.get(RUN_ENV)
    if given:
        return given
    digest = hashlib.sha256()
    for f in (AERIAL_DVC, AERIAL_PARAMS):
        digest.update(f.read_bytes() if f.is_file() else b"<absent>")
    labels = AerialReviewConfig.load(AERIAL_PARAMS).labels_dir
    _tree_digest(Path(labels), digest, content=True)
    return "aerial-" + digest.hexdigest()[:12]


def use_run_id() -> None:
    """Name this process's MLflow runs by :func:`aerial_run_id`."""
    os.environ[RUN_ENV] = aerial_run_id()


@dataclass
class AerialEvalConfig:
    """``aerial/params.yaml`` section ``aerial_evaluate``: the fixed tiles the gate reads.

    The gate chooses on parts 003 and 007 of the val tiles (6 images); the README's figures come
    from parts 001, 005 and 009, which nothing chooses on."""

    data: str = "../shared/data/dubai"
    split: str = "val"
    only: tuple[str, ...] = ("part_003", "part_007")  # "" = every image
    # first model: it must beat the few-shot prototype with this many train tiles as supports
    baseline_shots: int = 5
    tile: int = 518
    overlap: int = 96
    threads: int = 2

    def eval_sha(self) -> str:
        """What makes two evaluations comparable (the gate compares only those)."""
        text = f"{self.data}|{self.split}|{sorted(self.only)}|{self.tile}|{self.overlap}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]

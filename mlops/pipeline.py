"""What the stages share: the pipeline's paths, ``params.yaml`` sections, the run id, ``main``.

Every path is relative to the project root (the folder holding ``dvc.yaml``), where DVC runs
the stage commands. The same paths are written in ``dvc.yaml``; a test keeps the two in step.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

PARAMS = Path("params.yaml")
DVC_YAML = Path("dvc.yaml")

TRAIN_SET = Path("data/train_set")  # prepare: merged dataset folder (classes.json, train/, val/)
EPISODES = Path("data/episodes")  # prepare: val.json (fixed evaluation episodes), report.json
TEACHER = Path("pipeline/teacher")  # teacher: subset/ (distillation images), embeddings/
DISTILLED = Path("pipeline/distilled")  # distill: checkpoint directory
MODEL = Path("pipeline/model")  # train: checkpoint directory (the few-shot segmenter)
HEAD = Path("pipeline/head")  # heads: the supervised head of the served classes
MEMORY = Path("pipeline/memory")  # memory: the support memory of the training set (persisted)
EVAL = Path("pipeline/eval")  # evaluate: report.json + plots
METRICS = Path("metrics")  # small JSON/CSV files kept in git (dvc metrics / plots)

#: Environment variable that names the pipeline run (else derived from the inputs).
RUN_ENV = "DINOSEG_PIPELINE_RUN"

log = logging.getLogger("mlops")


def section(name: str, path: Path = PARAMS) -> dict[str, Any]:
    """Section ``name`` of ``params.yaml`` (``{}`` when absent)."""
    from dinoseg.config import load_params

    return dict(load_params(path, name))


def _tree_digest(root: Path, digest: Any, *, content: bool) -> None:
    """Feed relative file names + sizes (and contents when ``content``) of ``root`` to
    ``digest``."""
    if not root.exists():
        digest.update(b"<absent>")
        return
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(f"{f.relative_to(root)}:{f.stat().st_size}\n".encode())
        if content:
            digest.update(f.read_bytes())


def pipeline_run_id() -> str:
    """The id shared by the MLflow runs of one ``dvc repro``.

    ``$DINOSEG_PIPELINE_RUN`` when set (a caller that starts the pipeline can name it), else a
    digest of what the pipeline reads: ``dvc.yaml``, ``params.yaml``, the annotators' labels
    (contents) and the base dataset's file list. These do not change while a pipeline runs, so
    every stage of one run derives the same id; a run on other inputs gets another.
    """
    given = os.environ.get(RUN_ENV)
    if given:
        if not re.fullmatch(r"[\w.:-]{1,64}", given):
            from dinoseg.io import InputError

            raise InputError(f"{RUN_ENV}={given!r}: use letters, digits, '.', ':', '-', '_'")
        return given
    digest = hashlib.sha256()
    for f in (DVC_YAML, PARAMS):
        digest.update(f.read_bytes() if f.is_file() else b"<absent>")
    prep = section("prepare")
    _tree_digest(Path(prep.get("labels", "data/labels")), digest, content=True)
    _tree_digest(Path(prep.get("base", "")), digest, content=False)
    return digest.hexdigest()[:12]


def stage_main(run: Callable[[], object]) -> None:
    """Run a stage function as a program: log to stderr, a user error -> one line, exit 2."""
    from dinoseg.io import InputError

    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    try:
        run()
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)

"""MLflow tracking for the stages: one run per stage, grouped under one parent run per pipeline.

The tracking URI is :func:`dinoseg.runtime.tracking_uri` (``$MLFLOW_TRACKING_URI`` or the sqlite
store ``var/mlflow.db``, artifacts in ``var/mlartifacts``). The experiment is
``$MLFLOW_EXPERIMENT_NAME`` or ``dinoseg``. Every stage run carries the tags ``pipeline_run``
(:func:`mlops.pipeline.pipeline_run_id`) and ``stage``, and ``mlflow.parentRunId`` pointing at
the run named ``pipeline <id>``, so the runs of one ``dvc repro`` are found together (the
MLflow UI nests them under it). The client API is used throughout (no active-run globals).
"""

from __future__ import annotations

import math
import os
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dinoseg import runtime

EXPERIMENT_ENV = "MLFLOW_EXPERIMENT_NAME"
DEFAULT_EXPERIMENT = "dinoseg"
PARENT_STAGE = "pipeline"
MAX_PARAM_CHARS = 6000


def local_store(uri: str) -> bool:
    """True for stores inside this machine's files (sqlite, file), false for servers."""
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


def client() -> Any:
    """An ``MlflowClient`` on the project's tracking URI (the sqlite folder created if needed)."""
    from mlflow import MlflowClient

    uri = runtime.tracking_uri()
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_id(mlflow_client: Any) -> str:
    """Id of the pipeline's experiment, created on first use (local stores keep artifacts in
    :func:`dinoseg.runtime.artifact_root`, not in the working directory)."""
    name = os.environ.get(EXPERIMENT_ENV) or DEFAULT_EXPERIMENT
    found = mlflow_client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    location = None
    if local_store(runtime.tracking_uri()):
        location = runtime.ensure(runtime.artifact_root()).as_uri()
    return str(mlflow_client.create_experiment(name, artifact_location=location))


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": "1"}``; values as strings, cut to MLflow's limit."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = str(value)[:MAX_PARAM_CHARS]
    return out


def numeric(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers (bools as 0/1) of a flat mapping; everything else left out."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, bool | int | float) and math.isfinite(float(value)):
            out[key] = float(value)
    return out


def git_commit() -> str | None:
    """The project's current git commit, if it is a git checkout."""
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=False)
    except OSError:
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


class StageRun:
    """One stage's MLflow run (what a stage logs goes through here)."""

    def __init__(self, mlflow_client: Any, run_id: str, pipeline_run: str, parent_id: str):
        self.client = mlflow_client
        self.run_id = run_id
        self.pipeline_run = pipeline_run
        self.parent_id = parent_id

    def log_params(self, config: Mapping[str, Any]) -> None:
        """Log a (nested) resolved config as flat ``a.b`` params."""
        from mlflow.entities import Param

        params = [Param(k, v) for k, v in flatten(config).items()]
        for i in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[i : i + 100])

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log the finite numbers of ``metrics`` (at ``step`` when given)."""
        from mlflow.entities import Metric

        stamp = _now_ms()
        batch = [Metric(k, v, stamp, step or 0) for k, v in numeric(metrics).items()]
        if batch:
            self.client.log_batch(self.run_id, metrics=batch)

    def log_artifacts(self, path: Path, artifact_path: str | None = None) -> None:
        """Upload a file or a directory."""
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        elif path.is_file():
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value))

    def artifact_uri(self, artifact_path: str) -> str:
        return f"{self.client.get_run(self.run_id).info.artifact_uri}/{artifact_path}"


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


def parent_run(mlflow_client: Any, exp_id: str, pipeline_run: str) -> str:
    """Id of the run that groups a pipeline's stage runs (created, already ended, on first
    use)."""
    query = f"tags.pipeline_run = '{pipeline_run}' and tags.stage = '{PARENT_STAGE}'"
    found = mlflow_client.search_runs([exp_id], filter_string=query, max_results=1)
    if found:
        return str(found[0].info.run_id)
    tags = {"pipeline_run": pipeline_run, "stage": PARENT_STAGE}
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    run = mlflow_client.create_run(exp_id, tags=tags, run_name=f"pipeline {pipeline_run}")
    mlflow_client.set_terminated(run.info.run_id, "FINISHED")
    return str(run.info.run_id)


@contextmanager
def stage_run(stage: str, config: Mapping[str, Any] | None = None) -> Iterator[StageRun]:
    """A stage's MLflow run: tagged, nested under the pipeline run, ``config`` logged as
    params; ended FINISHED, or FAILED when the block raises (the error is re-raised)."""
    from mlops.pipeline import pipeline_run_id

    mlflow_client = client()
    exp_id = experiment_id(mlflow_client)
    pipeline_run = pipeline_run_id()
    parent = parent_run(mlflow_client, exp_id, pipeline_run)
    tags = {"pipeline_run": pipeline_run, "stage": stage, "mlflow.parentRunId": parent}
    run = mlflow_client.create_run(exp_id, tags=tags, run_name=stage)
    handle = StageRun(mlflow_client, run.info.run_id, pipeline_run, parent)
    try:
        if config:
            handle.log_params(config)
        yield handle
    except BaseException:
        mlflow_client.set_terminated(handle.run_id, "FAILED")
        raise
    mlflow_client.set_terminated(handle.run_id, "FINISHED")

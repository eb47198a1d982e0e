"""Where the running stack keeps its state: one home folder, overridable piece by piece.

The home is ``$DINOSEG_HOME`` (default ``./var`` under the working directory, ignored by git).
Every adapter (webapp, workers, mlops, infra) asks here, so one variable moves a whole stack::

    var/mlflow.db          MLflow sqlite store       (MLFLOW_TRACKING_URI overrides)
    var/mlartifacts/       MLflow artifact root
    var/celery/            SQLite broker + results   (CELERY_BROKER_URL / CELERY_RESULT_BACKEND)
    var/results/<id>/      prediction records        (mask.png, prob.png, meta.json)
    var/uploads/           content-addressed uploaded images
    var/outbox.sqlite      Label Studio outbox
    var/labelstudio/       Label Studio's data folder
    var/logs/              one log file per service

Pure functions of the environment: nothing is created at import time; :func:`ensure` makes a
folder when a caller needs it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def home(env: Mapping[str, str] | None = None) -> Path:
    """The stack's home folder (absolute), from ``DINOSEG_HOME`` or ``./var``."""
    env = os.environ if env is None else env
    return Path(env.get("DINOSEG_HOME") or "var").expanduser().resolve()


def ensure(path: Path) -> Path:
    """Create ``path`` (a folder) if missing and return it."""
    path.mkdir(parents=True, exist_ok=True)
    return path


def tracking_uri(env: Mapping[str, str] | None = None) -> str:
    """MLflow tracking URI: ``MLFLOW_TRACKING_URI`` or a sqlite store in the home folder."""
    env = os.environ if env is None else env
    return env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home(env) / 'mlflow.db'}"


def artifact_root(env: Mapping[str, str] | None = None) -> Path:
    """Artifact folder used with the embedded sqlite MLflow store."""
    return home(env) / "mlartifacts"


def broker_url(env: Mapping[str, str] | None = None) -> str:
    """Celery broker: ``CELERY_BROKER_URL`` or kombu's SQLAlchemy transport over SQLite."""
    env = os.environ if env is None else env
    default = f"sqla+sqlite:///{home(env) / 'celery' / 'broker.sqlite'}"
    return env.get("CELERY_BROKER_URL") or default


def result_backend(env: Mapping[str, str] | None = None) -> str:
    """Celery result backend: ``CELERY_RESULT_BACKEND`` or a SQLite database."""
    env = os.environ if env is None else env
    default = f"db+sqlite:///{home(env) / 'celery' / 'results.sqlite'}"
    return env.get("CELERY_RESULT_BACKEND") or default


def results_dir(env: Mapping[str, str] | None = None) -> Path:
    """Prediction records, one folder per result id."""
    return home(env) / "results"


def uploads_dir(env: Mapping[str, str] | None = None) -> Path:
    """Uploaded images, stored by content hash."""
    return home(env) / "uploads"


def outbox_path(env: Mapping[str, str] | None = None) -> Path:
    """SQLite outbox for Label Studio deliveries that could not be made yet."""
    return home(env) / "outbox.sqlite"


def logs_dir(env: Mapping[str, str] | None = None) -> Path:
    """One log file per service of the local stack."""
    return home(env) / "logs"


def ml_backend_url(env: Mapping[str, str] | None = None) -> str:
    """Where dinoseg's Label Studio ML backend listens (``DINOSEG_ML_BACKEND_URL``, default
    loopback port 9090)."""
    env = os.environ if env is None else env
    return (env.get("DINOSEG_ML_BACKEND_URL") or "http://127.0.0.1:9090").rstrip("/")


def label_studio_url(env: Mapping[str, str] | None = None) -> str:
    """Label Studio's base URL (``LABEL_STUDIO_URL``, default loopback port 8080)."""
    env = os.environ if env is None else env
    return (env.get("LABEL_STUDIO_URL") or "http://127.0.0.1:8080").rstrip("/")

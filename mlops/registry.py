"""The MLflow model registry seen from the core: ``models:/NAME@ALIAS`` and
``models:/NAME/VERSION`` specs -> a local checkpoint directory.

:func:`resolve_model_uri` is the ``models`` resolver of the ``dinoseg.model_resolvers`` entry
point group, so ``dinoseg predict --model models:/dinoseg-segmenter@champion`` and
``load_predictor("models:/dinoseg-segmenter@champion")`` work. A version's artifacts are
downloaded once into ``$DINOSEG_CACHE/models/<name>/<version>-<source digest>/``. Every failure a
user can meet (no champion yet, unknown version, tracking server down) is an
:class:`InputError` that says what to do.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from dinoseg import runtime
from dinoseg.cache import cache_dir
from dinoseg.io import InputError

MODEL_NAME = "dinoseg-segmenter"
AERIAL_MODEL_NAME = "dinoseg-aerial-head"  # registered by the aerial pipeline (aerial/dvc.yaml)
CHALLENGER = "challenger"
CHAMPION = "champion"
_SPEC = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[\w.-]+)|/(?P<version>\d+))$")
#: Where the registry did not find what was asked for.
_MISSING = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


def parse_spec(spec: str) -> tuple[str, str | None, str | None]:
    """``models:/NAME@ALIAS`` -> ``(NAME, ALIAS, None)``; ``models:/NAME/3`` -> ``(NAME, None,
    "3")``."""
    match = _SPEC.match(spec.strip())
    if match is None:
        raise InputError(f"{spec}: expected models:/NAME@ALIAS or models:/NAME/VERSION, e.g. "
                         f"models:/{MODEL_NAME}@{CHAMPION}")
    return match["name"], match["alias"], match["version"]


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """An HTTP tracking server must answer ``/health``; local stores need nothing."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout):
            pass
    except (urllib.error.URLError, OSError) as e:
        raise InputError(f"MLflow tracking server {uri} is unreachable ({e}); start it or set "
                         "MLFLOW_TRACKING_URI") from e


def _store_missing(uri: str) -> bool:
    """True when the default sqlite store does not exist yet (nothing was ever registered)."""
    return uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file()


def registry_client() -> Any:
    """An ``MlflowClient`` on the project's tracking URI, checked to be reachable."""
    from mlflow import MlflowClient

    uri = runtime.tracking_uri()
    check_reachable(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def find_version(client: Any, name: str, alias: str | None = None,
                 version: str | None = None) -> Any | None:
    """The ``ModelVersion`` an alias points at (or a version number names); ``None`` when the
    model, alias or version does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        if alias is not None:
            return client.get_model_version_by_alias(name, alias)
        return client.get_model_version(name, str(version))
    except MlflowException as e:
        if e.error_code in _MISSING:
            return None
        raise InputError(f"MLflow registry at {runtime.tracking_uri()}: {e}") from e


def create_version(client: Any, name: str, run: Any, tags: dict[str, Any], *,
                   description: str, card: Path) -> Any:  # fmt: skip
    """Register ``run``'s ``model`` artifact as a new version of ``name`` (the registered
    model created with ``description`` if needed; the model card ``card``, when present, as the
    version's description); no alias is set."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name, description=description)
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    text = card.read_text() if card.is_file() else ""
    return client.create_model_version(name, run.artifact_uri("model"), run_id=run.run_id,
                                       tags={k: str(v) for k, v in tags.items()},
                                       description=text)  # fmt: skip


def download(client: Any, mv: Any) -> Path:
    """The local checkpoint directory of a model version (downloaded on first use)."""
    import mlflow.artifacts

    digest = hashlib.sha256(f"{mv.source}|{mv.run_id}".encode()).hexdigest()[:10]
    target = cache_dir("models", mv.name) / f"{mv.version}-{digest}"
    if (target / "config.json").is_file():
        return target
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        got = Path(mlflow.artifacts.download_artifacts(
            artifact_uri=mv.source, dst_path=tmp, tracking_uri=runtime.tracking_uri()))
        if not (got / "config.json").is_file():
            raise InputError(f"models:/{mv.name}/{mv.version}: its artifacts ({mv.source}) are "
                             "not a checkpoint directory")
        shutil.rmtree(target, ignore_errors=True)
        got.rename(target)
    return target


def resolve_model_uri(spec: str) -> tuple[str, str]:
    """``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` -> ``(checkpoint dir, model id)``;
    the model id is ``models:/NAME/VERSION``."""
    name, alias, version = parse_spec(spec)
    uri = runtime.tracking_uri()
    repro = "dvc repro aerial/dvc.yaml" if name == AERIAL_MODEL_NAME else "dvc repro"
    hint = (f"no champion yet — run `{repro}` to train, evaluate and register one"
            if alias == CHAMPION else f"check the name with the MLflow UI or `{repro}`")
    if _store_missing(uri):
        raise InputError(f"{spec}: nothing registered (no MLflow store at {uri}); {hint}")
    client = registry_client()
    mv = find_version(client, name, alias, version)
    if mv is None:
        raise InputError(f"{spec}: not found in the MLflow registry at {uri}; {hint}")
    return str(download(client, mv)), f"models:/{name}/{mv.version}"

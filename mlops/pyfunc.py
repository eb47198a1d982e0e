"""A registered model version as an MLflow ``python_function`` model.

A version's ``model/`` artifact is the checkpoint directory (``config.json``, weights, the
``head/``); registration adds an ``MLmodel`` beside them whose ``python_function`` flavour names
this module as its loader and the directory itself (``data: .``) as its data, so the checkpoint
is neither copied nor pickled and ``models:/NAME@ALIAS`` still resolves to the same directory
for ``dinoseg predict`` and the workers. Then::

    model = mlflow.pyfunc.load_model("models:/dinoseg-segmenter@champion")
    answer = model.predict(frame)
    # mlflow models serve -m models:/dinoseg-segmenter@champion --env-manager local

answer requests with the served system (:func:`dinoseg.served.load_served`: the few-shot
segmenter and, for the classes it serves, its head). ``dinoseg`` must be installed where the
model is loaded (``--env-manager local`` in this project's environment).

Input: a pandas DataFrame, one row per query, N rows:

- ``query``: base64 PNG/JPEG bytes of an (H, W) image;
- ``support_image``: base64 PNG/JPEG bytes of the support image (Hs, Ws);
- ``support_mask``: base64 PNG of the support's (Hs, Ws) mask, nonzero = the object;
- ``class_name`` (optional): what the mask marks; a class the head serves brings the head in.

Rows with the same support (image, mask, class name) share one encoded support, and their
queries are predicted together. Output: a DataFrame of N rows in input order: ``mask`` (base64
PNG, (H, W), 0/255), ``confidence`` (float in [0, 1]) and ``model_version``
(``models:/NAME/VERSION``). Bad input (a missing column, a cell that is not a string, bytes that
are not an image, a mask of another size than its support, an empty mask) raises one
``MlflowException`` (``INVALID_PARAMETER_VALUE``; HTTP 400 from ``mlflow models serve``) whose
message names the row and column.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import re
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from dinoseg.io import InputError, load_image, load_mask

#: the loader named in the ``python_function`` flavour
LOADER_MODULE = "mlops.pyfunc"
INPUT_COLUMNS = ("query", "support_image", "support_mask")
OPTIONAL_COLUMNS = ("class_name",)
OUTPUT_COLUMNS = ("mask", "confidence", "model_version")
#: rows (queries) one request may hold
MAX_ROWS = 64
#: ``MLmodel`` metadata key holding ``models:/NAME/VERSION``
VERSION_KEY = "model_version"


def signature() -> Any:
    """The model signature: the input and output columns above, all strings but ``confidence``
    (double); ``class_name`` optional."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema

    inputs: list[Any] = [ColSpec(DataType.string, name) for name in INPUT_COLUMNS]
    inputs += [ColSpec(DataType.string, name, required=False) for name in OPTIONAL_COLUMNS]
    outputs: list[Any] = [ColSpec(DataType.string, "mask"), ColSpec(DataType.double, "confidence"),
               ColSpec(DataType.string, "model_version")]  # fmt: skip
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs))


def bad_input(message: str) -> Exception:
    """The error a bad request raises (HTTP 400 when served)."""
    from mlflow.exceptions import MlflowException

    return MlflowException.invalid_parameter_value(message)


@dataclass(frozen=True)
class Row:
    """One decoded request row: the query (H, W, 3) uint8 and its support key."""

    query: np.ndarray
    support: tuple[str, str, str | None]  # the support's base64 image, mask and class name


def decode_bytes(value: Any, where: str) -> bytes:
    """A cell's base64 text (``data:...;base64,`` prefix allowed) -> bytes."""
    if not isinstance(value, str):
        raise bad_input(f"{where}: expected base64 text, got {type(value).__name__}")
    text = value.split(",", 1)[1] if value.startswith("data:") else value
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise bad_input(f"{where}: not valid base64 ({e})") from e


def _said(error: InputError) -> str:
    """An :class:`InputError` about bytes, without the placeholder names of the bytes."""
    text = str(error).removeprefix("<uploaded data>: ")
    return re.sub(r" ?<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "", text)


def decode_image(value: Any, where: str) -> np.ndarray:
    """A cell's base64 PNG/JPEG -> (H, W, 3) uint8."""
    try:
        return load_image(decode_bytes(value, where))
    except InputError as e:
        raise bad_input(f"{where}: {_said(e)}") from e


def decode_support(image: str, mask: str, row: int) -> tuple[np.ndarray, np.ndarray]:
    """A row's support image (Hs, Ws, 3) uint8 and mask (Hs, Ws) bool (nonzero = object)."""
    pixels = decode_image(image, f"row {row} support_image")
    where = f"row {row} support_mask"
    try:
        mask_array = load_mask(decode_bytes(mask, where), image_size=pixels.shape[:2])
    except InputError as e:
        raise bad_input(f"{where}: {_said(e)}") from e
    return pixels, mask_array


def _class_name(value: Any, row: int) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if not isinstance(value, str):
        raise bad_input(f"row {row} class_name: expected text, got {type(value).__name__}")
    return value.strip() or None


def parse_rows(frame: Any) -> list[Row]:
    """Check a request's DataFrame (N rows) and decode its queries (see the module docstring)."""
    if not isinstance(frame, pd.DataFrame):
        raise bad_input(f"expected a DataFrame with columns {', '.join(INPUT_COLUMNS)}, got "
                        f"{type(frame).__name__}")  # fmt: skip
    missing = [c for c in INPUT_COLUMNS if c not in frame.columns]
    if missing:
        raise bad_input(f"missing column(s) {', '.join(missing)}; expected "
                        f"{', '.join(INPUT_COLUMNS)} and optionally class_name")  # fmt: skip
    if not 0 < len(frame) <= MAX_ROWS:
        raise bad_input(f"expected 1 to {MAX_ROWS} rows (one per query), got {len(frame)}")
    rows = []
    for i, record in enumerate(frame.to_dict("records")):
        for column in ("support_image", "support_mask"):
            if not isinstance(record[column], str):
                raise bad_input(f"row {i} {column}: expected base64 text, got "
                                f"{type(record[column]).__name__}")  # fmt: skip
        key = (record["support_image"], record["support_mask"],
               _class_name(record.get("class_name"), i))  # fmt: skip
        rows.append(Row(decode_image(record["query"], f"row {i} query"), key))
    return rows


def encode_mask(mask: np.ndarray) -> str:
    """(H, W) bool -> base64 PNG, 0/255 single channel."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(mask, bool).astype(np.uint8) * 255, mode="L").save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


class SegmenterPyfunc:
    """What ``mlflow.pyfunc.load_model`` wraps: the served predictor of one checkpoint.

    Args:
        predictor: a :class:`dinoseg.served.ServedPredictor` (or anything with its
            ``set_support`` / ``predict`` / ``model_id``).
        model_version: reported in every answer (default: the predictor's model id).
    """

    def __init__(self, predictor: Any, model_version: str | None = None):
        self.predictor = predictor
        self.model_version = model_version or str(predictor.model_id)
        self._lock = threading.Lock()  # the predictor holds one support at a time

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """N request rows -> N answer rows (see the module docstring)."""
        rows = parse_rows(model_input)
        groups: dict[tuple[str, str, str | None], list[int]] = {}
        for i, row in enumerate(rows):
            groups.setdefault(row.support, []).append(i)
        masks: list[str] = [""] * len(rows)
        confidence = [0.0] * len(rows)
        with self._lock:
            for (image, mask, name), members in groups.items():
                pixels, support_mask = decode_support(image, mask, members[0])
                try:
                    self.predictor.set_support([pixels], [support_mask], name)
                    preds = self.predictor.predict([rows[i].query for i in members])
                except InputError as e:
                    raise bad_input(f"row {members[0]}: {e}") from e
                for i, pred in zip(members, preds, strict=True):
                    masks[i], confidence[i] = encode_mask(pred.mask), float(pred.confidence)
        return pd.DataFrame({"mask": masks, "confidence": confidence,
                             "model_version": [self.model_version] * len(rows)})  # fmt: skip


def _load_pyfunc(data_path: str, model_config: dict[str, Any] | None = None) -> SegmenterPyfunc:
    """The ``python_function`` loader: ``data_path`` is the checkpoint directory (with its
    ``MLmodel``). ``model_config`` may name a ``device`` (default ``$DINOSEG_DEVICE``, else
    the CPU)."""
    from mlflow.models import Model

    from dinoseg.served import load_served

    config = model_config or {}
    device = config.get("device") or os.environ.get("DINOSEG_DEVICE") or "cpu"
    try:
        predictor = load_served(str(data_path), device=device)
    except InputError as e:
        raise bad_input(str(e)) from e
    version = None
    if (Path(data_path) / "MLmodel").is_file():
        version = (Model.load(str(Path(data_path) / "MLmodel")).metadata or {}).get(VERSION_KEY)
    return SegmenterPyfunc(predictor, version)


def write_mlmodel(directory: Path, run_id: str, model_version: str) -> Path:
    """Write the ``MLmodel`` of a checkpoint directory's ``python_function`` flavour into
    ``directory`` (the checkpoint itself is logged apart, into the same artifact folder)."""
    from mlflow.models import Model
    from mlflow.pyfunc import add_to_model

    model = Model(artifact_path="model", run_id=run_id, signature=signature(),
                  metadata={VERSION_KEY: model_version})  # fmt: skip
    add_to_model(model, loader_module=LOADER_MODULE, data=".")
    path = directory / "MLmodel"
    model.save(str(path))
    return path


def log_pyfunc(run: Any, model_version: str, artifact_path: str = "model") -> None:
    """Add the ``MLmodel`` to a stage run's logged checkpoint (``artifact_path``), making it
    the ``python_function`` model of ``model_version`` (``models:/NAME/VERSION``)."""
    with tempfile.TemporaryDirectory() as tmp:
        write_mlmodel(Path(tmp), run.run_id, model_version)
        run.log_artifacts(Path(tmp), artifact_path)

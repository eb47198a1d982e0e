"""One annotation -> one label in ``data/labels/`` (dataset folder format) with provenance.

::

    data/labels/train/images/<stem>.<ext>    the query image (stem = its sha256[:16])
    data/labels/classes.json                 the base's classes + every class annotators added
                                             (a new name gets the next free id)
    data/labels/train/masks/<stem>.png       class indices; pixels no region covers get the
                                             base's background_index, else its ignore_index
    data/labels/train/complete/<stem>.json   the classes the image's tasks asked for: labelled
                                             wherever they are ("not drawn" = "not there")
    data/labels/provenance/<stem>.json       task id, annotation id, annotator, times, model,
                                             the class asked for and the classes drawn

Files are replaced atomically; one writer of ``classes.json`` at a time on a machine.
:mod:`workers.labelstudio.sync` decides which annotations to write.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dinoseg import runtime
from dinoseg.data.classnames import PLACEHOLDER, add_class, normalize_class_name
from dinoseg.data.folder import COMPLETE_DIR, ClassInfo, read_classes, read_complete
from dinoseg.io import InputError, load_image
from workers.labelstudio.convert import result_to_mask

_HEX = re.compile(r"[0-9a-f]{16,64}")


def _atomic_copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _atomic_png(labels: np.ndarray, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.tmp")
    Image.fromarray(labels, mode="L").save(tmp, format="PNG")
    os.replace(tmp, dst)


def _atomic_json(data: dict[str, Any], dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, dst)


def prepare_labels_dir(root: Path, base_classes: Path) -> None:
    """Create the folder layout and ``classes.json`` (the base dataset's) once."""
    for sub in ("train/images", "train/masks", "provenance"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    if not (root / "classes.json").is_file():
        _atomic_copy(base_classes / "classes.json", root / "classes.json")


def unlabelled_value(info: ClassInfo) -> int:
    """Label of pixels no region covers: the background class, else the ignore label."""
    if info.background_index is not None:
        return info.background_index
    if info.ignore_index is not None:
        return info.ignore_index
    raise InputError("the base classes.json has neither background_index nor ignore_index")


def _regions(results: list[Any], shape: tuple[int, int], allowed: set[str], task_id: Any
             ) -> tuple[list[tuple[np.ndarray, str]], int]:
    """The class-labelled brush regions of an annotation (normalised names) and the number of
    regions still carrying the placeholder; unknown classes and bad regions are InputError."""
    regions, placeholders = [], 0
    for result in results:
        if not isinstance(result, dict) or result.get("type") != "brushlabels":
            continue
        mask, label = result_to_mask(result)
        if mask.shape != shape:
            raise InputError(f"brush region is {mask.shape[::-1]}, the image {shape[::-1]}")
        name = normalize_class_name(label)
        if name == PLACEHOLDER:
            placeholders += 1
        elif name not in allowed:
            raise InputError(f"unknown class {label!r} (not a label of the review project)")
        else:
            regions.append((mask, name))
    if not any(m.any() for m, _ in regions):
        raise InputError(f"task {task_id}: no region labelled with a class ({placeholders} "
                         f"still {PLACEHOLDER!r})")  # fmt: skip
    return regions, placeholders


@contextmanager
def _labels_lock() -> Iterator[None]:
    """One writer of ``data/labels/classes.json`` at a time on this machine (the lock file
    lives in the stack's home, not in the pipeline's input)."""
    with open(runtime.ensure(runtime.home()) / "labels.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def write_label(
    root: Path, task: dict[str, Any], ann: dict[str, Any], allowed: set[str], annotator: str,
    base: Path,
) -> str:
    """Write one annotation's image, mask and provenance; returns the file stem.

    Region labels must be classes of ``allowed`` (the review project's labels); a class the
    labels folder does not know yet gets the next free id in its ``classes.json``. An image
    has one label file: annotations of other classes of the same image (other tasks) are kept,
    the newest annotation of a class replaces that class's pixels, and a task's update replaces
    what the task drew before. ``root`` (the pipeline's ``data/labels`` input) is laid out,
    with ``base``'s classes.json, only now that there is a label to write.
    """
    image_path, stem = _task_query(task)
    image = load_image(image_path)
    regions, placeholders = _regions(ann["result"], image.shape[:2], allowed, task.get("id"))
    prov_path = root / "provenance" / f"{stem}.json"
    with _labels_lock():
        prepare_labels_dir(root, base)
        ids = {name: add_class(root, name) for _, name in regions}
        info = read_classes(root)
        prov = json.loads(prov_path.read_text()) if prov_path.is_file() else {}
        labels = _previous(root / "train/masks" / f"{stem}.png", image.shape[:2], info)
        before = (prov.get("tasks") or {}).get(str(task["id"]), {}).get("classes", [])
        by_name = {normalize_class_name(n): c for c, n in info.names.items()}
        stale = [by_name[n] for n in {*before, *ids} if n in by_name]
        labels[np.isin(labels, stale)] = unlabelled_value(info)
        for mask, name in regions:
            labels[mask] = ids[name]
        for old in (root / "train/images").glob(f"{stem}.*"):
            old.unlink()  # the same image under another suffix
        _mark_complete(root, stem, task)
        _atomic_png(labels, root / "train/masks" / f"{stem}.png")
        _atomic_copy(image_path, root / "train/images" / f"{stem}{image_path.suffix.lower()}")
        _atomic_json(_provenance(prov, stem, task, ann, annotator, sorted(ids), placeholders),
                     prov_path)  # fmt: skip
    return stem


def _mark_complete(root: Path, stem: str, task: dict[str, Any]) -> None:
    """The class the task asked for is labelled wherever it is in the image (the annotator
    fixed that class's mask): add it to the image's complete classes
    (:meth:`dinoseg.data.folder.FolderDataset.complete_classes`), so its unlabelled pixels
    teach "not this class"."""
    asked = normalize_class_name(task["data"].get("class_name"))
    if asked == PLACEHOLDER:
        return
    path = root / "train" / COMPLETE_DIR / f"{stem}.json"
    known = read_complete(path)
    if asked not in known:
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_json({"classes": sorted({*known, asked})}, path)


def _previous(path: Path, shape: tuple[int, int], info: ClassInfo) -> np.ndarray:
    """The image's label map so far (other tasks' classes), else all unlabelled."""
    if path.is_file():
        with Image.open(path) as img:
            labels = np.array(img.convert("L"), np.uint8)
        if labels.shape == shape:
            return labels
    return np.full(shape, unlabelled_value(info), np.uint8)


def _provenance(
    prov: dict[str, Any], stem: str, task: dict[str, Any], ann: dict[str, Any], annotator: str,
    classes: list[str], placeholders: int,
) -> dict[str, Any]:
    """The label's provenance: the latest annotation's fields at the top, every task's under
    ``tasks``."""
    data = task["data"]
    latest = {
        "task_id": task["id"], "annotation_id": ann["id"], "annotator": annotator,
        "annotator_id": ann.get("completed_by"), "created_at": ann.get("created_at"),
        "updated_at": ann.get("updated_at"), "synced_at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
        time.gmtime()), "result_id": data.get("dinoseg_result"),
        "model_version": _model_version(task), "class_name": data.get("class_name"),
        "classes": classes, "unlabelled_regions": placeholders,
    }  # fmt: skip
    tasks = {**(prov.get("tasks") or {}), str(task["id"]): latest}
    return {"stem": stem, "query": str(data.get("dinoseg_query")),
            "query_sha256": data["dinoseg_query_sha256"], **latest,
            "classes": sorted({c for t in tasks.values() for c in t["classes"]}),
            "tasks": tasks}  # fmt: skip


def _task_query(task: dict[str, Any]) -> tuple[Path, str]:
    """The task's query image (it must lie in the uploads folder) and the label's file stem
    (its hash prefix). Task data can be edited in Label Studio: nothing in it may name a file
    elsewhere or put a path into the stem."""
    data = task["data"]
    uploads = runtime.uploads_dir().resolve()
    query = data.get("dinoseg_query")
    path = Path(query).resolve() if isinstance(query, str) and query else None
    if path is None or not path.is_relative_to(uploads):
        raise InputError(f"task {task.get('id')}: query {query!r} is not in the uploads folder")
    sha = data.get("dinoseg_query_sha256")
    if not isinstance(sha, str) or not _HEX.fullmatch(sha):
        raise InputError(f"task {task.get('id')}: bad dinoseg_query_sha256 {str(sha)[:80]!r}")
    return path, sha[:16]


def _model_version(task: dict[str, Any]) -> str | None:
    preds = task.get("predictions") or []
    return str(preds[0].get("model_version")) if preds and isinstance(preds[0], dict) else None

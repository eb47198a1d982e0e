"""The aerial review loop: a head's least confident map tiles -> their own Label Studio project
-> ``data/aerial_labels`` (the aerial pipeline's training labels, ``dvc repro aerial/dvc.yaml``).

Apart from the segment review on purpose: its own project (``aerial_review.project_title`` of
``aerial/params.yaml``) whose brush labels are the map's classes, one task per uncertain tile
(``serving.aerial`` lists them in the job's reply: the tile and its class-index map in the
uploads folder), pre-annotated with one brush region per class, ``score`` = the tile's
confidence (uncertainty sampling: least confident first). Idempotency key: the tile's content
hash + the head's model spec. Delivered directly (no outbox: a tile not sent while Label Studio
is down is offered again by the next map of the area).

:func:`sync_tiles` writes every annotated tile as a Dubai-layout pair:
``labels_dir/train/images/<sha16>.png``, ``labels_dir/train/masks/<sha16>.png`` (class indices of
the map's classes, 255 where no region covers) and ``labels_dir/classes.json``. The workers'
outbox ledger (:mod:`workers.labelstudio.outbox`, shared with the segment sync: annotation ids
are unique across Label Studio) records what was written, so a periodic pull decodes only new
or edited annotations, and counts them on :data:`COUNTER`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dinoseg import runtime
from dinoseg.io import InputError, load_label_map
from serving.aerial_review import AerialReviewConfig
from serving.uploads import png_bytes
from workers.labelstudio import client as ls
from workers.labelstudio.convert import annotation_to_label_map, mask_to_result
from workers.labelstudio.outbox import Outbox

UNLABELLED = 255
#: the outbox counter of new or edited aerial tile labels since the last aerial retrain
COUNTER = "aerial_labels_since_retrain"


def tile_key(tile: dict[str, Any]) -> str:
    return f"aerial:{str(tile['image_sha256'])[:32]}:{tile['model']}"


def tile_task(tile: dict[str, Any]) -> dict[str, Any]:
    """The Label Studio task of one review tile (``serving.aerial.review_tiles``)."""
    labels = load_label_map(tile["labels"])
    names = list(tile["classes"])
    regions = [mask_to_result(labels == k, name) for k, name in enumerate(names)
               if (labels == k).any()]  # fmt: skip
    data = {"image": ls.image_url(tile["image"]), "class_name": "every class of the map",
            "context": f"confidence {tile['confidence']:.2f} · model {tile['model']}",
            ls.KEY_FIELD: tile_key(tile), "dinoseg_query": tile["image"],
            "dinoseg_classes": names}  # fmt: skip
    prediction = {"model_version": str(tile["model"]), "score": float(tile["confidence"]),
                  "result": regions}
    return {"data": data, "predictions": [prediction]}


def queue_tiles(tiles: Sequence[dict[str, Any]], cfg: AerialReviewConfig,
                connect: Callable[[], Any] = ls.connect) -> list[dict[str, Any]]:  # fmt: skip
    """Send review tiles to the aerial project: ``[{"key", "status", "task_id"}]`` with status
    ``queued`` or ``duplicate``; :class:`~workers.labelstudio.client.Unavailable` when down."""
    if not tiles:
        return []
    client = connect()
    project = ls.ensure_project(client, cfg.project_title, list(tiles[0]["classes"]))
    out = []
    for tile in tiles:
        key = tile_key(tile)
        task_id, status = ls.task_by_key(client, project, key), "duplicate"
        if task_id is None:
            task_id, status = ls.create_task(client, project, tile_task(tile)), "queued"
        out.append({"key": key, "status": status, "task_id": task_id})
    return out


def _write_atomic(write: Callable[[Path], object], dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, dst)


def _write_changed(data: bytes, dst: Path) -> bool:
    """Write ``data`` to ``dst`` atomically unless it already holds them; True if written (a
    periodic sync leaves unchanged labels, and their times, alone)."""
    if dst.is_file() and dst.read_bytes() == data:
        return False
    _write_atomic(lambda p: p.write_bytes(data), dst)
    return True


def _classes_json(root: Path, names: list[str]) -> None:
    """Write ``classes.json`` once; a folder naming other classes is refused."""
    path = root / "classes.json"
    data = {"classes": {str(i): n for i, n in enumerate(names)}, "ignore_index": UNLABELLED}
    if path.is_file():
        if json.loads(path.read_text()).get("classes") != data["classes"]:
            raise InputError(f"{path} names other classes than the review project's {names}")
        return
    _write_atomic(lambda p: p.write_text(json.dumps(data, indent=1)), path)


def _tile_image(task: dict[str, Any]) -> Path:
    """The task's tile, which must be a file of the uploads folder."""
    uploads = runtime.uploads_dir().resolve()
    image = Path(str(task["data"].get("dinoseg_query") or "")).resolve()
    if not image.is_relative_to(uploads) or not image.is_file():
        raise InputError("its tile is not in the uploads folder")
    return image


def _pair(root: Path, stem: str) -> tuple[Path, Path]:
    return root / "train/images" / f"{stem}.png", root / "train/masks" / f"{stem}.png"


def write_tile_label(root: Path, task: dict[str, Any], results: list[dict[str, Any]]
                     ) -> tuple[str, bool]:  # fmt: skip
    """One annotated tile into ``root`` (see the module docstring); returns its stem and whether
    its files changed (False when the same label was synced before)."""
    image = _tile_image(task)
    names = [str(n) for n in task["data"].get("dinoseg_classes") or []]
    if len(names) < 2:
        raise InputError("no map classes in its data")
    shape = Image.open(image).size[::-1]
    labels, _ = annotation_to_label_map(results, {n: i for i, n in enumerate(names)}, shape,
                                        UNLABELLED)  # fmt: skip
    if not (labels != UNLABELLED).any():
        raise InputError("no pixel labelled with a class")
    for sub in ("train/images", "train/masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    _classes_json(root, names)
    stem = image.stem[:16]
    image_dst, mask_dst = _pair(root, stem)
    changed = _write_changed(image.read_bytes(), image_dst)
    changed = _write_changed(png_bytes(labels.astype(np.uint8)), mask_dst) or changed
    return stem, changed


def _sync_one(root: Path, task: dict[str, Any], ann: dict[str, Any], outbox: Outbox | None
              ) -> bool:  # fmt: skip
    """One annotated task into ``root``; True when its label is new or edited. With the
    outbox, an annotation written before in this version is skipped undecoded while its files
    are there, and a written one is recorded (counted on :data:`COUNTER` when it changed)."""
    updated = str(ann.get("updated_at"))
    stem = outbox.synced_stem(ann["id"], updated) if outbox is not None else None
    if stem is not None and all(p.is_file() for p in _pair(root, stem)):
        return False  # (its tile may be gone from the uploads since: the label is kept)
    stem, changed = write_tile_label(root, task, ann["result"])
    if outbox is not None:
        outbox.record_label(ann["id"], int(task["id"]), updated, stem,
                            COUNTER if changed else None)  # fmt: skip
    return changed


def sync_tiles(cfg: AerialReviewConfig, outbox: Outbox | None = None,
               connect: Callable[[], Any] = ls.connect) -> dict[str, Any]:  # fmt: skip
    """Every annotated task of the aerial project into ``labels_dir`` (the latest submitted
    annotation wins); ``{"labels", "changed", "skipped", "deleted_tasks"}``: tiles labelled,
    tiles whose label was new or changed since the last sync, one line per task not written,
    sent tiles whose task was deleted in Label Studio since (0 without an outbox).

    With the workers' ``outbox`` its ledger keeps a periodic pull cheap (as the segment sync:
    annotations already written are not decoded again), new or edited labels count toward the
    next aerial retrain, refused annotations are remembered (``dinoseg.status``) and deleted
    tasks stop counting as awaiting review."""
    client = connect()
    project = ls.find_project(client, cfg.project_title)
    written, changed, skipped = 0, 0, []
    # (no project: never made, or deleted with all its tasks)
    for task in [] if project is None else ls.annotated_tasks(client, project):
        # the latest one with regions (an empty annotation does not undo an earlier tile label)
        ann = ls.latest_annotation([a for a in task["annotations"] if a.get("result")])
        if ann is None:
            continue
        try:
            changed += _sync_one(Path(cfg.labels_dir), task, ann, outbox)
            written += 1
        except InputError as e:
            skipped.append(f"task {task.get('id')}: {e}")
            if outbox is not None:
                outbox.reject(ann["id"], int(task.get("id") or 0), str(ann.get("updated_at")),
                              str(e))  # fmt: skip
    deleted = ls.forget_deleted(client, project, outbox, "tiles") if outbox is not None else 0
    return {"labels": written, "changed": changed, "skipped": skipped, "deleted_tasks": deleted}

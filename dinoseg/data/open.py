"""Open a dataset directory in whichever supported layout it has."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dinoseg.io import InputError


def open_dataset(root: str | Path, split: str) -> Any:
    """A dataset for the episode sampler, by layout:

    - ``ROOT/annotations/instances_<split>.json`` -> :class:`CocoDataset` (COCO-20i folds);
    - ``ROOT/classes.json`` -> :class:`FolderDataset` (the project's format; PASCAL-5i /
      CamVid-3i folds when the class names are those benchmarks');
    - otherwise per-class folders of ``<n>.jpg`` + ``<n>.png`` -> :class:`BinaryClassDataset`
      (FSS-1000; ``split`` is ignored).
    """
    from dinoseg.data.binary import BinaryClassDataset
    from dinoseg.data.coco import CocoDataset
    from dinoseg.data.folder import FolderDataset

    base = Path(root)
    if not base.is_dir():
        raise InputError(f"{base}: dataset directory not found")
    if (base / "annotations" / f"instances_{split}.json").is_file():
        return CocoDataset(base, split)
    if (base / "classes.json").is_file():
        return FolderDataset(base, split)
    if any(p.is_dir() for p in base.iterdir()):
        return BinaryClassDataset(base)
    raise InputError(f"{base}: no classes.json, COCO annotations or class folders found")

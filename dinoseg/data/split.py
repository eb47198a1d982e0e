"""Hold back a validation split from a dataset that ships only one (the PASCAL VOC subset).

The split is a pure function of the image stems: stem ``s`` goes to ``val`` when
``sha256(seed + s)`` falls below ``val_fraction``, so it never changes when images are added or
reordered, on any machine. The new dataset is a folder-format tree of **symlinks** to the
original files (nothing is copied) plus the original ``classes.json`` and a ``split.json``
recording how it was made::

    OUT/classes.json   OUT/split.json
    OUT/train/images/<stem>.jpg -> SRC/<split>/images/<stem>.jpg   (and masks/)
    OUT/val/images/...
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from dinoseg.data.folder import list_pairs, read_classes
from dinoseg.io import InputError


def in_val(stem: str, val_fraction: float, seed: int = 0) -> bool:
    """Whether ``stem`` belongs to the held-back split (deterministic, order-free)."""
    digest = hashlib.sha256(f"{seed}:{stem}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < val_fraction


def split_dataset(src: str | Path, out: str | Path, *, split: str = "train",
                  val_fraction: float = 0.2, seed: int = 0) -> dict[str, int]:
    """Write ``out`` with ``train``/``val`` splits drawn from ``src/<split>``.

    Args:
        src: a folder-format dataset root.
        out: the new dataset root (must not exist, or be a previous output of this function).
        split: the source split to divide.
        val_fraction: share of images held back, ``0 < val_fraction < 1``.
        seed: changes the assignment (the same seed always gives the same split).

    Returns:
        ``{"train": n_train, "val": n_val}``.
    """
    if not 0.0 < val_fraction < 1.0:
        raise InputError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    src, out = Path(src).resolve(), Path(out)
    read_classes(src)  # validates classes.json before anything is written
    pairs = list_pairs(src / split)
    if not pairs:
        raise InputError(f"{src / split}: no image/mask pairs to split")
    if out.exists():
        if not (out / "split.json").is_file():
            raise InputError(f"{out}: exists and was not made by `dinoseg split`; not touching it")
        shutil.rmtree(out)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    counts = {"train": 0, "val": 0}
    for stem, image, mask in pairs:
        part = "val" if in_val(stem, val_fraction, seed) else "train"
        counts[part] += 1
        for kind, path in (("images", image), ("masks", mask)):
            dest = tmp / part / kind / path.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.symlink_to(path.resolve())
    shutil.copy2(src / "classes.json", tmp / "classes.json")
    record = {"source": str(src), "split": split, "val_fraction": val_fraction, "seed": seed,
              "counts": counts, "rule": "sha256(f'{seed}:{stem}') / 2**64 < val_fraction -> val"}
    (tmp / "split.json").write_text(json.dumps(record, indent=1) + "\n")
    tmp.rename(out)
    return counts

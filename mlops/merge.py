"""Merge a base dataset folder with the annotators' labels into one training-set folder.

Both are in the dataset folder format (:mod:`dinoseg.data.folder`). The merged folder links
(symlinks) every base pair and every label pair whose class ids already agree with the base;
label masks whose ids differ are rewritten with the base's ids. Label classes are matched to
base classes by name; a name the base does not know gets the next free id. Label pairs join the
``train`` split as ``label-<stem>`` so they never collide with base stems — except the held-back
ones (:func:`held_back`: a fixed share chosen by a hash of the stem, so the choice is stable as
labels grow), which form the ``labels_val`` split the promotion gate measures on and nothing
trains on.

What makes the whole merge fail (:class:`InputError`): a missing or unreadable base dataset,
base images and masks that do not pair up or differ in size, labels without a readable
``classes.json``, an ignore label the base cannot represent. What only skips one label pair
(reported): a missing partner, an unreadable image or mask, a size mismatch, unknown label
values, an unexpected file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from dinoseg.data.folder import (
    COMPLETE_DIR,
    IMAGE_SUFFIXES,
    ClassInfo,
    list_pairs,
    name_list,
    read_classes,
)
from dinoseg.io import InputError, load_image, load_label_map

LABEL_PREFIX = "label-"
LABELS_VAL = "labels_val"  # the held-back labelled images (the gate's split)


def held_back(stem: str, fraction: float) -> bool:
    """Whether label ``stem`` is held back: a stable choice by the stem's SHA-256 (the stem of
    a synced label is already its image's hash prefix)."""
    import hashlib

    digest = int(hashlib.sha256(f"labels_val:{stem}".encode()).hexdigest()[:8], 16)
    return digest < fraction * 0x1_0000_0000


@dataclass
class MergeReport:
    """What went into the merged folder, and what did not."""

    base_train: int = 0
    base_val: int = 0
    labels_added: int = 0
    labels_held_back: int = 0
    masks_remapped: int = 0
    classes_added: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)

    def skip(self, path: Path, reason: str) -> None:
        self.skipped.append({"file": str(path), "reason": reason})


def link(src: Path, dst: Path) -> None:
    """``dst`` -> symlink to ``src`` (absolute; parents created)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(src.resolve(), dst)


def check_base_split(split_dir: Path) -> list[tuple[str, Path, Path]]:
    """Pairs of one base split; every image and its mask must have the same size (headers)."""
    pairs = list_pairs(split_dir)
    bad = []
    for stem, image, mask in pairs:
        try:
            with Image.open(image) as a, Image.open(mask) as b:
                if a.size != b.size:
                    bad.append(f"{stem} (image {a.size[0]}x{a.size[1]}, mask {b.size[0]}x"
                               f"{b.size[1]})")
        except OSError as e:
            bad.append(f"{stem} ({e})")
    if bad:
        raise InputError(f"{split_dir}: unreadable or mismatched pairs: {name_list(bad)}")
    return pairs


def class_mapping(base: ClassInfo, labels: ClassInfo, where: Path
                  ) -> tuple[dict[int, int], dict[int, str]]:
    """Label id -> merged id (by class name; new names get new ids), and the merged names.

    The labels' ignore label maps to the base's ignore label.
    """
    names = dict(base.names)
    by_name = {n: c for c, n in names.items()}
    taken = set(names) | ({base.ignore_index} if base.ignore_index is not None else set())
    mapping: dict[int, int] = {}
    for label_id, name in sorted(labels.names.items()):
        if name not in by_name:
            new_id = next(i for i in range(len(taken) + 1) if i not in taken)
            names[new_id], by_name[name] = name, new_id
            taken.add(new_id)
        mapping[label_id] = by_name[name]
    if labels.ignore_index is not None:
        if base.ignore_index is None:
            raise InputError(f"{where}: labels use ignore_index {labels.ignore_index} but the "
                             "base dataset has none; drop ignore pixels or add one to the base")
        mapping[labels.ignore_index] = base.ignore_index
    return mapping, names


def _files(folder: Path) -> dict[str, list[Path]]:
    """stem -> files of ``folder`` (hidden files left out)."""
    out: dict[str, list[Path]] = {}
    if folder.is_dir():
        for f in sorted(folder.iterdir()):
            if f.is_file() and not f.name.startswith("."):
                out.setdefault(f.stem, []).append(f)
    return out


def _candidates(split_dir: Path, report: MergeReport) -> list[tuple[str, Path, Path]]:
    """Label (stem, image, mask) triples; unpaired or unexpected files are skipped."""
    images, masks = _files(split_dir / "images"), _files(split_dir / "masks")
    out = []
    for stem in sorted(images.keys() | masks.keys()):
        imgs = [f for f in images.get(stem, []) if f.suffix.lower() in IMAGE_SUFFIXES]
        msks = [f for f in masks.get(stem, []) if f.suffix.lower() == ".png"]
        for f in set(images.get(stem, []) + masks.get(stem, [])) - set(imgs + msks):
            report.skip(f, "unexpected file type")
        if len(imgs) > 1 or len(msks) > 1:
            for f in imgs + msks:
                report.skip(f, f"several files share the stem {stem!r}")
        elif not msks and imgs:
            report.skip(imgs[0], f"no mask masks/{stem}.png")
        elif not imgs and msks:
            report.skip(msks[0], "mask without an image")
        elif imgs and msks:
            out.append((stem, imgs[0], msks[0]))
    return out


def _label_problem(image: Path, mask: Path, allowed: set[int]
                   ) -> tuple[Path | None, str, np.ndarray]:
    """``(culprit, reason, labels)``: the file that makes a label pair unusable and why
    (culprit ``None`` when the pair is fine), and its label map."""
    empty = np.zeros((0, 0), np.int64)
    try:
        h, w = load_image(image).shape[:2]
    except InputError as e:
        return image, str(e), empty
    try:
        labels = load_label_map(mask)
    except InputError as e:
        return mask, str(e), empty
    if labels.shape != (h, w):
        return mask, f"mask is {labels.shape[1]}x{labels.shape[0]} but the image is {w}x{h}", labels
    unknown = sorted(set(np.unique(labels).tolist()) - allowed)
    if unknown:
        return mask, f"label values {unknown} are not in the labels' classes.json", labels
    return None, "", labels


def add_labels(labels_root: Path, base: ClassInfo, out: Path, report: MergeReport,
               held_fraction: float = 0.0) -> dict[int, str]:  # fmt: skip
    """Add the usable label pairs of ``labels_root/train`` to ``out/train`` (the held-back ones
    to ``out/labels_val``); returns the merged class names. An absent or empty labels folder
    adds nothing."""
    split = labels_root / "train"
    if not (labels_root / "classes.json").is_file() and not split.exists():
        return dict(base.names)
    info = read_classes(labels_root)
    mapping, names = class_mapping(base, info, labels_root)
    report.classes_added = sorted(n for c, n in names.items() if c not in base.names)
    allowed = set(info.names) | ({info.ignore_index} if info.ignore_index is not None else set())
    identity = all(k == v for k, v in mapping.items())
    for stem, image, mask in _candidates(split, report):
        culprit, problem, labels = _label_problem(image, mask, allowed)
        if culprit is not None:
            report.skip(culprit, problem)
            continue
        name = f"{LABEL_PREFIX}{stem}"
        part = LABELS_VAL if held_back(stem, held_fraction) else "train"
        link(image, out / part / "images" / f"{name}{image.suffix.lower()}")
        if identity:
            link(mask, out / part / "masks" / f"{name}.png")
        else:
            lut = np.arange(int(labels.max()) + 1, dtype=np.int64)
            for k, v in mapping.items():
                if k < len(lut):
                    lut[k] = v
            target = out / part / "masks" / f"{name}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(lut[labels].astype(np.uint8)).save(target)
            report.masks_remapped += 1
        complete = split / COMPLETE_DIR / f"{stem}.json"
        if complete.is_file():  # which classes the label holds wherever they are
            link(complete, out / part / COMPLETE_DIR / f"{name}.json")
        if part == LABELS_VAL:
            report.labels_held_back += 1
        else:
            report.labels_added += 1
    return names


def write_classes(out: Path, names: dict[int, str], base: ClassInfo) -> None:
    """``out/classes.json`` with the merged names and the base's ignore/background labels."""
    data: dict[str, object] = {"classes": {str(c): n for c, n in sorted(names.items())}}
    if base.ignore_index is not None:
        data["ignore_index"] = base.ignore_index
    if base.background_index is not None:
        data["background_index"] = base.background_index
    (out / "classes.json").write_text(json.dumps(data, indent=1) + "\n")


def merge(base_root: Path, labels_root: Path, out: Path, held_fraction: float = 0.0
          ) -> MergeReport:  # fmt: skip
    """Build ``out`` (must not exist) from the base's train/val splits plus the labels
    (``held_fraction`` of them held back in ``labels_val``)."""
    if not base_root.is_dir():
        raise InputError(f"base dataset {base_root} not found (prepare.base in params.yaml)")
    base = read_classes(base_root)
    report = MergeReport()
    for split in ("train", "val"):
        pairs = check_base_split(base_root / split)
        for stem, image, mask in pairs:
            link(image, out / split / "images" / f"{stem}{image.suffix.lower()}")
            link(mask, out / split / "masks" / f"{stem}.png")
        setattr(report, f"base_{split}", len(pairs))
    names = add_labels(labels_root, base, out, report, held_fraction)
    write_classes(out, names, base)
    return report

"""The experiment of a loop simulation: a pool to label, a test split, the classes asked for.

The served system must start without the classes: :func:`derive_base` writes the base dataset
the pipeline trains on — the pool dataset with those classes' pixels turned into the ignore
label and their names removed from ``classes.json`` — so every label of them is a new class.
Stakeholders ask for each class with one fixed support (a pool image showing it, kept out of
the pool) and the pool images that show it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from dinoseg.data.classnames import normalize_class_name
from dinoseg.data.folder import FolderDataset
from dinoseg.data.folds import DEFAULT_MIN_AREA
from dinoseg.io import InputError


@dataclass
class Request:
    """What a stakeholder asks for one class: a support and the images to segment."""

    class_name: str
    class_id: int  # in the pool / test datasets
    support: str  # stem of the support image in the pool
    queries: list[str]  # stems of the pool images that show the class


#: The test split's two parts (:meth:`Scenario.test_part`).
TEST_PARTS = ("choose", "tell")


@dataclass
class Scenario:
    """Pool, test split and classes of a simulation (see the module docstring)."""

    pool: FolderDataset
    test: FolderDataset
    classes: list[str]
    seed: int = 0
    min_area: float = DEFAULT_MIN_AREA
    requests: list[Request] = field(default_factory=list)

    @classmethod
    def load(cls, pool: Path, pool_split: str, test: Path, test_split: str,
             classes: list[str], seed: int = 0) -> Scenario:  # fmt: skip
        """Open both datasets and choose each class's support (seeded)."""
        scen = cls(FolderDataset(pool, pool_split), FolderDataset(test, test_split),
                   [normalize_class_name(c) for c in classes], seed)  # fmt: skip
        rng = np.random.default_rng(seed)
        for name in scen.classes:
            cid = scen.class_id(name)
            stems = scen.pool.images_with_class(cid, scen.min_area)
            if len(stems) < 2:
                raise InputError(f"class {name!r}: fewer than 2 pool images show it")
            support = stems[int(rng.integers(len(stems)))]
            scen.requests.append(Request(name, cid, support, [s for s in stems if s != support]))
        return scen

    def class_id(self, name: str, dataset: FolderDataset | None = None) -> int:
        ds = dataset or self.pool
        for cid, n in ds.class_names.items():
            if normalize_class_name(n) == name:
                return cid
        raise InputError(f"class {name!r} is not a class of {ds.root} ({ds.split})")

    def test_stems(self, name: str) -> list[str]:
        """Test images that show class ``name`` (any pixel of it)."""
        return self.test.images_with_class(self.class_id(name, self.test), 0.0)

    def test_part(self, stem: str) -> str:
        """``choose`` for the first half of the test split's images (sorted by name: frames of
        a drive stay together), ``tell`` for the rest. A figure that decides something (a
        default) is read on ``choose``; the figure reported for it, on ``tell``."""
        stems = self.test.stems  # sorted
        return TEST_PARTS[0] if stems.index(stem) < len(stems) // 2 else TEST_PARTS[1]

    def truth(self, dataset: FolderDataset, stem: str, name: str) -> np.ndarray:
        """(H, W) bool ground truth of class ``name`` in an image."""
        _, labels = dataset.load_stem(stem)
        return labels == self.class_id(name, dataset)


def derive_base(scen: Scenario, out: Path, splits: tuple[str, ...] = ("train", "val")) -> Path:
    """Write the pool dataset without the scenario's classes (see the module docstring);
    images are linked, masks rewritten. Returns ``out``."""
    root = Path(scen.pool.root)
    data = json.loads((root / "classes.json").read_text())
    ignore = scen.pool.ignore_index
    if ignore is None:
        raise InputError(f"{root}: the pool needs an ignore_index to hide the classes")
    hidden = {scen.class_id(n) for n in scen.classes}
    data["classes"] = {str(c): n for c, n in scen.pool.class_names.items() if c not in hidden}
    out.mkdir(parents=True, exist_ok=True)
    (out / "classes.json").write_text(json.dumps(data, indent=1))
    for split in splits:
        if not (root / split).is_dir():
            continue
        ds = FolderDataset(root, split)
        (out / split / "images").mkdir(parents=True, exist_ok=True)
        (out / split / "masks").mkdir(parents=True, exist_ok=True)
        for stem in ds.stems:
            image = ds.image_path(stem)
            link = out / split / "images" / image.name
            if not link.exists():
                os.symlink(image.resolve(), link)
            _, labels = ds.load_stem(stem)
            labels = np.where(np.isin(labels, list(hidden)), ignore, labels).astype(np.uint8)
            Image.fromarray(labels).save(out / split / "masks" / f"{stem}.png")
    return out

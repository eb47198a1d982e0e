"""Pre-annotation on demand: a mask of the task's class from the class's labelled examples.

The ML backend calls a :data:`Preannotate` (``(image, class name) -> mask or None``); this
module's :class:`ExamplePreannotator` takes up to ``shots`` labelled images of the class from
dataset folders (the annotators' ``data/labels`` first, then the base dataset) as the few-shot
support of a predictor (the prototype model by default), encoded once per class. A support
memory (``dinoseg.memory``) can take its place behind the same call.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dinoseg.data.classnames import normalize_class_name
from dinoseg.data.folder import FolderDataset
from dinoseg.io import InputError
from dinoseg.predictor import FewShotPredictor

log = logging.getLogger(__name__)

#: (H, W, 3) uint8 image, normalised class name -> (H, W) bool mask, or None (no example)
Preannotate = Callable[[np.ndarray, str], "np.ndarray | None"]


class UnknownClass(InputError):
    """No dataset folder knows the class."""


@dataclass(frozen=True)
class Example:
    """One labelled image of a class: its dataset folder, file stem and the class's id there."""

    root: Path
    stem: str
    class_id: int


class ExamplePreannotator:
    """Few-shot pre-annotation from labelled examples in dataset folders.

    Args:
        roots: dataset folders (``classes.json`` + ``train/``), searched in order.
        predictor: builds the predictor (called once, at the first use).
        shots: labelled images per class used as the support.
        min_area: share of an image the class must cover to serve as an example.
    """

    def __init__(self, roots: Sequence[Path], predictor: Callable[[], FewShotPredictor],
                 shots: int = 5, min_area: float = 0.01):  # fmt: skip
        self.roots = [Path(r) for r in roots]
        self._make = predictor
        self.shots = shots
        self.min_area = min_area
        self._predictor: FewShotPredictor | None = None
        self._support: tuple[Example, ...] = ()
        self._lock = threading.Lock()

    def known(self) -> list[str]:
        """Every class name the folders know (normal form, sorted)."""
        names: set[str] = set()
        for root in self.roots:
            if (root / "classes.json").is_file():
                from dinoseg.data.classnames import class_names_of

                names.update(class_names_of(root))
        return sorted(names)

    def examples(self, class_name: str) -> list[Example]:
        """Up to ``shots`` labelled images of ``class_name`` (newest labels first).

        Raises:
            UnknownClass: no folder names the class.
        """
        wanted = normalize_class_name(class_name)
        found: list[Example] = []
        named = False
        for root in self.roots:
            ds = _dataset(root)
            if ds is None:
                continue
            ids = [c for c, n in ds.class_names.items() if normalize_class_name(n) == wanted]
            named |= bool(ids)
            for c in ids:
                stems = ds.images_with_class(c, self.min_area)
                found += [Example(root, s, c) for s in sorted(stems, reverse=root == self.roots[0])]
        if not named:
            raise UnknownClass(f"unknown class {class_name!r}: no labelled examples; known: "
                               f"{', '.join(self.known()) or 'none'}")  # fmt: skip
        return found[: self.shots]

    def __call__(self, image: np.ndarray, class_name: str) -> np.ndarray | None:
        """(H, W) bool mask of ``class_name`` in ``image``; None when the class has no example
        yet. Raises :class:`UnknownClass` for a class no folder names."""
        examples = tuple(self.examples(class_name))
        if not examples:
            return None
        with self._lock:
            if self._predictor is None:
                self._predictor = self._make()
            if examples != self._support:
                images, masks = [], []
                for ex in examples:
                    img, labels = FolderDataset(ex.root, "train").load_stem(ex.stem)
                    images.append(img)
                    masks.append(labels == ex.class_id)
                self._predictor.set_support(images, masks)
                self._support = examples
            return np.asarray(self._predictor.predict([image])[0].mask, bool)


def _dataset(root: Path) -> FolderDataset | None:
    """The folder's ``train`` split, or None when it has none (yet)."""
    if not (root / "classes.json").is_file() or not (root / "train" / "images").is_dir():
        return None
    try:
        return FolderDataset(root, "train")
    except InputError as e:
        log.warning("labelled examples in %s unreadable: %s", root, e)
        return None

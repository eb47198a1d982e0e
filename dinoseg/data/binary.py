"""Per-class binary datasets in the FSS-1000 layout.

::

    ROOT/<class name>/<n>.jpg   image
    ROOT/<class name>/<n>.png   its binary mask (0 / 255, or 0 / 1)

Every image belongs to exactly one class; mask pixels >= 128 (or == 1 for 0/1 masks) are the
class, the rest background (HSNet's FSS-1000 rule). Items are named ``"<class>/<n>"``. The
sampler interface (``class_ids``, ``images_with_class``, ``load_binary``) matches
:class:`~dinoseg.data.folder.FolderDataset`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import numpy as np

from dinoseg.data.folder import name_list
from dinoseg.data.folds import DEFAULT_MIN_AREA
from dinoseg.data.presence import MaskStats, load_presence, stems_with_class
from dinoseg.io import InputError, load_image, load_label_map

IMAGE_SUFFIXES = (".jpg", ".jpeg")


def binarize(labels: np.ndarray) -> np.ndarray:
    """(H, W) bool foreground of a 0/255 mask (>= 128) or a 0/1 mask (== 1)."""
    return labels >= 128 if labels.max(initial=0) > 1 else labels == 1


def _class_pairs(folder: Path) -> list[tuple[str, Path, Path]]:
    """``(n, image, mask)`` for one class folder, sorted by ``n``."""
    files = [f for f in folder.iterdir() if f.is_file() and not f.name.startswith(".")]
    images = {f.stem: f for f in files if f.suffix.lower() in IMAGE_SUFFIXES}
    masks = {f.stem: f for f in files if f.suffix.lower() == ".png"}
    no_mask = sorted(images.keys() - masks.keys())
    no_image = sorted(masks.keys() - images.keys())
    if no_mask or no_image:
        raise InputError(
            f"{folder}: every <n>.jpg needs its <n>.png mask. "
            f"Images without mask: {name_list(no_mask) or 'none'}; masks without image: "
            f"{name_list(no_image) or 'none'}."
        )
    if not images:
        raise InputError(f"{folder}: no <n>.jpg / <n>.png pairs in this class folder")
    return [(n, images[n], masks[n]) for n in sorted(images)]


class BinaryClassDataset:
    """FSS-1000-style dataset: one folder per class.

    Args:
        root: folder holding one sub-folder per class.
        classes: class folder names to use, in class-id order (e.g. an HSNet split list);
            default every sub-folder, sorted.
        cache_dir: presence-index cache (see :mod:`dinoseg.data.presence`).
    """

    def __init__(
        self,
        root: str | Path,
        *,
        classes: Sequence[str] | None = None,
        cache_dir: str | Path | None = None,
    ):
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise InputError(f"{self.root}: no such dataset folder")
        found = sorted(p.name for p in self.root.iterdir() if p.is_dir() and p.name[0] != ".")
        names = list(classes) if classes is not None else found
        missing = sorted(set(names) - set(found))
        if missing:
            raise InputError(f"{self.root}: class folders not found: {name_list(missing)}")
        if not names:
            raise InputError(f"{self.root}: no class folders; expected ROOT/<class>/<n>.jpg")
        self.class_names: dict[int, str] = dict(enumerate(names))
        self._pairs: dict[str, tuple[int, Path, Path]] = {}
        for cid, name in self.class_names.items():
            for n, image, mask in _class_pairs(self.root / name):
                self._pairs[f"{name}/{n}"] = (cid, image, mask)
        self.stems: tuple[str, ...] = tuple(self._pairs)
        self.ignore_index: int | None = None
        self._cache_dir = Path(cache_dir) if cache_dir is not None else None

    def __len__(self) -> int:
        return len(self.stems)

    @property
    def class_ids(self) -> tuple[int, ...]:
        return tuple(self.class_names)

    def class_of(self, stem: str) -> int:
        return self._pairs[stem][0]

    def load_binary(self, stem: str, class_id: int) -> tuple[np.ndarray, np.ndarray]:
        """(H, W, 3) uint8 image and (H, W) uint8 mask, 1 = class, 0 = background."""
        cid, image_file, mask_file = self._pairs[stem]
        if cid != class_id:
            raise KeyError(f"{stem} belongs to class {cid}, not {class_id}")
        image, labels = load_image(image_file), load_label_map(mask_file)
        if image.shape[:2] != labels.shape:
            (ih, iw), (mh, mw) = image.shape[:2], labels.shape
            raise InputError(f"{mask_file}: mask is {mw}x{mh} but its image is {iw}x{ih}")
        return image, binarize(labels).astype(np.uint8)

    def _scan(self, stem: str, mask_file: Path) -> MaskStats:
        labels = load_label_map(mask_file)
        h, w = labels.shape
        return MaskStats((h, w), {self._pairs[stem][0]: int(binarize(labels).sum())})

    @cached_property
    def stats(self) -> dict[str, MaskStats]:
        """stem -> mask shape and foreground pixels under its class id; cached on disk."""
        masks = [(stem, self._pairs[stem][2]) for stem in self.stems]
        source = f"binary:{self.root}:{','.join(self.class_names.values())}"
        return load_presence(masks, self._scan, source=source, cache_dir=self._cache_dir)

    def images_with_class(self, class_id: int, min_area: float = DEFAULT_MIN_AREA) -> list[str]:
        """Stems (sorted) of class ``class_id`` whose foreground covers at least ``min_area``."""
        return stems_with_class(self.stats, class_id, min_area)

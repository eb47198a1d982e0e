"""The project's dataset folder format.

::

    ROOT/classes.json              {"classes": {"0": "sky", ...}, "ignore_index": 11,
                                    "background_index": 20}   (the last two optional)
    ROOT/<split>/images/<stem>.jpg|.jpeg|.png
    ROOT/<split>/masks/<stem>.png  class indices (one label per pixel)
    ROOT/<split>/complete/<stem>.json   optional: {"classes": ["pedestrian"]}, the classes
                                   labelled wherever they are in the image (a review task's
                                   class): an unlabelled pixel there is *not* one of them

``classes`` may also be a list of names (id = position). ``ignore_index`` marks unlabeled pixels
(void); ``background_index`` names a background class that is never an episode class. Every image
needs a mask with the same stem and vice versa.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from dinoseg.data.folds import DEFAULT_MIN_AREA, min_pixels
from dinoseg.data.presence import MaskStats, count_labels, load_presence, stems_with_class
from dinoseg.io import InputError, load_image, load_label_map

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MASK_SUFFIXES = (".png",)
#: ``SPLIT/complete/<stem>.json``: an image's complete classes (see the module docstring).
COMPLETE_DIR = "complete"
_SEPARATORS = re.compile(r"[\s_]+")


def class_key(name: str) -> str:
    """How class names compare, without checking them: lower case, runs of spaces /
    underscores -> ``_`` (``"Sign Symbol"`` is CamVid's ``sign_symbol``;
    :func:`dinoseg.data.classnames.normalize_class_name` also checks the name)."""
    return _SEPARATORS.sub("_", name.strip().lower()).strip("_")


def read_complete(path: Path) -> tuple[str, ...]:
    """The class names of a ``complete/<stem>.json`` file; none when it is absent."""
    if not path.is_file():
        return ()
    try:
        names = json.loads(path.read_text())["classes"]
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f'{path}: expected {{"classes": ["name", ...]}} ({e})') from e
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise InputError(f'{path}: "classes" must be a list of class names')
    return tuple(names)


@dataclass(frozen=True)
class ClassInfo:
    """Contents of ``classes.json``.

    Attributes:
        names: class id -> name (background included, ignore excluded).
        ignore_index: label of unlabeled pixels, or ``None``.
        background_index: background class id, or ``None``.
    """

    names: dict[int, str]
    ignore_index: int | None
    background_index: int | None

    @property
    def episode_classes(self) -> tuple[int, ...]:
        """Classes that can be an episode's class (background excluded), sorted."""
        return tuple(sorted(c for c in self.names if c != self.background_index))


def _optional_int(data: dict[str, object], key: str, path: Path) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{path}: {key!r} must be an integer label, got {value!r}")
    return value


def _class_names(raw: object, path: Path) -> dict[int, str]:
    items = list(enumerate(raw)) if isinstance(raw, list) else None
    if isinstance(raw, dict):
        try:
            items = [(int(k), v) for k, v in raw.items()]
        except ValueError as e:
            raise InputError(f'{path}: class ids must be integers like "0" ({e})') from e
    if not items or not all(isinstance(n, str) for _, n in items):
        raise InputError(
            f'{path}: "classes" must be a non-empty {{"0": "name", ...}} map or list of names'
        )
    if any(c < 0 for c, _ in items):
        raise InputError(f"{path}: class ids must be non-negative")
    return {c: str(n) for c, n in sorted(items)}


def read_classes(root: str | Path) -> ClassInfo:
    """Read and check ``ROOT/classes.json``."""
    path = Path(root) / "classes.json"
    if not path.is_file():
        raise InputError(f"{path}: missing; a dataset folder needs classes.json (see folder.py)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict) or "classes" not in data:
        raise InputError(f'{path}: expected an object with a "classes" entry')
    names = _class_names(data["classes"], path)
    ignore = _optional_int(data, "ignore_index", path)
    background = _optional_int(data, "background_index", path)
    if ignore is not None and ignore in names:
        raise InputError(f"{path}: ignore_index {ignore} is also class {names[ignore]!r}")
    if background is not None and background not in names:
        raise InputError(f"{path}: background_index {background} is not one of the classes")
    return ClassInfo(names, ignore, background)


def _list_files(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """stem -> file for every non-hidden file in ``folder``."""
    if not folder.is_dir():
        raise InputError(f"{folder}: missing folder")
    files: dict[str, Path] = {}
    for f in sorted(folder.iterdir()):
        if f.name.startswith(".") or not f.is_file():
            continue
        if f.suffix.lower() not in suffixes:
            raise InputError(f"{f}: unexpected file; only {', '.join(suffixes)} belong here")
        if f.stem in files:
            raise InputError(f"{folder}: {files[f.stem].name} and {f.name} share a stem; keep one")
        files[f.stem] = f
    return files


def name_list(names: list[str], n: int = 5) -> str:
    """The first ``n`` names for an error message ("a, b, c and 7 more")."""
    more = f" and {len(names) - n} more" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def list_pairs(split_dir: Path) -> list[tuple[str, Path, Path]]:
    """``(stem, image, mask)`` for every pair under ``split_dir``, sorted by stem."""
    images = _list_files(split_dir / "images", IMAGE_SUFFIXES)
    masks = _list_files(split_dir / "masks", MASK_SUFFIXES)
    no_mask = sorted(images.keys() - masks.keys())
    no_image = sorted(masks.keys() - images.keys())
    if no_mask or no_image:
        lines = [f"{split_dir}: images and masks do not pair up by file stem."]
        if no_mask:
            names = name_list([images[s].name for s in no_mask])
            lines.append(f"Images without masks/<stem>.png: {names}.")
        if no_image:
            names = name_list([masks[s].name for s in no_image])
            lines.append(f"Orphan masks without an image: {names}.")
        raise InputError(" ".join(lines))
    if not images:
        raise InputError(f"{split_dir}: no images; put pairs in images/ and masks/")
    return [(s, images[s], masks[s]) for s in sorted(images)]


class FolderDataset:
    """Image/mask pairs of one split of a dataset folder, with a cached class-presence index.

    Args:
        root: dataset folder holding ``classes.json``.
        split: sub-folder name (``train``, ``val``, ...).
        cache_dir: where the presence index is cached; default ``$DINOSEG_CACHE`` or
            ``~/.cache/dinoseg``.
    """

    def __init__(self, root: str | Path, split: str, *, cache_dir: str | Path | None = None):
        self.root = Path(root).resolve()
        self.split = split
        self.info = read_classes(self.root)
        split_dir = self.root / split
        if not split_dir.is_dir():
            found = sorted(p.name for p in self.root.iterdir() if (p / "images").is_dir())
            raise InputError(f"{split_dir}: no such split; this dataset has {found or 'none'}")
        self._pairs = {stem: (img, mask) for stem, img, mask in list_pairs(split_dir)}
        self.stems: tuple[str, ...] = tuple(self._pairs)
        self._cache_dir = Path(cache_dir) if cache_dir is not None else None

    def __len__(self) -> int:
        return len(self.stems)

    def __repr__(self) -> str:
        return f"FolderDataset({str(self.root)!r}, {self.split!r}, {len(self)} images)"

    @property
    def class_names(self) -> dict[int, str]:
        """class id -> name (background included)."""
        return dict(self.info.names)

    @property
    def ignore_index(self) -> int | None:
        return self.info.ignore_index

    @property
    def class_ids(self) -> tuple[int, ...]:
        """Classes that can be an episode's class (ignore and background excluded)."""
        return self.info.episode_classes

    def image_path(self, stem: str) -> Path:
        return self._pairs[stem][0]

    def mask_path(self, stem: str) -> Path:
        return self._pairs[stem][1]

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Pair ``i``: (H, W, 3) uint8 image and (H, W) int64 label map."""
        return self.load_stem(self.stems[i])

    def load_stem(self, stem: str) -> tuple[np.ndarray, np.ndarray]:
        """Pair named ``stem``: (H, W, 3) uint8 image and (H, W) int64 label map."""
        image_file, mask_file = self._pairs[stem]
        image, labels = load_image(image_file), load_label_map(mask_file)
        if image.shape[:2] != labels.shape:
            (ih, iw), (mh, mw) = image.shape[:2], labels.shape
            raise InputError(f"{mask_file}: mask is {mw}x{mh} but its image is {iw}x{ih}")
        return image, labels

    def load_binary(self, stem: str, class_id: int) -> tuple[np.ndarray, np.ndarray]:
        """Image and episode mask for ``class_id``: (H, W, 3) uint8 and (H, W) uint8 with
        1 = class, 0 = anything else, 255 = ignore (an unlabelled pixel, unless the class is
        one of the image's :meth:`complete_classes`)."""
        image, labels = self.load_stem(stem)
        mask = (labels == class_id).astype(np.uint8)
        if self.ignore_index is not None and not self._complete(stem, class_id):
            mask[labels == self.ignore_index] = 255
        return image, mask

    def _complete(self, stem: str, class_id: int) -> bool:
        name = self.info.names.get(class_id)
        return name is not None and class_key(name) in map(class_key, self.complete_classes(stem))

    def complete_classes(self, stem: str) -> tuple[str, ...]:
        """Names of the classes labelled wherever they are in image ``stem``
        (``SPLIT/complete/<stem>.json``; none when that file is absent)."""
        return read_complete(self.root / self.split / COMPLETE_DIR / f"{stem}.json")

    def _scan(self, stem: str, mask_file: Path) -> MaskStats:
        labels = load_label_map(mask_file)
        pixels = count_labels(labels)
        allowed = set(self.info.names) | {self.info.ignore_index}
        unknown = sorted(set(pixels) - allowed)
        if unknown:
            raise InputError(
                f"{mask_file}: label values {unknown} are neither classes in classes.json "
                f"nor its ignore_index ({self.info.ignore_index}); fix the mask or classes.json"
            )
        h, w = labels.shape
        return MaskStats((h, w), pixels)

    @cached_property
    def stats(self) -> dict[str, MaskStats]:
        """stem -> mask shape and pixels per label; computed once, cached on disk."""
        masks = [(stem, self._pairs[stem][1]) for stem in self.stems]
        # classes.json is part of the key: a changed label set rescans (and re-checks) masks
        source = f"folder:{self.root}:{self.split}:{self.info!r}"
        return load_presence(masks, self._scan, source=source, cache_dir=self._cache_dir)

    @property
    def class_pixels(self) -> dict[str, dict[int, int]]:
        """stem -> {class id: pixel count} (ignore label included if present)."""
        return {stem: dict(s.pixels) for stem, s in self.stats.items()}

    def present_classes(self, stem: str, min_area: float = DEFAULT_MIN_AREA) -> list[int]:
        """Episode classes covering at least ``min_area`` of image ``stem``, sorted."""
        s = self.stats[stem]
        need = min_pixels(min_area, s.shape[0] * s.shape[1])
        return [c for c in self.class_ids if s.pixels.get(c, 0) >= need]

    def images_with_class(self, class_id: int, min_area: float = DEFAULT_MIN_AREA) -> list[str]:
        """Stems (sorted) of the images where ``class_id`` covers at least ``min_area``."""
        return stems_with_class(self.stats, class_id, min_area)

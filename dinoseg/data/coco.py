"""COCO instance annotations as a few-shot episode source (COCO-20i).

::

    ROOT/annotations/instances_<split>.json   COCO "instances" JSON: images, annotations, categories
    ROOT/<split>/<file_name>                  the images it lists (other files are ignored)

- **Classes.** Categories sorted by COCO ``id`` get the contiguous ids ``0 .. N-1`` (person = 0 ...
  toothbrush = 79 for COCO's 80), the order :func:`~dinoseg.data.folds.coco_fold` assumes.
  :attr:`CocoDataset.category_ids` maps them back. Every category is a class, with or without
  annotations in the split; the sampler skips those with too few images.
- **Items** are named by ``file_name`` without its suffix (``"000000397133"``).
- **Masks.** ``load_binary(stem, c)`` rasterises every annotation of class ``c`` in the image,
  polygons or RLE (:mod:`dinoseg.data.coco_masks`).
- **Crowd.** ``iscrowd: 1`` regions of the episode class become ignore (255) wherever no ordinary
  instance of the class covers the pixel: they hold the class, but not as a clean object mask.
  Crowds of other classes are background (0), like every other class.
- **Presence** (:meth:`CocoDataset.images_with_class`) uses the annotations' ``area`` field summed
  per class and image over the non-crowd annotations, against ``min_pixels(min_area, H * W)`` with
  ``H, W`` from the ``images`` entry. No mask is decoded, so construction is one JSON parse and
  needs no presence cache. Overlapping instances of a class count twice (their union may fall a
  little short of the threshold), while the rasterised mask runs a few percent larger than
  ``area`` (PIL's outline; median +3 % on coco-mini).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from dinoseg.data.coco_masks import decode_segmentation
from dinoseg.data.folder import name_list
from dinoseg.data.folds import DEFAULT_MIN_AREA, min_pixels
from dinoseg.io import InputError, load_image

IGNORE = 255


# --- annotation file -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CocoImage:
    """One ``images`` entry: COCO ``id``, image file and its size from the JSON."""

    id: int
    file: Path
    height: int
    width: int


class _Annotation(NamedTuple):
    id: object
    class_id: int
    crowd: bool
    segmentation: object


def _get(entry: object, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """``entry[key]`` checked to be of ``kind`` (bools are never numbers here)."""
    if not isinstance(entry, dict) or key not in entry:
        raise InputError(f"{where}: missing {key!r}")
    value = entry[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise InputError(f"{where}: {key!r} must be {names}, got {str(value)[:40]!r}")
    return value


def read_coco_json(path: Path) -> dict[str, list[Any]]:
    """The ``images``, ``annotations`` and ``categories`` lists of a COCO instances file."""
    if not path.is_file():
        found = sorted(p.name for p in path.parent.glob("instances_*.json"))
        raise InputError(
            f"{path}: annotation file not found; the COCO layout is "
            f"ROOT/annotations/instances_<split>.json (found: {name_list(found) or 'none'}), "
            "or pass annotations=<file>"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not a readable JSON file ({e})") from e
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object with images, annotations, categories")
    return {
        key: _get(data, key, list, str(path)) for key in ("images", "annotations", "categories")
    }


def _categories(raw: list[Any], where: str) -> dict[int, str]:
    """COCO category id -> name, sorted by id."""
    names: dict[int, str] = {}
    for entry in raw:
        cid = _get(entry, "id", int, f"{where}: category")
        if cid in names:
            raise InputError(f"{where}: category id {cid} appears twice")
        names[cid] = _get(entry, "name", str, f"{where}: category {cid}")
    if not names:
        raise InputError(f"{where}: no categories; an instances file lists at least one")
    return dict(sorted(names.items()))


def _images(raw: list[Any], where: str, image_dir: Path) -> dict[str, CocoImage]:
    """stem -> image record, sorted by stem."""
    images: dict[str, CocoImage] = {}
    ids: set[int] = set()
    for entry in raw:
        iid = _get(entry, "id", int, f"{where}: image")
        here = f"{where}: image {iid}"
        name = _get(entry, "file_name", str, here)
        h, w = (_get(entry, k, int, here) for k in ("height", "width"))
        stem = Path(name).with_suffix("").as_posix()
        if iid in ids or stem in images:
            raise InputError(f"{here}: id or file name {name!r} appears twice")
        if h < 1 or w < 1:
            raise InputError(f"{here}: size {w}x{h} must be positive")
        ids.add(iid)
        images[stem] = CocoImage(iid, image_dir / name, h, w)
    return dict(sorted(images.items()))


# --- dataset -------------------------------------------------------------------------------------


class CocoDataset:
    """One split of a COCO-format dataset, with per-class binary episode masks.

    Args:
        root: dataset folder (``ROOT/annotations/``, ``ROOT/<split>/``).
        split: image folder and annotation-file name part (``train2017``, ``val2017``, ...).
        annotations: instances JSON to use instead of ``ROOT/annotations/instances_<split>.json``.
    """

    def __init__(self, root: str | Path, split: str, *, annotations: str | Path | None = None):
        self.root = Path(root).resolve()
        self.split = split
        default = self.root / "annotations" / f"instances_{split}.json"
        self.annotation_file = Path(annotations).resolve() if annotations is not None else default
        self.image_dir = self.root / split
        if not self.image_dir.is_dir():
            raise InputError(f"{self.image_dir}: no such image folder for split {split!r}")
        data = read_coco_json(self.annotation_file)
        where = str(self.annotation_file)
        categories = _categories(data["categories"], where)
        #: class id -> COCO category id (ascending).
        self.category_ids: tuple[int, ...] = tuple(categories)
        self.class_names: dict[int, str] = dict(enumerate(categories.values()))
        self._images = _images(data["images"], where, self.image_dir)
        self.stems: tuple[str, ...] = tuple(self._images)
        self._annotations: dict[str, list[_Annotation]] = {s: [] for s in self.stems}
        self._areas: dict[int, dict[str, float]] = {c: {} for c in self.class_names}
        self._index(data["annotations"], where)

    def _index(self, raw: list[Any], where: str) -> None:
        """Group annotations by image and sum their areas per class (crowds excluded)."""
        stem_of = {img.id: stem for stem, img in self._images.items()}
        class_of = {cat: c for c, cat in enumerate(self.category_ids)}
        for entry in raw:
            ann_id = entry.get("id") if isinstance(entry, dict) else str(entry)[:40]
            here = f"{where}: annotation {ann_id}"
            stem = stem_of.get(_get(entry, "image_id", int, here))
            cls = class_of.get(_get(entry, "category_id", int, here))
            if stem is None or cls is None:
                raise InputError(f"{here}: image_id or category_id is not in images / categories")
            crowd = entry.get("iscrowd", 0)
            if crowd not in (0, 1):
                raise InputError(f"{here}: 'iscrowd' must be 0 or 1, got {crowd!r}")
            area = _get(entry, "area", (int, float), here)
            segmentation = _get(entry, "segmentation", (list, dict), here)
            self._annotations[stem].append(
                _Annotation(entry.get("id"), cls, bool(crowd), segmentation)
            )
            if not crowd:
                self._areas[cls][stem] = self._areas[cls].get(stem, 0.0) + float(area)

    def __len__(self) -> int:
        return len(self.stems)

    def __repr__(self) -> str:
        return f"CocoDataset({str(self.root)!r}, {self.split!r}, {len(self)} images)"

    @property
    def class_ids(self) -> tuple[int, ...]:
        """Every class (0 .. N-1); COCO has no background class."""
        return tuple(self.class_names)

    def image(self, stem: str) -> CocoImage:
        """The ``images`` entry of ``stem``."""
        if stem not in self._images:
            raise KeyError(f"{stem!r} is not an image of {self!r}")
        return self._images[stem]

    def class_area(self, stem: str) -> dict[int, float]:
        """class id -> summed ``area`` of the image's non-crowd annotations."""
        self.image(stem)
        return {c: areas[stem] for c, areas in self._areas.items() if stem in areas}

    def present_classes(self, stem: str, min_area: float = DEFAULT_MIN_AREA) -> list[int]:
        """Classes whose annotated area covers at least ``min_area`` of image ``stem``, sorted."""
        img = self.image(stem)
        need = min_pixels(min_area, img.height * img.width)
        return sorted(c for c, area in self.class_area(stem).items() if area >= need)

    def images_with_class(self, class_id: int, min_area: float = DEFAULT_MIN_AREA) -> list[str]:
        """Stems (sorted) whose annotated area of ``class_id`` covers at least ``min_area``."""
        min_pixels(min_area, 1)  # rejects a bad min_area even for a class without images
        out = []
        for stem, area in self._areas.get(class_id, {}).items():
            img = self._images[stem]
            if area >= min_pixels(min_area, img.height * img.width):
                out.append(stem)
        return sorted(out)

    def load_mask(self, stem: str, class_id: int) -> np.ndarray:
        """(H, W) uint8 episode mask of ``class_id``: 1 = class, 0 = background, 255 = crowd."""
        img = self.image(stem)
        if class_id not in self.class_names:
            raise KeyError(f"class {class_id} is not one of 0 .. {len(self.class_names) - 1}")
        size = (img.height, img.width)
        fg, crowd = np.zeros(size, dtype=bool), np.zeros(size, dtype=bool)
        for ann in self._annotations[stem]:
            if ann.class_id != class_id:
                continue
            try:
                region = decode_segmentation(ann.segmentation, size)
            except InputError as e:
                raise InputError(
                    f"{self.annotation_file}: annotation {ann.id} of {img.file.name}: {e}"
                ) from e
            (crowd if ann.crowd else fg)[region] = True
        mask = fg.astype(np.uint8)
        mask[crowd & ~fg] = IGNORE
        return mask

    def load_image(self, stem: str) -> np.ndarray:
        """(H, W, 3) uint8 image ``stem``, checked against its size in the JSON."""
        img = self.image(stem)
        if not img.file.is_file():
            raise InputError(
                f"{img.file}: image {img.id} listed in {self.annotation_file.name} is missing; "
                f"put the split's images in {self.image_dir}"
            )
        image = load_image(img.file)
        if image.shape[:2] != (img.height, img.width):
            h, w = image.shape[:2]
            raise InputError(
                f"{img.file}: image is {w}x{h} but {self.annotation_file.name} says "
                f"{img.width}x{img.height}"
            )
        return image

    def load_binary(self, stem: str, class_id: int) -> tuple[np.ndarray, np.ndarray]:
        """(H, W, 3) uint8 image and (H, W) uint8 mask, 1 = class, 0 = background, 255 = crowd."""
        return self.load_image(stem), self.load_mask(stem, class_id)

"""Labelled aerial images for training a head: read and checked, cut into views, encoded once.

:func:`read_labelled` reads dataset folders (``ROOT/classes.json`` + ``ROOT/<split>/images|masks``,
the Dubai layout; the annotators' ``data/aerial_labels`` is the same format) and refuses, with
one line naming the file, what no training could use: a mask of another size than its image, a
mask value that is neither a class of ``classes.json`` nor its ignore value, an image smaller
than one patch, labels of fewer than two classes. Everything is checked before any pixel is
encoded, so a bad folder costs nothing and writes nothing.

:func:`encode_views` turns each image into its training views (:mod:`dinoseg.aerial.views`)
and each view into a :class:`~dinoseg.heads.finetune.TuneItem`: the frozen prefix of the
:class:`~dinoseg.heads.split.SplitBackbone` (cached on disk in float16, keyed by the encoder
input, the backbone's weights and the cut) and the per-patch class shares of its labels.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from dinoseg.aerial.views import ViewPlan, training_views
from dinoseg.heads.data import content_hash, folder_classes, patch_targets, split_held_back
from dinoseg.heads.finetune import TuneItem
from dinoseg.heads.split import SplitBackbone
from dinoseg.io import InputError
from dinoseg.preprocess import image_to_tensor, plan_geometry

log = logging.getLogger(__name__)
UNLABELLED = 255


@dataclass
class TrainImage:
    """One labelled image: ``labels`` (H, W) uint8 head class indices, 255 unlabelled."""

    source: str
    hash: str
    image: np.ndarray
    labels: np.ndarray

    @property
    def classes(self) -> frozenset[int]:
        return frozenset(int(v) for v in np.unique(self.labels) if v != UNLABELLED)


def _class_names(sources: Sequence[tuple[str, str]]) -> list[str]:
    names: list[str] = []
    for root, _ in sources:
        if (Path(root) / "classes.json").is_file():
            names += [n for n in folder_classes(root).values() if n not in names]
    return names


def _read_one(ds: object, stem: str, class_of: dict[int, int], ignore: set[int],
              patch: int) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    image, labels = ds.load_stem(stem)  # type: ignore[attr-defined]  # size mismatch -> error
    mask = ds.mask_path(stem)  # type: ignore[attr-defined]
    bad = sorted(set(np.unique(labels).tolist()) - set(class_of) - ignore)
    if bad:
        raise InputError(f"{mask}: values {bad[:5]} are not classes of classes.json "
                         f"({sorted(class_of)}) nor unlabelled ({sorted(ignore)})")
    h, w = labels.shape
    if min(h, w) < patch:
        raise InputError(f"{ds.image_path(stem)}: {w}x{h} px is smaller than one "  # type: ignore[attr-defined]
                         f"{patch} px patch")
    mapped = np.full(labels.shape, UNLABELLED, np.uint8)
    for value, k in class_of.items():
        mapped[labels == value] = k
    return image, mapped


def read_labelled(sources: Sequence[tuple[str, str]], *, patch: int = 14,
                  only: Sequence[str] = ()) -> tuple[list[str], list[TrainImage]]:  # fmt: skip
    """Class names (normalised, in the order the folders name them) and every labelled image
    of the sources (``(folder, split)``, increasing priority: an image met again takes the later
    label). ``only``: keep only these image stems. A folder without ``classes.json`` yet (an
    empty labels folder) is skipped. Raises :class:`InputError` (see the module docstring)."""
    from dinoseg.data.folder import FolderDataset

    names = _class_names(sources)
    index = {n: k for k, n in enumerate(names)}
    found: dict[str, TrainImage] = {}
    for root, split in sources:
        if not (Path(root) / "classes.json").is_file():
            log.info("%s: no classes.json yet, skipped", root)
            continue
        ds = FolderDataset(root, split)
        class_of = {v: index[n] for v, n in folder_classes(root).items()}
        ignore = {UNLABELLED} | ({ds.ignore_index} if ds.ignore_index is not None else set())
        for stem in ds.stems:
            if only and stem not in only:
                continue
            image, labels = _read_one(ds, stem, class_of, ignore, patch)
            h = content_hash(image)
            found.pop(h, None)
            found[h] = TrainImage(f"{root}:{split}/{stem}", h, image, labels)
    images = list(found.values())
    if not images:
        what = f" named {list(only)[:3]}" if only else ""
        raise InputError(f"no labelled image{what} in {[f'{r}:{s}' for r, s in sources]}")
    present = sorted(set().union(*(im.classes for im in images)))
    if len(present) < 2:
        shown = [names[k] for k in present] or ["none"]
        raise InputError(f"the labels mark only {shown}: a head needs at least two classes")
    return names, images


def split_images(images: Sequence[TrainImage], fraction: float, *, min_images: int = 3,
                 seed: int = 0) -> tuple[list[TrainImage], list[TrainImage]]:  # fmt: skip
    """``(fit, held back)`` by content hash (:func:`~dinoseg.heads.data.held_back`): an image is
    held back only when every class it labels has ``min_images`` labelled images; all views of
    an image fall on its side."""
    return split_held_back(images, fraction, min_images=min_images, seed=seed)


class PrefixCache:
    """The prefix of each encoder input on disk (float16 safetensors), or nowhere (``None``)."""

    def __init__(self, split: SplitBackbone, disk_dir: str | Path | None):
        from dinoseg.feature_cache import FeatureCache

        self.split = split
        self.dir = Path(disk_dir) if disk_dir else None
        identity = FeatureCache(max_bytes=0).backbone_identity(split.backbone)
        self.identity = f"{identity}|cut={split.cut}|blocks={split.low_blocks}|prefix-v1"
        self.hits = self.misses = 0

    def __call__(self, pixels: Tensor) -> tuple[list[Tensor], Tensor | None]:
        """(3, Hp, Wp) -> (frozen block features (C, h, w), tokens (T, C) or None), float16."""
        from dinoseg.feature_cache import FeatureCache

        key = FeatureCache.key(pixels, hashlib.sha256(self.identity.encode()).hexdigest())
        path = None if self.dir is None else self.dir / key[:2] / f"{key}.safetensors"
        if path is not None and path.is_file():
            from safetensors.torch import load_file

            data = load_file(str(path))
            self.hits += 1
            n = sum(1 for k in data if k.startswith("f"))
            return [data[f"f{i}"] for i in range(n)], data.get("tokens")
        self.misses += 1
        pre = self.split.prefix(pixels[None])
        feats = [f[0].to(torch.float16).contiguous() for f in pre.feats]
        tokens = None if pre.tokens is None else pre.tokens[0].to(torch.float16).contiguous()
        if path is not None:
            from safetensors.torch import save_file

            path.parent.mkdir(parents=True, exist_ok=True)
            data = {f"f{i}": f for i, f in enumerate(feats)}
            if tokens is not None:
                data["tokens"] = tokens
            tmp = path.with_suffix(".tmp")
            save_file(data, str(tmp))
            tmp.replace(path)
        return feats, tokens


def encode_views(images: Sequence[TrainImage], n_classes: int, plan: ViewPlan, scale: float,
                 cache: PrefixCache, *, progress: bool = False) -> list[TuneItem]:  # fmt: skip
    """Every view of every image as a :class:`TuneItem` (``hash`` = its image's)."""
    from tqdm import tqdm

    patch = cache.split.backbone.patch_size
    identity = {k: k for k in range(n_classes)}
    items = []
    for im in tqdm(images, desc="views", disable=not progress):
        for name, img, lab in training_views(im.image, im.labels, im.hash, plan):
            h, w = lab.shape
            geom = plan_geometry(h, w, image_size=max(patch, round(max(h, w) * scale)),
                                 patch=patch)  # as TileEncoder.geometry
            feats, tokens = cache(image_to_tensor(img, geom))
            target, cover = patch_targets(lab, identity, n_classes, geom, patch)
            present = frozenset(int(v) for v in np.unique(lab) if v != UNLABELLED)
            items.append(TuneItem(im.hash, f"{im.source}#{name}", feats, target, cover,
                                  present, tokens))  # fmt: skip
    return items

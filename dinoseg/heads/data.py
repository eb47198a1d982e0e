"""Labelled images for a head: block features and per-patch class shares, by class name.

Labels come from dataset folders (:mod:`dinoseg.data.folder`: the base dataset, the annotators'
``data/labels``, a merged set ...). Each folder's ids are read through its ``classes.json`` names
(normalised), so ``road`` in one folder and ``Road`` in another are one class, and a name the
head does not know yet becomes a new class. Pixels whose label has no name (void / ignore) are
*unlabelled*: they count for no class, and a patch's loss weight is its labelled share — an
annotator's one-class label (the class asked for, every other pixel ignore) trains exactly the
pixels it marks.

The held-back validation split is a function of the image's content hash alone
(:func:`held_back`), so an image never changes side as labels grow, except once: an image is
held back only when every class it labels has at least ``min_images`` labelled images (so a
class's first labels always train).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dinoseg.data.classnames import normalize_class_name
from dinoseg.io import InputError
from dinoseg.preprocess import Geometry

log = logging.getLogger(__name__)

#: An image encoder for heads: (H, W, 3) uint8 -> (block features (C, h, w) each, geometry).
Encode = Callable[[np.ndarray], tuple[list[Tensor], Geometry]]


@dataclass
class LabelledImage:
    """One labelled image on the head's patch grid.

    Attributes:
        hash: content hash of the image (:func:`content_hash`).
        source: where it came from (``ROOT:SPLIT/STEM``).
        feats: the head's blocks, each (C, h, w) float16.
        target: (M, h, w) float32 share of each patch's *labelled* pixels per class (head order).
        cover: (h, w) float32 share of each patch's pixels that are labelled.
        classes: indices of the classes it labels (any pixel).
    """

    hash: str
    source: str
    feats: list[Tensor]
    target: Tensor
    cover: Tensor
    classes: frozenset[int]

    @property
    def grid(self) -> tuple[int, int]:
        return int(self.cover.shape[0]), int(self.cover.shape[1])


def content_hash(image: np.ndarray) -> str:
    """SHA-256 (hex) of an (H, W, 3) uint8 image's shape and pixels (any file, same picture ->
    same hash; the support memory uses the same rule)."""
    x = np.ascontiguousarray(image, dtype=np.uint8)
    h = hashlib.sha256(f"image|{x.shape}|".encode())
    h.update(x.tobytes())
    return h.hexdigest()


def held_back(image_hash: str, fraction: float, seed: int = 0) -> bool:
    """Whether an image (by content hash) belongs to the held-back validation split."""
    if fraction <= 0:
        return False
    digest = hashlib.sha256(f"{seed}:{image_hash}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


class Hashed(Protocol):
    """What a held-back split needs of an image: its content hash and the classes it labels."""

    @property
    def hash(self) -> str: ...

    @property
    def classes(self) -> Collection[int]: ...


H = TypeVar("H", bound=Hashed)


def split_held_back(
    images: Sequence[H], fraction: float, *, min_images: int = 5, seed: int = 0
) -> tuple[list[H], list[H]]:
    """``(fit, val)``: an image is in ``val`` when its hash says so (:func:`held_back`) and
    every class it labels has at least ``min_images`` labelled images (any image with ``hash``
    and ``classes``: labelled images here, aerial training tiles)."""
    counts: dict[int, int] = {}
    for im in images:
        for c in im.classes:
            counts[c] = counts.get(c, 0) + 1
    fit: list[H] = []
    val: list[H] = []
    for im in images:
        eligible = all(counts[c] >= min_images for c in im.classes)
        (val if eligible and held_back(im.hash, fraction, seed) else fit).append(im)
    return fit, val


def patch_targets(
    labels: np.ndarray, class_of: Mapping[int, int], n_classes: int, geom: Geometry, patch: int
) -> tuple[Tensor, Tensor]:
    """Per-patch class shares of a label map on the encoder's patch grid.

    The label map is resized (nearest) onto ``geom.resized`` and padded to ``geom.padded``
    (padding unlabelled), as the image is.

    Args:
        labels: (H, W) integer label map at the image's size.
        class_of: label value -> head class index; other values are unlabelled.
        n_classes: M.
        geom: the image's geometry; ``patch``: the encoder's patch size.

    Returns:
        ``(target (M, h, w), cover (h, w))`` float32: shares of the labelled pixels per class,
        and the labelled share of each patch (target is 0 where cover is 0).
    """
    mapped = np.full(labels.shape, n_classes, dtype=np.int64)
    for value, k in class_of.items():
        mapped[labels == value] = k
    lab = torch.from_numpy(mapped)[None, None].float()
    lab = F.interpolate(lab, size=geom.resized, mode="nearest")[0, 0].long()
    (rh, rw), (ph, pw) = geom.resized, geom.padded
    lab = F.pad(lab, (0, pw - rw, 0, ph - rh), value=n_classes)
    onehot = F.one_hot(lab, n_classes + 1).permute(2, 0, 1).float()[None]
    shares = F.avg_pool2d(onehot, patch)[0]  # (M + 1, h, w)
    cover = 1.0 - shares[n_classes]
    target = shares[:n_classes] / cover.clamp_min(1e-6)
    return target * (cover > 0), cover


def folder_classes(root: str | Path) -> dict[int, str]:
    """A dataset folder's label value -> normalised class name (ignore excluded)."""
    from dinoseg.data.folder import read_classes

    return {c: normalize_class_name(n) for c, n in read_classes(root).names.items()}


def grow_classes(classes: Sequence[str], sources: Iterable[tuple[str | Path, str]]) -> list[str]:
    """``classes`` followed by every class the sources' ``classes.json`` name that it lacks,
    in the order met (a folder without ``classes.json`` yet names none)."""
    out = [normalize_class_name(c) for c in classes]
    for root, _ in sources:
        if (Path(root) / "classes.json").is_file():
            out += [n for n in folder_classes(root).values() if n not in out]
    return out


def load_labelled(
    sources: Sequence[tuple[str | Path, str]],
    encode: Encode,
    classes: Sequence[str],
    patch: int,
    *,
    progress: bool = False,
) -> list[LabelledImage]:
    """Every labelled image of the sources, as :class:`LabelledImage` over ``classes``.

    Args:
        sources: ``(dataset folder, split)`` pairs in increasing priority: an image (by content)
            met again in a later source takes that source's label. A folder without
            ``classes.json`` (an empty labels folder) is skipped.
        encode: the head's encoder (:class:`dinoseg.heads.features.BlockFeatures`).
        classes: the head's class names (every named label must be one: see
            :func:`grow_classes`).
        patch: the encoder's patch size.

    Returns:
        the images in source order, one per distinct image content.
    """
    from tqdm import tqdm

    from dinoseg.data.folder import FolderDataset

    index = {name: k for k, name in enumerate(classes)}
    found: dict[str, LabelledImage] = {}
    for root, split in sources:
        if not (Path(root) / "classes.json").is_file():
            log.info("%s: no classes.json yet, skipped", root)
            continue
        ds = FolderDataset(root, split)
        names = folder_classes(root)
        missing = sorted(set(names.values()) - set(index))
        if missing:
            raise InputError(f"{root}: classes {missing} are not among the head's classes")
        class_of = {v: index[n] for v, n in names.items()}
        for stem in tqdm(ds.stems, desc=f"labels {Path(root).name}", disable=not progress):
            image, labels = ds.load_stem(stem)
            feats, geom = encode(image)
            target, cover = patch_targets(labels, class_of, len(classes), geom, patch)
            present = frozenset(k for v, k in class_of.items() if np.any(labels == v))
            h = content_hash(image)
            found.pop(h, None)
            found[h] = LabelledImage(h, f"{root}:{split}/{stem}", feats, target, cover, present)
    return list(found.values())

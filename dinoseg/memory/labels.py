"""What the memory keeps of one labelled image besides its features: its entry (content hashes,
source, classes) and the per-patch class fractions of its label map.

Class identity is by **name**: a label map comes with its dataset's ``id -> name`` map, and
pixels whose label has no name (void / ignore) are excluded from every fraction.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from dinoseg.data.folder import class_key
from dinoseg.preprocess import Geometry

#: A patch takes part in votes when at least this share of its pixels is labelled.
MIN_LABELLED = 0.5


@dataclass(frozen=True)
class MemoryEntry:
    """One labelled image: content hashes, where it came from, and its classes (name -> share
    of its labelled pixels)."""

    hash: str
    label_hash: str
    source: str
    classes: dict[str, float]


def image_hash(image: np.ndarray) -> str:
    """SHA-256 (hex) of an (H, W, 3) uint8 image's pixels and shape: the same picture decoded
    from any file (or received as an array by the predictor) has the same hash."""
    x = np.ascontiguousarray(image, dtype=np.uint8)
    h = hashlib.sha256(f"image|{x.shape}|".encode())
    h.update(x.tobytes())
    return h.hexdigest()


def label_hash(
    labels: np.ndarray, class_names: Mapping[int, str], complete: Collection[str] = ()
) -> str:
    """SHA-256 (hex) of an (H, W) label map read by class *name* (unnamed labels = ignore) and
    of its complete classes (see :func:`patch_fractions`; none leaves the hash as it was)."""
    x = np.ascontiguousarray(labels, dtype=np.int64)
    present = sorted(int(v) for v in np.unique(x))
    names = [f"{v}={class_key(class_names[v])}" if v in class_names else f"{v}=" for v in present]
    h = hashlib.sha256(f"labels|{x.shape}|{','.join(names)}|".encode())
    if complete:
        h.update(f"complete|{','.join(sorted({class_key(n) for n in complete}))}|".encode())
    h.update(x.tobytes())
    return h.hexdigest()


def patch_fractions(
    labels: np.ndarray,
    class_names: Mapping[int, str],
    geom: Geometry,
    patch: int,
    complete: Collection[str] = (),
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Per-patch class fractions of a label map on the encoder's patch grid.

    The label map is resized (nearest) onto ``geom.resized`` and padded to ``geom.padded``
    (padding = unlabelled), as :func:`dinoseg.preprocess.image_to_tensor` does to the image.
    A class's fraction is its share of the patch's *known* pixels: the labelled ones, or for a
    **complete** class (every pixel of it in the image is labelled, e.g. the class a review
    task asked for) every image pixel, an unlabelled one being "not this class". Where fewer
    than :data:`MIN_LABELLED` of a patch's pixels are known the fraction is NaN (unknown).

    Args:
        labels: (H, W) integer class ids at the image's size.
        class_names: id -> name; other labels are ignore.
        geom: the image's geometry at the memory's working size.
        patch: the encoder's patch size.
        complete: names of the image's complete classes (present in the map or not).

    Returns:
        ``(names, fractions, labelled)``: the M class names present or complete
        (:func:`class_key` form, sorted), (P, M) float32 fractions (NaN = unknown; P = h * w,
        row-major), and (P,) float32 share of each patch's pixels that are labelled.
    """
    lab = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))[None, None].float()
    lab = F.interpolate(lab, size=geom.resized, mode="nearest")[0, 0].long()
    rh, rw = geom.resized
    ph, pw = geom.padded
    lab = F.pad(lab, (0, pw - rw, 0, ph - rh), value=-1)
    present = sorted(int(v) for v in torch.unique(lab).tolist() if int(v) in class_names)
    done = {class_key(n) for n in complete}
    by_name: dict[str, list[int]] = {n: [] for n in done}
    for v in present:  # two ids may share a name: their pixels add up
        by_name.setdefault(class_key(class_names[v]), []).append(v)
    names = sorted(by_name)
    planes = [torch.isin(lab, torch.tensor(by_name[n] or [-2])).float() for n in names]
    labelled = torch.isin(lab, torch.tensor(present or [-2])).float()
    stack = torch.stack([*planes, labelled, (lab != -1).float()])[None]  # (1, M + 2, Hp, Wp)
    pooled = F.avg_pool2d(stack, patch)[0].reshape(len(names) + 2, -1)  # (M + 2, P)
    cover, image = pooled[-2], pooled[-1]
    is_done = torch.tensor([n in done for n in names], dtype=torch.bool)[:, None]  # (M, 1)
    known = torch.where(is_done, image, cover)  # (M, P): the pixels each fraction is over
    fractions = torch.where(known >= MIN_LABELLED, pooled[:-2] / known.clamp_min(1e-6), torch.nan)
    return names, fractions.T.contiguous().numpy(), cover.numpy()

"""Frozen-backbone features of a whole dataset split, held in memory for training.

The backbone is frozen and in eval mode, so its features are a pure function of the image:
computing them once (through :class:`dinoseg.feature_cache.FeatureCache`, optionally on disk)
and training on the stored tensors is exact, and makes episodic training feasible on a CPU.
Features are kept as float16 (half the memory; the segmenter computes in float32).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from dinoseg.backbone import DinoBackbone
from dinoseg.data import FolderDataset
from dinoseg.feature_cache import FeatureCache
from dinoseg.preprocess import Geometry, image_to_tensor, plan_geometry

log = logging.getLogger(__name__)

#: Label value of padding and of the dataset's ignore index inside a bank.
IGNORE = -1
#: Labels are stored at this many pixels per feature cell (the decoder's 4x upsampling).
LABEL_STRIDE = 4


@dataclass
class BankItem:
    """One image of a :class:`FeatureBank`.

    Attributes:
        stem: the dataset's name for the image.
        feats: L tensors (C, h, w) float16.
        labels: (4h, 4w) int16 class indices (nearest-resampled; padding and ignore = -1).
        counts: class id -> labelled cells in ``labels`` (for the minimum-area rule).
        orig: (H, W) of the image file.
        resized: (h, w) of the image content inside the padded encoder input.
    """

    stem: str
    feats: list[Tensor]
    labels: Tensor
    counts: dict[int, int]
    orig: tuple[int, int]
    resized: tuple[int, int]

    @property
    def grid(self) -> tuple[int, int]:
        h, w = self.feats[0].shape[-2:]
        return int(h), int(w)


def _labels_on_grid(labels: np.ndarray, resized: tuple[int, int], padded: tuple[int, int],
                    grid: tuple[int, int], ignore_index: int | None) -> Tensor:
    """(H, W) label map -> (4h, 4w) int16 on the padded input's geometry."""
    lab = torch.from_numpy(labels.astype(np.int64))
    if ignore_index is not None:
        lab[lab == ignore_index] = IGNORE
    ph, pw = padded
    rh, rw = resized
    gh, gw = grid[0] * LABEL_STRIDE, grid[1] * LABEL_STRIDE
    # the resized content covers (rh/ph, rw/pw) of the padded canvas
    ch, cw = round(gh * rh / ph), round(gw * rw / pw)
    small = F.interpolate(lab[None, None].float(), size=(ch, cw), mode="nearest")[0, 0].long()
    out = torch.full((gh, gw), IGNORE, dtype=torch.int16)
    out[:ch, :cw] = small.to(torch.int16)
    return out


def make_item(stem: str, feats: list[Tensor], labels: np.ndarray, geom: Geometry,
              ignore_index: int | None) -> BankItem:
    """A :class:`BankItem` from encoder outputs L x (1, C, h, w) of ``geom``'s input and the
    (H, W) label map of the encoded image."""
    half = [f[0].to("cpu", torch.float16) for f in feats]  # banks live on the CPU
    grid = (int(half[0].shape[-2]), int(half[0].shape[-1]))
    lab = _labels_on_grid(labels, geom.resized, geom.padded, grid, ignore_index)
    values, counts = torch.unique(lab[lab >= 0], return_counts=True)
    return BankItem(stem=stem, feats=half, labels=lab,
                    counts={int(v): int(c) for v, c in zip(values, counts, strict=True)},
                    orig=geom.orig, resized=geom.resized)


class FeatureBank:
    """Features and low-resolution labels of every image in a dataset split.

    Args:
        dataset: a folder dataset split.
        backbone: the frozen encoder.
        image_size: long side fed to the encoder (as the predictor does at inference).
        cache: a feature cache (its disk directory makes a second run cheap).
        limit: keep only the first ``limit`` images (0 = all).
    """

    def __init__(self, dataset: FolderDataset, backbone: DinoBackbone, *, image_size: int,
                 cache: FeatureCache | None = None, progress: bool = True, limit: int = 0):
        self.dataset = dataset
        self.image_size = image_size
        self.backbone_spec = backbone.spec
        cache = cache or FeatureCache(max_bytes=0)
        self.items: list[BankItem] = []
        n = min(limit, len(dataset)) if limit > 0 else len(dataset)
        for i in tqdm(range(n), desc=f"features {dataset.split}", disable=not progress,
                      leave=False):
            self.items.append(self._encode(i, backbone, cache))
        self.index = {it.stem: n for n, it in enumerate(self.items)}

    def _encode(self, i: int, backbone: DinoBackbone, cache: FeatureCache) -> BankItem:
        image, labels = self.dataset.load(i)
        h, w = image.shape[:2]
        geom = plan_geometry(h, w, image_size=self.image_size, patch=backbone.patch_size)
        pixels = image_to_tensor(image, geom)[None]
        return make_item(self.dataset.stems[i], cache.encode(backbone, pixels), labels, geom,
                         self.dataset.ignore_index)

    def __len__(self) -> int:
        return len(self.items)

    def view(self, index: int, class_id: int, rng: np.random.Generator) -> BankItem:
        """The view of image ``index`` an episode of ``class_id`` trains on: its cached item
        (the default view source of :class:`~dinoseg.train.episodes.TrainEpisodes`; ``class_id``
        and ``rng`` are for sources that draw a new view, :mod:`dinoseg.train.augment`)."""
        return self.items[index]

    def images_with_class(self, class_id: int, min_area: float) -> list[int]:
        """Indices of the images where ``class_id`` covers at least ``min_area`` of the image."""
        out = []
        for n, it in enumerate(self.items):
            cells = it.labels.numel()
            if it.counts.get(class_id, 0) >= max(1, int(np.ceil(min_area * cells))):
                out.append(n)
        return out

    def nbytes(self) -> int:
        return sum(f.numel() * f.element_size() for it in self.items for f in it.feats)

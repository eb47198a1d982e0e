"""SupportMemory: every labelled image as examples of its classes, on disk, retrievable.

Layout of a memory directory::

    ROOT/manifest.json                 format, version, encoder settings, images, classes
    ROOT/index.safetensors             "descriptors" (N, C) float32 global descriptors, one row
                                       per image; metadata: the entries (hash, label hash,
                                       source, class -> share of labelled pixels) and encoder
    ROOT/patches/<h[:2]>/<h>.safetensors   one image's labelled patches: "keys" (P, C) float16
                                       unit vectors of the memory's block, "fractions" (P, M)
                                       class shares (metadata: the M class names)

Only patches where some class's share is known are kept (at least half of their pixels labelled
or, for a complete class, inside the image: ``labels.patch_fractions``). The descriptors live
in one matrix (retrieval reads no patch file); patch files are read only for the retrieved
images and kept in a byte-bounded LRU. The **version** is a SHA-256 over the format, the
encoder settings and the sorted ``image hash:label hash`` pairs: two processes that built from
the same labels with the same encoder agree, whatever the order or the paths. Writers (``add``,
``remove``) hold an exclusive lock on ``ROOT/.lock`` and re-read the index first, so a builder
and the review loop can share a directory; readers call :meth:`SupportMemory.refresh`.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dinoseg.io import InputError
from dinoseg.memory.encoder import EncoderSettings, MemoryEncoder
from dinoseg.memory.files import PatchFiles, read_meta, stamp
from dinoseg.memory.index import memory_version, read_index, write_index, write_manifest
from dinoseg.memory.labels import (
    MemoryEntry,
    class_key,
    image_hash,
    label_hash,
    patch_fractions,
)

#: Default byte budget of patch files kept in memory.
DEFAULT_CACHE_BYTES = 1024**3


class SupportMemory:
    """Labelled images of named classes with cached features (use :meth:`create` / :meth:`open`).

    Args:
        root: the memory directory.
        settings: its encoder settings.
        encoder: needed only to :meth:`add` images (must have the same settings).
        cache_bytes: budget of patch files kept in memory.
    """

    def __init__(
        self,
        root: str | Path,
        settings: EncoderSettings,
        *,
        encoder: MemoryEncoder | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ):
        if encoder is not None and encoder.settings != settings:
            raise InputError(f"{root}: the memory was built with {settings}, not with this encoder")
        self.root, self.settings, self.encoder = Path(root), settings, encoder
        self.cache_bytes = cache_bytes
        self.entries: list[MemoryEntry] = []
        self.descriptors = torch.zeros(0, 0)
        self._stamp: tuple[int, int] | None = None
        self._files = PatchFiles(self.root, cache_bytes)
        self._reindex()

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    def create(cls, root: str | Path, encoder: MemoryEncoder, **kw: int) -> SupportMemory:
        """A new memory in ``root`` (empty or absent); an existing memory there is opened if it
        has the same encoder settings."""
        root = Path(root)
        if (root / "index.safetensors").is_file():
            return cls.open(root, encoder=encoder, **kw)
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise InputError(f"{root}: not empty and not a support memory; choose a new folder")
        root.mkdir(parents=True, exist_ok=True)
        memory = cls(root, encoder.settings, encoder=encoder, **kw)
        with memory.writing():
            pass  # the empty index and manifest, written under the lock
        return memory

    @classmethod
    def open(
        cls, root: str | Path, *, encoder: MemoryEncoder | None = None, **kw: int
    ) -> SupportMemory:
        """Open the memory in ``root``; :class:`InputError` when there is none."""
        index = Path(root) / "index.safetensors"
        if not index.is_file():
            raise InputError(f"{root}: no support memory here (build one: dinoseg memory build)")
        settings = EncoderSettings.from_dict(json.loads(read_meta(index)["encoder"]))
        memory = cls(root, settings, encoder=encoder, **kw)
        memory.refresh()
        return memory

    # -- what it holds -----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, image_hash_: object) -> bool:
        return image_hash_ in self._row

    @property
    def version(self) -> str:
        return memory_version(self.settings, ((e.hash, e.label_hash) for e in self.entries))

    @property
    def classes(self) -> dict[str, int]:
        """Class name -> number of images showing it (sorted by name)."""
        return {name: len(rows) for name, rows in sorted(self._by_class.items())}

    def images_of(self, class_name: str) -> list[str]:
        """Hashes of the images showing ``class_name`` (insertion order)."""
        return [self.entries[r].hash for r in self._by_class.get(class_key(class_name), [])]

    def _reindex(self) -> None:
        self._row = {e.hash: i for i, e in enumerate(self.entries)}
        self._by_class: dict[str, list[int]] = {}
        for i, e in enumerate(self.entries):
            for name, share in e.classes.items():
                if share > 0:
                    self._by_class.setdefault(name, []).append(i)

    # -- retrieval ---------------------------------------------------------------------------
    def retrieve(
        self,
        descriptor: Tensor,
        class_name: str,
        k: int | None,
        exclude: Iterable[str] = (),
    ) -> list[str]:
        """The ``k`` images of ``class_name`` most similar to a query, best first.

        Args:
            descriptor: (C,) the query's global descriptor
                (:func:`dinoseg.memory.encoder.global_descriptor`).
            class_name: the class (by name; an unknown class retrieves nothing).
            k: how many (``None`` = every image of the class).
            exclude: image hashes never returned (the query itself, the supports).

        Returns:
            image hashes, at most ``k``; ties broken by hash.
        """
        banned = set(exclude)
        rows = self._by_class.get(class_key(class_name), [])
        rows = [r for r in rows if self.entries[r].hash not in banned]
        if not rows or k == 0:
            return []
        sims = (self.descriptors[rows] @ F.normalize(descriptor.float(), dim=0)).tolist()
        order = sorted(range(len(rows)), key=lambda i: (-sims[i], self.entries[rows[i]].hash))
        return [self.entries[rows[i]].hash for i in order[: k if k is not None else len(rows)]]

    def patches(self, hashes: Iterable[str], class_name: str) -> tuple[Tensor, Tensor]:
        """The labelled patches of some images as vote keys for ``class_name``.

        Returns:
            keys (N, C) float16 unit vectors and values (N,) float32 shares of ``class_name``
            (the patches where that share is known).
        """
        keys, values = [], []
        class_name = class_key(class_name)
        for h in hashes:
            feats, fractions, names = self._files.load(h, self.entries[self._row[h]].label_hash)
            if class_name in names:  # a patch whose share of the class is unknown stays out
                value = fractions[:, names.index(class_name)].float()
                keys.append(feats[~value.isnan()])
                values.append(value[~value.isnan()])
            else:
                keys.append(feats)
                values.append(torch.zeros(feats.shape[0]))
        if not keys:
            return torch.zeros(0, self.descriptors.shape[1], dtype=torch.float16), torch.zeros(0)
        return torch.cat(keys), torch.cat(values)

    # -- writing -----------------------------------------------------------------------------
    def add(
        self,
        image: np.ndarray,
        label_map: np.ndarray,
        class_names: Mapping[int, str],
        source: str = "",
        *,
        complete: Collection[str] = (),
        save: bool = True,
    ) -> bool:
        """Add (or relabel) one labelled image; returns False when it is already there with
        this label.

        Args:
            image: (H, W, 3) uint8.
            label_map: (H, W) integer class ids; labels not in ``class_names`` are ignore.
            class_names: id -> class name (names identify classes across datasets).
            source: provenance (a dataset path and stem, a label id).
            complete: classes labelled wherever they are in the image (a review task's class):
                its unlabelled pixels are examples of "not that class"
                (:func:`dinoseg.memory.labels.patch_fractions`).
            save: lock, refresh and write the index around this one image (``False`` while
                adding many inside ``with memory.writing():``).
        """
        if self.encoder is None:
            raise InputError("this memory was opened without an encoder; it cannot add images")
        if image.shape[:2] != label_map.shape:
            raise InputError(f"{source}: label map {label_map.shape} != image {image.shape[:2]}")
        h, lh = image_hash(image), label_hash(label_map, class_names, complete)
        with self.writing() if save else nullcontext():
            row = self._row.get(h)
            if row is not None and self.entries[row].label_hash == lh:
                return False
            feats, descriptor, geom = self.encoder(image)
            names, fractions, cover = patch_fractions(
                label_map, class_names, geom, self.settings.patch, complete
            )
            frac = torch.from_numpy(fractions)
            keep = ~frac.isnan().all(1)  # some class's share is known (none: no class)
            keys = F.normalize(feats.flatten(1).T, dim=1)[keep].half()
            self._files.write(h, lh, keys, frac[keep].half(), names)
            pixels = np.nan_to_num(fractions).T @ cover  # (M,) labelled pixels per class
            total = max(float(cover.sum()), 1e-6)
            shares = {n: round(float(v) / total, 6) for n, v in zip(names, pixels, strict=True)}
            self._put(MemoryEntry(h, lh, source, shares), descriptor)
        return True

    def remove(self, hashes: Iterable[str], *, save: bool = True) -> int:
        """Drop images by hash (``save`` as in :meth:`add`); returns how many were there."""
        gone = set(hashes)
        with self.writing() if save else nullcontext():
            keep = [i for i, e in enumerate(self.entries) if e.hash not in gone]
            removed = len(self.entries) - len(keep)
            for h in gone & set(self._row):
                self._files.delete(h)
            self.entries = [self.entries[i] for i in keep]
            self.descriptors = self.descriptors[keep]
            self._reindex()
        return removed

    def _put(self, entry: MemoryEntry, descriptor: Tensor) -> None:
        row = self._row.get(entry.hash)
        d = descriptor.float()[None]
        if self.descriptors.numel() == 0:
            self.descriptors = torch.zeros(0, d.shape[1])
        if row is None:
            self.entries.append(entry)
            self.descriptors = torch.cat([self.descriptors, d])
        else:
            self.entries[row] = entry
            self.descriptors[row] = d[0]
        self._reindex()

    def save(self) -> None:
        """Write the index and the manifest (atomically, index first)."""
        self._stamp = write_index(self.root, self.settings, self.entries, self.descriptors)
        write_manifest(self.root, self.settings, self.version, len(self.entries), self.classes)

    def refresh(self) -> bool:
        """Re-read the index if it changed on disk since it was last read or written here."""
        index = self.root / "index.safetensors"
        if not index.is_file() or stamp(index) == self._stamp:
            return False
        current = stamp(index)
        self.entries, self.descriptors = read_index(index)
        self._stamp = current
        self._reindex()
        return True

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Be the only writer: lock, re-read the index, change (``add(..., save=False)``), save."""
        with open(self.root / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.refresh()
            yield
            self.save()

"""Build (or bring up to date) a support memory from dataset folders.

A source is ``DIR[:SPLIT]`` (split default ``train``): the project's dataset folder format
(:mod:`dinoseg.data.folder`), e.g. the base dataset's train split and the annotators' labels
folder ``data/labels``. Later sources win when the same image appears twice (a relabelled base
image). The build is a sync: images already in the memory with the same label are not encoded
again, and (``prune``) images no longer in any source leave it, so the memory's version is a
function of the sources' contents and the encoder alone.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dinoseg.io import InputError
from dinoseg.memory.encoder import MemoryEncoder
from dinoseg.memory.labels import image_hash
from dinoseg.memory.store import SupportMemory

log = logging.getLogger(__name__)
DEFAULT_SPLIT = "train"


@dataclass(frozen=True)
class Source:
    """One dataset folder split feeding a memory."""

    root: Path
    split: str = DEFAULT_SPLIT

    def __str__(self) -> str:
        return f"{self.root}:{self.split}"


def parse_source(text: str) -> Source:
    """``DIR[:SPLIT]`` -> :class:`Source` (a trailing ``:name`` is a split when ``DIR/name``
    is a folder or ``DIR`` alone holds no split of that name; default split ``train``)."""
    base, sep, split = text.rpartition(":")
    if sep and base and "/" not in split:
        return Source(Path(base), split or DEFAULT_SPLIT)
    return Source(Path(text), DEFAULT_SPLIT)


@dataclass
class BuildStats:
    """What a build did: images seen, (re)encoded, unchanged or shadowed by a later source,
    removed; sources skipped (an empty labels folder)."""

    seen: int = 0
    added: int = 0
    unchanged: int = 0
    removed: int = 0
    skipped_sources: tuple[str, ...] = ()


def _open_source(src: Source) -> object | None:
    """The source's FolderDataset; ``None`` for an empty labels folder (no classes.json yet)."""
    from dinoseg.data.folder import FolderDataset

    if not src.root.is_dir():
        raise InputError(f"{src.root}: no such dataset folder")
    if not (src.root / "classes.json").is_file() and not (src.root / src.split).is_dir():
        return None  # e.g. data/labels before the first label
    return FolderDataset(src.root, src.split)


def _items(sources: Sequence[Source]) -> tuple[list[tuple[Any, str, str]], list[str]]:
    """``(dataset, stem, source name)`` of every image of ``sources`` in order, and the
    sources skipped (an empty labels folder)."""
    items, skipped = [], []
    for src in sources:
        ds = _open_source(src)
        if ds is None:
            skipped.append(str(src))
            continue
        items += [(ds, stem, f"{src.root.resolve()}:{src.split}/{stem}") for stem in ds.stems]  # type: ignore[attr-defined]
    return items, skipped


def build_memory(
    out: str | Path,
    sources: Sequence[Source],
    encoder: MemoryEncoder,
    *,
    prune: bool = True,
    progress: bool = False,
) -> tuple[SupportMemory, BuildStats]:
    """Make the memory in ``out`` hold exactly the labelled images of ``sources``.

    Args:
        out: memory directory (created, or brought up to date).
        sources: dataset folder splits, in increasing priority.
        encoder: the memory's encoder (an existing memory must have the same settings).
        prune: remove images that are in no source.
        progress: a tqdm bar on stderr.
    """
    from tqdm import tqdm

    memory = SupportMemory.create(out, encoder)
    stats = BuildStats()
    items, skipped = _items(sources)
    stats.skipped_sources = tuple(skipped)
    wanted: set[str] = set()
    with memory.writing():
        # highest priority first: an image met again in a lower-priority source is skipped
        for ds, stem, name in tqdm(
            items[::-1], desc="memory", file=sys.stderr, disable=not progress
        ):
            image, labels = ds.load_stem(stem)  # type: ignore[attr-defined]
            h = image_hash(image)
            stats.seen += 1
            if h in wanted:
                stats.unchanged += 1
                continue
            wanted.add(h)
            complete = ds.complete_classes(stem)  # type: ignore[attr-defined]
            if memory.add(image, labels, ds.class_names, name, complete=complete, save=False):  # type: ignore[attr-defined]
                stats.added += 1
            else:
                stats.unchanged += 1
        if prune:
            stats.removed = memory.remove(
                [e.hash for e in memory.entries if e.hash not in wanted], save=False
            )
    log.info("memory %s: %s", out, stats)
    return memory, stats

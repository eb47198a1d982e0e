"""Per-image class-presence index (pixels per class per mask), cached as JSON on disk.

Scanning hundreds of masks on every run is slow, so the counts are kept in
``$DINOSEG_CACHE/presence/<key>.json`` (default ``~/.cache/dinoseg``). Each entry remembers the
mask's size and mtime; only masks that changed, appeared or vanished are rescanned, so labels
added by annotators are picked up without a full rescan. A cache that cannot be read is rebuilt;
one that cannot be written is skipped with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dinoseg.cache import cache_root
from dinoseg.data.folds import min_pixels

log = logging.getLogger(__name__)

CACHE_VERSION = 1


@dataclass(frozen=True)
class MaskStats:
    """What the sampler needs to know about one mask without reading it.

    Attributes:
        shape: ``(H, W)`` of the mask.
        pixels: class id -> number of pixels with that label (labels with 0 pixels left out).
    """

    shape: tuple[int, int]
    pixels: dict[int, int] = field(default_factory=dict)


def default_cache_dir() -> Path:
    """The dinoseg cache root (see :func:`dinoseg.cache.cache_root`)."""
    return cache_root()


def count_labels(labels: np.ndarray) -> dict[int, int]:
    """Pixels per label value of a (H, W) non-negative integer label map."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64).ravel())
    return {int(v): int(n) for v, n in enumerate(counts) if n > 0}


def _fingerprint(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def _cache_file(cache_dir: Path, source: str) -> Path:
    digest = hashlib.sha1(source.encode("utf-8")).hexdigest()[:16]
    return cache_dir / "presence" / f"{digest}.json"


def _read_cache(path: Path, source: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        log.warning("presence cache %s unreadable (%s); rebuilding it", path, e)
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
        return {}
    if data.get("source") != source or not isinstance(data.get("entries"), dict):
        return {}
    return data["entries"]


def _write_cache(path: Path, source: str, entries: dict[str, Any]) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"version": CACHE_VERSION, "source": source, "entries": entries}
        tmp.write_text(json.dumps(payload, separators=(",", ":")), encoding="utf-8")
        tmp.replace(path)
    except OSError as e:
        log.warning(
            "cannot write presence cache %s (%s); masks will be rescanned next run", path, e
        )
        tmp.unlink(missing_ok=True)


def _entry_stats(entry: Any, size: int, mtime_ns: int) -> MaskStats | None:
    """The cached stats if ``entry`` is well formed and matches the file's size and mtime."""
    try:
        if entry["size"] != size or entry["mtime_ns"] != mtime_ns:
            return None
        h, w = (int(v) for v in entry["shape"])
        return MaskStats((h, w), {int(k): int(v) for k, v in entry["pixels"].items()})
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def load_presence(
    masks: Sequence[tuple[str, Path]],
    scan: Callable[[str, Path], MaskStats],
    *,
    source: str,
    cache_dir: Path | None = None,
) -> dict[str, MaskStats]:
    """Stats of every mask, from the cache where the file is unchanged, else from ``scan``.

    Args:
        masks: ``(stem, mask path)`` pairs.
        scan: reads one mask and counts its labels; may raise ``InputError`` for a bad mask.
        source: identifies the dataset and the scan rule (e.g. ``"folder:/abs/root:val"``);
            it names the cache file, so different rules never share counts.
        cache_dir: defaults to :func:`default_cache_dir`.

    Returns:
        stem -> :class:`MaskStats`, in the order of ``masks``.
    """
    path = _cache_file(cache_dir if cache_dir is not None else default_cache_dir(), source)
    old = _read_cache(path, source)
    new: dict[str, Any] = {}
    out: dict[str, MaskStats] = {}
    changed = set(old) != {stem for stem, _ in masks}
    for stem, mask_path in masks:
        size, mtime_ns = _fingerprint(mask_path)
        stats = _entry_stats(old.get(stem), size, mtime_ns)
        if stats is None:
            stats, changed = scan(stem, mask_path), True
        out[stem] = stats
        pixels = {str(k): v for k, v in stats.pixels.items()}
        new[stem] = {
            "size": size,
            "mtime_ns": mtime_ns,
            "shape": list(stats.shape),
            "pixels": pixels,
        }
    if changed:
        _write_cache(path, source, new)
    return out


def stems_with_class(stats: dict[str, MaskStats], class_id: int, min_area: float) -> list[str]:
    """Stems (in ``stats`` order) whose mask has ``class_id`` on at least ``min_area`` of it."""
    return [stem for stem, s in stats.items()
            if s.pixels.get(class_id, 0) >= min_pixels(min_area, s.shape[0] * s.shape[1])]

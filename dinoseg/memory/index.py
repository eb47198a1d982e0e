"""The memory's index and manifest (layout: :mod:`dinoseg.memory.store`): its format, its
content version, and reading and writing them atomically."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path

import torch
from torch import Tensor

from dinoseg.io import InputError
from dinoseg.memory.encoder import EncoderSettings
from dinoseg.memory.files import atomic_write, read_meta, stamp
from dinoseg.memory.labels import MemoryEntry

FORMAT = "dinoseg-memory-v1"


def memory_version(settings: EncoderSettings, pairs: Iterable[tuple[str, str]]) -> str:
    """SHA-256 of the format, the encoder settings and the sorted (image, label) hash pairs."""
    h = hashlib.sha256(f"{FORMAT}|{json.dumps(settings.as_dict(), sort_keys=True)}|".encode())
    for image, labels in sorted(pairs):
        h.update(f"{image}:{labels}\n".encode())
    return h.hexdigest()


def write_index(
    root: Path, settings: EncoderSettings, entries: Sequence[MemoryEntry], descriptors: Tensor
) -> tuple[int, int]:
    """Write ``root/index.safetensors`` atomically: ``descriptors`` (N, C) float32, one row per
    entry (an empty memory: (0, C) or (0, 1)), the entries and the settings in its metadata.

    Returns:
        the new index's :func:`~dinoseg.memory.files.stamp`.
    """
    from safetensors.torch import save_file

    c = descriptors.shape[1] if descriptors.numel() else 1
    desc = descriptors if descriptors.numel() else torch.zeros(0, c)
    meta = {
        "format": FORMAT,
        "encoder": json.dumps(settings.as_dict()),
        "entries": json.dumps([asdict(e) for e in entries]),
    }
    index = root / "index.safetensors"
    atomic_write(index, lambda tmp: save_file({"descriptors": desc}, str(tmp), metadata=meta))
    return stamp(index)


def write_manifest(
    root: Path, settings: EncoderSettings, version: str, images: int, classes: dict[str, int]
) -> None:
    """Write ``root/manifest.json`` atomically (format, version, images, encoder, classes)."""
    manifest = {
        "format": FORMAT, "version": version, "images": images,
        "encoder": settings.as_dict(), "classes": classes,
    }  # fmt: skip
    text = json.dumps(manifest, indent=1) + "\n"
    atomic_write(root / "manifest.json", lambda tmp: tmp.write_text(text))


def read_index(index: Path) -> tuple[list[MemoryEntry], Tensor]:
    """The entries and the (N, C) float32 descriptors of an index file.

    Raises:
        InputError: the file is of another format.
    """
    from safetensors.torch import load_file

    meta = read_meta(index)
    if meta.get("format") != FORMAT:
        raise InputError(f"{index}: format {meta.get('format')!r}, expected {FORMAT}")
    entries = [MemoryEntry(**e) for e in json.loads(meta["entries"])]
    return entries, load_file(str(index))["descriptors"]

"""The memory's files: atomic writes, safetensors metadata, and the per-image patch files with a
byte-bounded LRU (:class:`PatchFiles`)."""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from torch import Tensor


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """``write(tmp)`` then rename over ``path``: readers see the old file or the new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def stamp(path: Path) -> tuple[int, int]:
    """(mtime ns, size): changes whenever a writer replaces the file."""
    st = path.stat()
    return st.st_mtime_ns, st.st_size


def read_meta(path: Path) -> dict[str, str]:
    """The string metadata of a safetensors file."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def _nbytes(keys: Tensor, fractions: Tensor) -> int:
    return keys.numel() * keys.element_size() + fractions.numel() * fractions.element_size()


class PatchFiles:
    """``ROOT/patches/<h[:2]>/<h>.safetensors``: one image's labelled patches.

    Each file holds ``keys`` (P, C) float16 unit vectors and ``fractions`` (P, M) float16
    class shares, with the M class names and the label hash in its metadata.

    Args:
        root: the memory directory.
        max_bytes: in-memory budget of loaded files (least recently used dropped first).
    """

    def __init__(self, root: Path, max_bytes: int):
        self.root, self.max_bytes = root, max_bytes
        self._cache: OrderedDict[str, tuple[str, Tensor, Tensor, list[str]]] = OrderedDict()
        self._bytes = 0

    def path(self, h: str) -> Path:
        return self.root / "patches" / h[:2] / f"{h}.safetensors"

    def write(self, h: str, label: str, keys: Tensor, fractions: Tensor, names: list[str]) -> None:
        """Store one image's patches (replacing an older label's)."""
        from safetensors.torch import save_file

        path = self.path(h)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {"keys": keys.contiguous(), "fractions": fractions.contiguous()}
        meta = {"classes": json.dumps(names), "label_hash": label}
        atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
        self.forget(h)

    def forget(self, h: str) -> None:
        old = self._cache.pop(h, None)
        if old is not None:
            self._bytes -= _nbytes(old[1], old[2])

    def delete(self, h: str) -> None:
        self.forget(h)
        self.path(h).unlink(missing_ok=True)

    def load(self, h: str, label: str) -> tuple[Tensor, Tensor, list[str]]:
        """(keys (P, C), fractions (P, M), names) of image ``h`` as labelled by ``label``."""
        hit = self._cache.get(h)
        if hit is not None and hit[0] == label:
            self._cache.move_to_end(h)
            return hit[1], hit[2], hit[3]
        from safetensors.torch import load_file

        path = self.path(h)
        data = load_file(str(path))
        names = json.loads(read_meta(path)["classes"])
        keys, fractions = data["keys"], data["fractions"]
        size = _nbytes(keys, fractions)
        if size <= self.max_bytes:
            self.forget(h)
            self._cache[h] = (label, keys, fractions, names)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, old = self._cache.popitem(last=False)
                self._bytes -= _nbytes(old[1], old[2])
        return keys, fractions, names

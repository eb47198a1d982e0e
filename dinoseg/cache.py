"""Where dinoseg keeps derived files (converted weights, feature caches)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """The dinoseg cache directory (``$DINOSEG_CACHE``, else ``$XDG_CACHE_HOME/dinoseg``,
    else ``~/.cache/dinoseg``), joined with ``parts`` and created."""
    root = os.environ.get("DINOSEG_CACHE")
    if root:
        base = Path(root)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".cache") / "dinoseg"
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def file_fingerprint(path: str | Path) -> str:
    """A cheap identity of a file: name, size and modification time (not its content)."""
    st = Path(path).stat()
    return f"{Path(path).name}:{st.st_size}:{int(st.st_mtime)}"


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()

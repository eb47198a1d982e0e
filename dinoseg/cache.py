"""Where dinoseg keeps derived files (converted weights, feature caches)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """The dinoseg cache directory, read at call time: ``$DINOSEG_CACHE``, else
    ``$XDG_CACHE_HOME/dinoseg``, else ``~/.cache/dinoseg`` (not created)."""
    root = os.environ.get("DINOSEG_CACHE")
    if root:
        return Path(root).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "dinoseg"


def cache_dir(*parts: str) -> Path:
    """``cache_root() / parts``, created."""
    path = cache_root().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def file_fingerprint(path: str | Path) -> str:
    """A cheap identity of a file: name, size and modification time (not its content)."""
    st = Path(path).stat()
    return f"{Path(path).name}:{st.st_size}:{int(st.st_mtime)}"

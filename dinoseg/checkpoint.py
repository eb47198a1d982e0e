"""Checkpoint directories: ``model.safetensors`` + ``config.json`` (+ ``metrics.json``,
``MODEL_CARD.md``). No pickles anywhere."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from dinoseg.io import InputError

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
METRICS = "metrics.json"
CARD = "MODEL_CARD.md"


@dataclass
class CheckpointConfig:
    """What is needed to rebuild a model and its input pipeline.

    ``arch`` is a name in :data:`dinoseg.models.SEGMENTER_REGISTRY` and ``arch_kwargs`` its
    overrides; ``backbone``/``layers``/``image_size`` describe the frozen encoder it was trained
    on.
    """

    arch: str
    backbone: str
    layers: list[int]
    image_size: int
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    threshold: float = 0.5
    version: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckpointConfig:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def arch_config(model: nn.Module) -> dict[str, Any]:
    """The full architecture config of a built model (so a checkpoint does not depend on the
    registry's presets staying the same); ``{}`` for models without one (prototype)."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        return {}
    return {k: v for k, v in config.to_dict().items() if k != "name"}  # name = the arch


def save_checkpoint(
    out_dir: str | Path,
    model: nn.Module,
    config: CheckpointConfig,
    *,
    metrics: dict[str, Any] | None = None,
    card: str | None = None,
) -> Path:
    """Write a checkpoint directory atomically (a ``.tmp`` sibling renamed into place)."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp / WEIGHTS), metadata={"arch": config.arch})
    (tmp / CONFIG).write_text(json.dumps(asdict(config), indent=2))
    if metrics is not None:
        (tmp / METRICS).write_text(json.dumps(metrics, indent=2))
    if card is not None:
        (tmp / CARD).write_text(card)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def read_config(ckpt_dir: str | Path) -> CheckpointConfig:
    """Read a checkpoint's ``config.json``; :class:`InputError` if it is not a checkpoint."""
    path = Path(ckpt_dir) / CONFIG
    if not (Path(ckpt_dir) / WEIGHTS).is_file() or not path.is_file():
        raise InputError(f"{ckpt_dir}: not a checkpoint directory (needs {WEIGHTS} and {CONFIG})")
    try:
        return CheckpointConfig.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError) as e:
        raise InputError(f"{path}: unreadable checkpoint config ({e})") from e


def load_checkpoint(ckpt_dir: str | Path) -> tuple[nn.Module, CheckpointConfig]:
    """Rebuild the model of a checkpoint directory and load its weights (strict)."""
    from safetensors.torch import load_file

    from dinoseg.models import build_segmenter

    config = read_config(ckpt_dir)
    kwargs = {k: v for k, v in config.arch_kwargs.items() if k != "name"}
    try:
        model = build_segmenter(config.arch, **kwargs)
    except ValueError as e:  # an unknown arch, or an option this version no longer builds
        raise InputError(f"{ckpt_dir}: {e}") from e
    model.load_state_dict(load_file(str(Path(ckpt_dir) / WEIGHTS)), strict=True)
    return model.eval(), config

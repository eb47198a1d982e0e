"""Head checkpoints: the project's checkpoint directory (:mod:`dinoseg.checkpoint`) with
``arch`` = :data:`HEAD_ARCH` and the :class:`~dinoseg.heads.model.HeadSpec` as ``arch_kwargs``.

``layers`` of the config are the backbone blocks to *run* (a superset of the head's blocks, by
default the few-shot models' blocks 6-10, so both share cached features); ``image_size`` is the
head's working size. A head directory is not a segmenter: ``load_checkpoint`` refuses it (an
unknown arch), :func:`load_head` reads it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dinoseg.checkpoint import CheckpointConfig, read_config, save_checkpoint
from dinoseg.heads.model import HeadSpec, SegHead
from dinoseg.io import InputError

HEAD_ARCH = "supervised-head"


def is_head_checkpoint(ckpt_dir: str | Path) -> bool:
    """Whether ``ckpt_dir`` is a checkpoint directory of a head."""
    try:
        return read_config(ckpt_dir).arch == HEAD_ARCH
    except InputError:
        return False


def save_head(
    out_dir: str | Path,
    head: SegHead,
    *,
    backbone: str,
    layers: list[int],
    image_size: int,
    threshold: float,
    metrics: dict[str, Any],
    card: str,
) -> Path:
    """Write ``head`` as a checkpoint directory (atomically)."""
    config = CheckpointConfig(
        arch=HEAD_ARCH, backbone=backbone, layers=list(layers), image_size=image_size,
        arch_kwargs=head.spec.as_dict(), threshold=threshold, version=Path(out_dir).name,
    )  # fmt: skip
    return save_checkpoint(out_dir, head, config, metrics=metrics, card=card)


def load_head(ckpt_dir: str | Path) -> tuple[SegHead, CheckpointConfig]:
    """Rebuild a head from its checkpoint directory (weights loaded strictly, eval mode)."""
    from safetensors.torch import load_file

    config = read_config(ckpt_dir)
    if config.arch != HEAD_ARCH:
        raise InputError(f"{ckpt_dir}: a {config.arch!r} checkpoint, not a supervised head")
    try:
        spec = HeadSpec.from_dict(config.arch_kwargs)
    except TypeError as e:
        raise InputError(f"{ckpt_dir}: unreadable head config ({e})") from e
    head = SegHead(spec)
    head.load_state_dict(load_file(str(Path(ckpt_dir) / "model.safetensors")), strict=True)
    return head.eval(), config


def head_metrics(ckpt_dir: str | Path) -> dict[str, Any]:
    """The checkpoint's ``metrics.json`` (``{}`` when absent)."""
    path = Path(ckpt_dir) / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else {}

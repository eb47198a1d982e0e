"""Which torch device runs the models, and at which precision.

A device name is ``auto`` (CUDA when present, else the CPU), ``cpu``, ``cuda``, ``cuda:N`` or
``mps``; a name the machine cannot honour is an :class:`~dinoseg.io.InputError` with one line
that says what to use instead. On a GPU the frozen encoder and the segmenter run under
autocast (bf16 where the card supports it, else fp16; training uses bf16 or stays fp32), on the
CPU in fp32. Everything that outlives a call — cached features, support memories,
checkpoints — is kept on the CPU and moved once to where it is used, so files written on one
device load on any other.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from dinoseg.io import InputError

#: the names a ``--device`` flag or a ``device:`` config key accepts (``cuda:N`` too)
DEVICE_NAMES = ("auto", "cpu", "cuda", "mps")
DEVICE_HELP = "auto (CUDA when present, else CPU) | cpu | cuda | cuda:N | mps (default: auto)"


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """A device name -> the :class:`torch.device` to use (see the module docstring).

    Raises:
        InputError: an unknown name, or a device this machine does not have.
    """
    if isinstance(name, torch.device):
        return name
    text = (name or "auto").strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    kind, _, index = text.partition(":")
    if kind not in DEVICE_NAMES[1:] or (index and not (kind == "cuda" and index.isdigit())):
        raise InputError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps")
    if kind == "cuda":
        return _cuda(text, int(index or 0))
    if kind == "mps" and not torch.backends.mps.is_available():
        raise InputError("device mps: Apple's Metal backend is not available here; use "
                         "--device cpu (or auto)")  # fmt: skip
    return torch.device(text)


def _cuda(text: str, index: int) -> torch.device:
    if not torch.cuda.is_available():
        why = ("this torch build has no CUDA" if torch.version.cuda is None
               else "no CUDA GPU is visible")  # fmt: skip
        raise InputError(f"device {text}: CUDA is not available ({why}); use --device cpu "
                         "(or auto, which falls back to the CPU)")  # fmt: skip
    if index >= torch.cuda.device_count():
        raise InputError(f"device {text}: only {torch.cuda.device_count()} CUDA device(s) here")
    return torch.device(text)


def check_device_name(name: str | None) -> str:
    """``name`` when it names a device of this machine (else :class:`InputError`); for config
    values checked before any work starts."""
    resolve_device(name)
    return name or "auto"


def amp_dtype(device: torch.device, *, training: bool = False) -> torch.dtype | None:
    """The autocast dtype on ``device`` (None: fp32). bf16 on CUDA cards that support it, else
    fp16 for inference and fp32 for training (fp16 training would need loss scaling); fp16 on
    MPS for inference; never on the CPU."""
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None if training else torch.float16
    if device.type == "mps" and not training:
        return torch.float16
    return None


def autocast(device: torch.device, *, training: bool = False) -> contextlib.AbstractContextManager:
    """Mixed precision on a GPU (:func:`amp_dtype`), a no-op on the CPU."""
    dtype = amp_dtype(device, training=training)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def module_device(module: nn.Module | Any) -> torch.device:
    """Where a module's weights live (a ``device`` attribute wins; no weights: the CPU)."""
    known = getattr(module, "device", None)
    if isinstance(known, torch.device):
        return known
    for p in module.parameters() if isinstance(module, nn.Module) else ():
        return p.device
    for b in module.buffers() if isinstance(module, nn.Module) else ():
        return b.device
    return torch.device("cpu")


def to_device(tensors: Iterable[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """Each tensor on ``device`` (the same objects when they are there already)."""
    return [t.to(device) for t in tensors]

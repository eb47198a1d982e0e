"""A light supervised head on frozen DINOv2 patch features, over named classes.

The head reads one or more backbone blocks (concatenated on channels), standardises them with
per-channel statistics of its training features (buffers, saved with the weights) and maps every
patch to one logit per class name: ``linear`` (a 1x1 convolution, the DINOv2 paper's linear
probe), ``mlp`` (1x1 -> GELU -> 1x1) or ``conv`` (3x3 -> GELU -> 1x1). Classes are mutually
exclusive (softmax); a class is known by its normalised name
(:func:`dinoseg.data.classnames.normalize_class_name`), never by a dataset's id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, cast

import torch
from torch import Tensor, nn

from dinoseg.io import InputError

#: The kinds of head :func:`build_head` makes.
HEAD_KINDS = ("linear", "mlp", "conv")


@dataclass(frozen=True)
class HeadSpec:
    """What rebuilds a head (its checkpoint's ``arch_kwargs``).

    Attributes:
        kind: one of :data:`HEAD_KINDS`.
        blocks: 1-based backbone blocks read (concatenated in this order).
        dim: channels of one block (384 for ViT-S).
        classes: class names, the output channels' order.
        hidden: width of the ``mlp`` / ``conv`` hidden layer (unused by ``linear``).
        dropout: dropout before the last layer (training only).
    """

    kind: str
    blocks: tuple[int, ...]
    dim: int
    classes: tuple[str, ...]
    hidden: int = 256
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.kind not in HEAD_KINDS:
            raise InputError(f"head kind {self.kind!r}: use one of {', '.join(HEAD_KINDS)}")
        if not self.blocks or not self.classes:
            raise InputError("a head needs at least one backbone block and one class")
        if len(set(self.classes)) != len(self.classes):
            raise InputError(f"head classes repeat a name: {list(self.classes)}")

    @property
    def in_dim(self) -> int:
        return self.dim * len(self.blocks)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["blocks"], out["classes"] = list(self.blocks), list(self.classes)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HeadSpec:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        known["blocks"] = tuple(int(b) for b in known.get("blocks", ()))
        known["classes"] = tuple(str(c) for c in known.get("classes", ()))
        return cls(**known)


class Standardized(nn.Module):
    """A head whose input channels are standardised by stored statistics: buffers ``mean`` and
    ``std``, (C,) each, saved with its weights (the names checkpoints carry).

    Args:
        channels: C, the input channels.
    """

    mean: Tensor
    std: Tensor

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("std", torch.ones(channels))

    def set_statistics(self, mean: Tensor, std: Tensor) -> None:
        """Per-channel standardisation of the input: (C,) each (std floored at 1e-4)."""
        self.mean.copy_(mean)
        self.std.copy_(std.clamp_min(1e-4))

    def standardize_channels(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W) standardised with the stored statistics."""
        return (x - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1)


class SegHead(Standardized):
    """Per-patch class logits from frozen block features.

    Args:
        spec: the head's shape (:class:`HeadSpec`).
    """

    def __init__(self, spec: HeadSpec):
        super().__init__(spec.in_dim)
        self.spec = spec
        c, m = spec.in_dim, len(spec.classes)
        if spec.kind == "linear":
            self.body: nn.Module = nn.Identity()
            self.out = nn.Conv2d(c, m, 1)
        else:
            k = 3 if spec.kind == "conv" else 1
            self.body = nn.Sequential(
                nn.Conv2d(c, spec.hidden, k, padding=k // 2), nn.GELU(), nn.Dropout(spec.dropout)
            )
            self.out = nn.Conv2d(spec.hidden, m, 1)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.spec.classes

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        """Logits of every class on every patch.

        Args:
            feats: one (B, C, h, w) tensor per block of ``spec.blocks``, in that order.

        Returns:
            (B, M, h, w) float32 logits, M = ``len(spec.classes)``.
        """
        return self.classify(self.standardize(feats))

    def standardize(self, feats: Sequence[Tensor]) -> Tensor:
        """The blocks concatenated and standardised: (B, C_in, h, w) float32 (what
        :meth:`classify` reads; features that do not change can be standardised once)."""
        return self.standardize_channels(torch.cat([f.float() for f in feats], dim=1))

    def classify(self, x: Tensor) -> Tensor:
        """(B, C_in, h, w) standardised input -> (B, M, h, w) logits."""
        return self.out(self.body(x.float()))


def build_head(spec: HeadSpec, *, seed: int = 0) -> SegHead:
    """A freshly initialised head (seeded: the same spec and seed give the same weights)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SegHead(spec)


def grow_from(head: SegHead, old: SegHead) -> int:
    """Copy a previous head's weights into ``head`` (warm start); its classes must be a
    subset of ``head``'s and its kind, blocks and widths the same. A new class's output row
    starts at zero weights with the old classes' mean bias.

    Returns:
        the number of classes carried over.
    """
    a, b = old.spec, head.spec
    if (a.kind, a.blocks, a.dim, a.hidden) != (b.kind, b.blocks, b.dim, b.hidden):
        raise InputError(
            f"cannot continue a {a.kind} head on blocks {list(a.blocks)} as a {b.kind} head on "
            f"blocks {list(b.blocks)}: kind, blocks and widths must match"
        )
    lost = sorted(set(a.classes) - set(b.classes))
    if lost:
        raise InputError(f"the new head drops classes of the old one: {lost}")
    state = {k: v for k, v in old.state_dict().items() if not k.startswith("out.")}
    head.load_state_dict(state, strict=False)
    rows = [b.classes.index(name) for name in a.classes]
    bias, old_bias = cast(Tensor, head.out.bias), cast(Tensor, old.out.bias)
    with torch.no_grad():
        head.out.weight.zero_()
        bias.fill_(float(old_bias.mean()))
        head.out.weight[rows] = old.out.weight
        bias[rows] = old_bias
    return len(rows)

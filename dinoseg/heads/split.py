"""A frozen DINOv2 cut in two: a prefix run once per image (cacheable) and trainable copies of
the last blocks a head reads (fine-tuning at a low learning rate, progressive unfreezing).

``SplitBackbone(backbone, blocks, tune)`` keeps blocks ``1 .. cut`` frozen, ``cut = max(blocks)
- tune``, and holds trainable copies of blocks ``cut + 1 .. max(blocks)``. :meth:`prefix` gives
the head's blocks up to ``cut`` (normalised patch features, as :class:`DinoBackbone` returns
them) and the raw tokens after block ``cut``; :meth:`features` runs the copies on those tokens
(with gradients when training) and returns every head block in the head's order. ``tune = 0``
is the frozen backbone: the prefix is all the head reads.

The tuned blocks are saved beside a head checkpoint as ``tuned_blocks.safetensors`` under the
transformers names of the backbone (``encoder.layer.<i>.…``) and put back into a loaded
backbone by :func:`apply_tuned_blocks` (the backbone's weights then differ from the packaged
ones, so feature caches key them apart).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from dinoseg.backbone import DinoBackbone
from dinoseg.io import InputError

TUNED_FILE = "tuned_blocks.safetensors"


@dataclass
class Prefix:
    """What the frozen prefix gives for a batch.

    Attributes:
        feats: normalised patch features (B, C, h, w) of the head's distinct blocks up to
            ``cut``, in ascending block order (:attr:`SplitBackbone.low_blocks`).
        tokens: (B, T, C) raw tokens after block ``cut`` (prefix tokens first); ``None`` when
            nothing is tuned.
    """

    feats: list[Tensor]
    tokens: Tensor | None


def _run(block: nn.Module, x: Tensor) -> Tensor:
    out = block(x)
    return out[0] if isinstance(out, tuple) else out


class SplitBackbone(nn.Module):
    """Args:
    backbone: the frozen encoder (not modified; its blocks are copied).
    blocks: the head's 1-based blocks, in its order.
    tune: how many of the last blocks up to ``max(blocks)`` get trainable copies.
    """

    def __init__(self, backbone: DinoBackbone, blocks: Sequence[int], tune: int = 0):
        super().__init__()
        last = max(blocks)
        if not 0 <= tune <= last:
            raise InputError(f"can tune 0..{last} blocks below block {last}, not {tune}")
        self.blocks, self.cut, self.tune_count = tuple(blocks), last - tune, tune
        self.frozen = (backbone,)  # a tuple: not a submodule, never in this state dict
        layers = backbone.model.encoder.layer  # type: ignore[union-attr]
        self.tuned = nn.ModuleList(
            copy.deepcopy(layers[i]) for i in range(self.cut, last)  # type: ignore[index, misc]
        )
        self.tuned.requires_grad_(False)
        self.tuned.eval()

    @property
    def backbone(self) -> DinoBackbone:
        return self.frozen[0]

    @property
    def low_blocks(self) -> list[int]:
        """The head's distinct blocks the prefix gives, ascending."""
        return sorted({b for b in self.blocks if b <= self.cut})

    @property
    def tuned_numbers(self) -> list[int]:
        """1-based numbers of the tuned blocks."""
        return list(range(self.cut + 1, self.cut + 1 + self.tune_count))

    def set_trainable(self, n: int) -> None:
        """The last ``n`` tuned blocks train (``requires_grad``); the others stay as they are."""
        for i, block in enumerate(self.tuned):
            block.requires_grad_(i >= len(self.tuned) - n)

    def _patches(self, tokens: Tensor, grid: tuple[int, int]) -> Tensor:
        bb = self.backbone
        x = bb.model.layernorm(tokens) if bb.norm else tokens  # type: ignore[operator]
        x = x[:, bb.num_prefix_tokens :, :]
        return x.transpose(1, 2).reshape(x.shape[0], bb.embed_dim, *grid).contiguous()

    @torch.no_grad()
    def prefix(self, pixels: Tensor) -> Prefix:
        """(B, 3, H, W) normalised images (sides multiples of the patch) -> :class:`Prefix`."""
        bb = self.backbone
        p = bb.patch_size
        if pixels.shape[-2] % p or pixels.shape[-1] % p:
            raise InputError(f"pixel sides {tuple(pixels.shape[-2:])} must be multiples of {p}")
        grid = (pixels.shape[-2] // p, pixels.shape[-1] // p)
        x = bb.model.embeddings(pixels)  # type: ignore[operator]
        feats = []
        for i, block in enumerate(bb.model.encoder.layer[: self.cut]):  # type: ignore[index, union-attr]
            x = _run(block, x)
            if i + 1 in self.blocks:
                feats.append(self._patches(x, grid))
        return Prefix(feats, x if self.tune_count else None)

    def features(self, prefix: Prefix, grid: tuple[int, int]) -> list[Tensor]:
        """Every head block (B, C, h, w), in the head's order: the prefix's features, then the
        tuned copies run on its tokens (with gradients where they train)."""
        found = dict(zip(self.low_blocks, prefix.feats, strict=True))
        x = prefix.tokens
        if self.tune_count and x is None:
            raise ValueError("a prefix without tokens cannot feed tuned blocks")
        for number, block in zip(self.tuned_numbers, self.tuned, strict=True):
            x = _run(block, x.float())  # type: ignore[union-attr]
            if number in self.blocks:
                found[number] = self._patches(x, grid)
        return [found[b].float() for b in self.blocks]

    def tuned_state(self) -> dict[str, Tensor]:
        """The tuned blocks under the backbone's own names (``encoder.layer.<i>.…``)."""
        out = {}
        for number, block in zip(self.tuned_numbers, self.tuned, strict=True):
            for key, value in block.state_dict().items():
                out[f"encoder.layer.{number - 1}.{key}"] = value.detach().cpu().contiguous()
        return out


def save_tuned_blocks(split: SplitBackbone, out_dir: str | Path) -> None:
    """Write ``tuned_blocks.safetensors`` into a checkpoint directory (nothing when frozen)."""
    if not split.tune_count:
        return
    from safetensors.torch import save_file

    save_file(split.tuned_state(), str(Path(out_dir) / TUNED_FILE),
              metadata={"blocks": ",".join(map(str, split.tuned_numbers))})


def apply_tuned_blocks(backbone: DinoBackbone, ckpt_dir: str | Path) -> DinoBackbone:
    """``backbone`` with a checkpoint's tuned blocks (a copy; the given one is left as is), or
    ``backbone`` itself when the checkpoint tuned none."""
    path = Path(ckpt_dir) / TUNED_FILE
    if not path.is_file():
        return backbone
    from safetensors.torch import load_file

    state = load_file(str(path))
    own = backbone.model.state_dict()
    wrong = [k for k, v in state.items() if k not in own or own[k].shape != v.shape]
    if wrong:
        raise InputError(f"{path}: {len(wrong)} tensors do not fit the backbone "
                         f"{backbone.spec!r} (e.g. {wrong[0]}); it was tuned on another one")
    tuned = copy.deepcopy(backbone)
    tuned.model.load_state_dict(state, strict=False)
    tuned.requires_grad_(False)
    return tuned

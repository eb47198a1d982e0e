"""The frozen DINOv2 encoder wrapper: multi-layer patch features for images of any size."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: ImageNet statistics DINOv2 was trained with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DinoBackbone(nn.Module):
    """A frozen, eval-mode DINOv2 giving patch features from chosen blocks.

    Only the blocks up to the deepest requested layer are run, so middle-layer features cost
    less than a full forward pass.

    Args:
        model: a transformers ``Dinov2Model`` (or ``Dinov2WithRegistersModel``).
        layers: 1-based block indices whose outputs are returned, e.g. ``(6, 8, 10)``.
        spec: the backbone spec it was loaded from (recorded in checkpoints).
        norm: apply the model's final LayerNorm to every returned layer (as DINOv2's
            ``get_intermediate_layers(norm=True)``).
    """

    def __init__(self, model: nn.Module, layers: Sequence[int], *, spec: str, norm: bool = True):
        super().__init__()
        cfg: Any = model.config
        depth = int(cfg.num_hidden_layers)
        if not layers:
            raise ValueError("at least one backbone layer must be requested")
        bad = [layer for layer in layers if not 1 <= layer <= depth]
        if bad:
            raise ValueError(f"backbone layers {bad} out of range 1..{depth}")
        self.model = model
        self.layers = tuple(int(layer) for layer in layers)
        self.spec = spec
        self.norm = norm
        self.patch_size = int(cfg.patch_size)
        self.embed_dim = int(cfg.hidden_size)
        self.depth = depth
        self.num_prefix_tokens = 1 + int(getattr(cfg, "num_register_tokens", 0) or 0)
        self.requires_grad_(False)
        self.eval()

    @property
    def device(self) -> torch.device:
        """Where the encoder's weights are (where :meth:`forward` runs)."""
        return next(self.parameters()).device

    def train(self, mode: bool = True) -> DinoBackbone:
        """The encoder is frozen: it stays in eval mode whatever the caller asks."""
        return super().train(False)

    @torch.inference_mode()
    def forward(self, pixel_values: Tensor) -> list[Tensor]:
        """Encode normalised images.

        Args:
            pixel_values: (B, 3, H, W) ImageNet-normalised, on any device (moved to the
                backbone's); H and W are padded up to a multiple of the patch size here (zeros
                = the mean colour).

        Returns:
            one (B, C, H/p, W/p) float32 tensor per requested layer, in ``self.layers`` order,
            on the backbone's device (bf16/fp16 autocast inside on a GPU).
        """
        from dinoseg.device import autocast

        pixel_values = pixel_values.to(self.device)
        b, _, h, w = pixel_values.shape
        p = self.patch_size
        ph, pw = -h % p, -w % p
        if ph or pw:
            pixel_values = F.pad(pixel_values, (0, pw, 0, ph))
        with autocast(pixel_values.device):
            found = self._blocks(pixel_values)
        feats = []
        for layer in self.layers:
            tokens = found[layer].float()  # bf16/fp16 under a GPU's autocast
            if self.norm:
                tokens = self.model.layernorm(tokens)  # type: ignore[operator]
            patches = tokens[:, self.num_prefix_tokens :, :]
            gh, gw = (h + ph) // p, (w + pw) // p
            feats.append(patches.transpose(1, 2).reshape(b, self.embed_dim, gh, gw).contiguous())
        return feats

    def _blocks(self, pixel_values: Tensor) -> dict[int, Tensor]:
        """Token outputs (B, T, C) of the requested blocks (1-based); (B, 3, H, W) padded in."""
        x = self.model.embeddings(pixel_values)  # type: ignore[operator]
        wanted = set(self.layers)
        found: dict[int, Tensor] = {}
        for i, block in enumerate(self.model.encoder.layer[: max(self.layers)]):  # type: ignore[index, union-attr]
            out = block(x)
            x = out[0] if isinstance(out, tuple) else out
            if i + 1 in wanted:
                found[i + 1] = x
        return found

    def extra_repr(self) -> str:
        return f"spec={self.spec!r}, layers={self.layers}, dim={self.embed_dim}"


def weights_digest(module: nn.Module) -> str:
    """SHA-256 of a module's state dict (names, dtypes, shapes and bytes): the identity of a
    backbone's weights (feature caches, support memories)."""
    import hashlib

    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        flat = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(flat.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()

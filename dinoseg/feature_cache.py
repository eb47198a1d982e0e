"""A cache of frozen-backbone features: pay the encoder once per image.

Key: SHA-256 over :data:`KEY_VERSION`, the backbone's identity and one image's *encoder input*
(its ``(3, Hp, Wp)`` float32 tensor after resize, pad and normalisation, shape and bytes). The
encoder input carries the image content and its geometry (working size, padding) at once, and
any change to preprocessing changes the key, so a stale entry can never be served. The
backbone's identity is its spec, layers, final-norm flag, patch size, and a digest of its
weights (hashed once per backbone object), so two random test backbones with the same spec
never share entries.

Two levels: an in-memory LRU bounded by a byte budget, and optionally a directory of
safetensors files (``DIR/<key[:2]>/<key>.safetensors``, one tensor per layer) that makes a
re-run cheap. The images of a call that miss are encoded together, as one batch (a request's
queries, a K-shot support): on CPU that is 1.6x faster than one at a time for 4 images and the
frozen encoder's batched output equals its per-image output (checked, max abs diff 0.0), so a
feature stays a function of its image alone and results do not depend on the cache's state.

Evaluation uses it through :class:`CachedPredictor`; training can call
:meth:`FeatureCache.encode` with its backbone directly.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import weakref
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from dinoseg.backbone import DinoBackbone
from dinoseg.backbone.encoder import weights_digest
from dinoseg.predictor import FewShotPredictor

log = logging.getLogger(__name__)

KEY_VERSION = "dinoseg-features-v1"
#: Default in-memory budget: 2 GiB of feature tensors.
DEFAULT_MAX_BYTES = 2 * 1024**3


@dataclass
class CacheStats:
    """Counters of a :class:`FeatureCache` (images, not batches)."""

    memory_hits: int = 0
    disk_hits: int = 0
    misses: int = 0
    encoder_seconds: float = 0.0  # time spent in the backbone itself (misses only)
    evictions: int = 0

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = asdict(self)
        out["encoder_seconds_per_image"] = (
            self.encoder_seconds / self.misses if self.misses else None
        )
        return out


def _nbytes(feats: list[Tensor]) -> int:
    return sum(f.numel() * f.element_size() for f in feats)


class FeatureCache:
    """Per-image backbone features, in memory (LRU) and optionally on disk.

    Args:
        max_bytes: in-memory budget; least recently used entries are dropped beyond it
            (0 keeps nothing in memory).
        disk_dir: directory of safetensors files shared between runs; ``None`` = memory only.
    """

    def __init__(self, *, max_bytes: int = DEFAULT_MAX_BYTES, disk_dir: str | Path | None = None):
        if max_bytes < 0:
            raise ValueError(f"max_bytes={max_bytes}: give 0 or more bytes")
        self.max_bytes = int(max_bytes)
        self.disk_dir = Path(disk_dir) if disk_dir is not None else None
        self.stats = CacheStats()
        self._memory: OrderedDict[str, list[Tensor]] = OrderedDict()
        self._bytes = 0
        self._identities: weakref.WeakKeyDictionary[torch.nn.Module, str] = (
            weakref.WeakKeyDictionary()
        )

    # no __len__ on purpose: an empty cache must stay truthy (``cache or FeatureCache()``)
    @property
    def entries(self) -> int:
        """Images held in memory."""
        return len(self._memory)

    @property
    def memory_bytes(self) -> int:
        """Bytes of the feature tensors held in memory."""
        return self._bytes

    def backbone_identity(self, backbone: DinoBackbone) -> str:
        """What the key records of the encoder (computed once per backbone object)."""
        known = self._identities.get(backbone)
        if known is None:
            layers = ",".join(str(layer) for layer in backbone.layers)
            known = (
                f"{backbone.spec}|layers={layers}|norm={backbone.norm}|"
                f"patch={backbone.patch_size}|weights={weights_digest(backbone)}"
            )
            self._identities[backbone] = known
        return known

    @staticmethod
    def key(pixels: Tensor, identity: str) -> str:
        """Key of one encoder input ``pixels`` (3, Hp, Wp) for the backbone ``identity``."""
        x = pixels.detach().cpu().contiguous()
        h = hashlib.sha256(f"{KEY_VERSION}|{identity}|{tuple(x.shape)}|{x.dtype}|".encode())
        h.update(x.reshape(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()

    def _disk_path(self, key: str) -> Path | None:
        return None if self.disk_dir is None else self.disk_dir / key[:2] / f"{key}.safetensors"

    def _remember(self, key: str, feats: list[Tensor]) -> None:
        size = _nbytes(feats)
        if size > self.max_bytes:
            return
        old = self._memory.pop(key, None)
        if old is not None:
            self._bytes -= _nbytes(old)
        self._memory[key] = feats
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, dropped = self._memory.popitem(last=False)
            self._bytes -= _nbytes(dropped)
            self.stats.evictions += 1

    def _read_disk(self, key: str) -> list[Tensor] | None:
        path = self._disk_path(key)
        if path is None or not path.is_file():
            return None
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            data = load_file(str(path))
            return [data[str(i)] for i in range(len(data))]
        except (OSError, KeyError, SafetensorError) as e:
            log.warning("feature cache entry %s unreadable (%s); re-encoding", path, e)
            return None

    def _write_disk(self, key: str, feats: list[Tensor]) -> None:
        path = self._disk_path(key)
        if path is None:
            return
        from safetensors.torch import save_file

        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_file({str(i): f.contiguous() for i, f in enumerate(feats)}, str(tmp))
            tmp.replace(path)
        except OSError as e:
            log.warning("cannot write feature cache entry %s (%s)", path, e)
            tmp.unlink(missing_ok=True)

    def get(self, key: str) -> list[Tensor] | None:
        """Features stored under ``key`` (memory first, then disk), or ``None``."""
        feats = self._memory.get(key)
        if feats is not None:
            self._memory.move_to_end(key)
            self.stats.memory_hits += 1
            return feats
        feats = self._read_disk(key)
        if feats is not None:
            self.stats.disk_hits += 1
            self._remember(key, feats)
        return feats

    def put(self, key: str, feats: list[Tensor]) -> None:
        """Store one image's features: L tensors (1, C, h, w)."""
        stored = [f.detach().cpu().clone() for f in feats]
        self._remember(key, stored)
        self._write_disk(key, stored)

    def encode(self, backbone: DinoBackbone, pixels: Tensor) -> list[Tensor]:
        """``backbone(pixels)`` through the cache.

        Args:
            pixels: (B, 3, Hp, Wp) normalised encoder inputs.

        Returns:
            one (B, C, Hp/p, Wp/p) tensor per backbone layer, as ``backbone(pixels)``.
        """
        identity = self.backbone_identity(backbone)
        keys = [self.key(x, identity) for x in pixels]
        per_image = [self.get(key) for key in keys]
        missed = [i for i, feats in enumerate(per_image) if feats is None]
        if missed:
            start = time.perf_counter()
            batch = backbone(pixels[missed])
            self.stats.encoder_seconds += time.perf_counter() - start
            self.stats.misses += len(missed)
            for j, i in enumerate(missed):
                per_image[i] = [f[j : j + 1] for f in batch]
                self.put(keys[i], per_image[i])  # type: ignore[arg-type]
        device = pixels.device
        return [torch.cat(layer).to(device) for layer in zip(*per_image, strict=True)]


class CachedPredictor(FewShotPredictor):
    """A copy of ``base`` (same model, backbone and settings) whose encoder goes through
    ``cache``; ``encode_seconds`` adds up the time spent encoding (lookups included)."""

    def __init__(self, base: FewShotPredictor, cache: FeatureCache):
        super().__init__(
            base.model, base.backbone, image_size=base.image_size, threshold=base.threshold,
            batch_size=base.batch_size, model_id=base.model_id, device=base.device,
        )  # fmt: skip
        self.memory, self.memory_mode = base.memory, base.memory_mode
        self._memory_layer = base._memory_layer
        self.cache = cache
        self.encode_seconds = 0.0

    def encode(self, pixels: Tensor) -> list[Tensor]:
        """(B, 3, Hp, Wp) normalised -> one (B, C, Hp/14, Wp/14) tensor per layer, cached."""
        start = time.perf_counter()
        try:
            return self.cache.encode(self.backbone, pixels)
        finally:
            self.encode_seconds += time.perf_counter() - start

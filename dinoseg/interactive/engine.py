"""Click-to-mask for many images: encoders loaded once, each image's features computed once.

:class:`InteractiveEngine` keeps the last ``sessions`` images in memory (features, SAM
embedding, the click sequences seen), and writes DINOv2 features and SAM embeddings to
``cache_dir`` so that a restarted process answers the next click of an image without encoding
it again. A session is keyed by the caller (e.g. the image file's sha256).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import Tensor

from dinoseg.backbone import DinoBackbone
from dinoseg.feature_cache import FeatureCache
from dinoseg.interactive.box import box_pixels, dino_box_mask, sam_box_mask, sam_embedding
from dinoseg.interactive.features import PatchFeatures, encode_patches
from dinoseg.interactive.prompts import Box, Click, check_prompts
from dinoseg.interactive.segmenter import ClickSegmenter, InteractiveConfig
from dinoseg.teachers import SamTeacher

log = logging.getLogger(__name__)


@dataclass
class Session:
    """One image: (H, W, 3) uint8 pixels, its patch features, segmenters per starting box."""

    key: str
    image: np.ndarray
    features: PatchFeatures
    embedding: Tensor | None = None
    segmenters: dict[Box | None, ClickSegmenter] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class InteractiveEngine:
    """Interactive segmentation over a shared backbone (and optional SAM-family model).

    Args:
        backbone: frozen DINOv2 (its layers should be ``config.layers``).
        config: click-to-mask settings.
        sam: a SAM-family model whose box mask is added to DINOv2's for a rectangle
            (LiteMedSAM); ``None`` = DINOv2 alone.
        cache_dir: where features and embeddings are kept on disk (``None``: memory only).
        sessions: images kept in memory.
    """

    def __init__(self, backbone: DinoBackbone, config: InteractiveConfig | None = None, *,
                 sam: SamTeacher | None = None, cache_dir: str | Path | None = None,
                 sessions: int = 8):  # fmt: skip
        self.backbone = backbone
        self.config = config or InteractiveConfig()
        self.sam = sam
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.features = FeatureCache(
            max_bytes=256 * 1024**2,
            disk_dir=None if self.cache_dir is None else self.cache_dir / "dinov2",
        )
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._max = max(1, sessions)
        self._lock = threading.Lock()

    def session(self, key: str, load: Callable[[], np.ndarray]) -> Session:
        """The session of image ``key``; ``load()`` gives its (H, W, 3) uint8 pixels when it is
        not in memory (its features come from the disk cache when they are there)."""
        with self._lock:
            known = self._sessions.get(key)
            if known is not None:
                self._sessions.move_to_end(key)
                return known
        image = load()
        feats = encode_patches(self.backbone, image, self.config.image_size, self.features)
        made = Session(key, image, feats)
        with self._lock:
            self._sessions[key] = made
            while len(self._sessions) > self._max:
                self._sessions.popitem(last=False)
        return made

    def warm(self, session: Session) -> None:
        """Compute what a rectangle needs too (the SAM embedding), ahead of the first one."""
        if self.sam is not None:
            with session.lock:
                self._embedding(session)

    def segment(self, session: Session, clicks: Sequence[Click] = (),
                box: Box | None = None) -> np.ndarray:  # fmt: skip
        """(H, W) bool mask for the clicks (in the order placed) and an optional rectangle.

        Raises:
            InputError: a click outside the image, a rectangle of zero area, no prompt.
        """
        shape = session.image.shape[:2]
        clicks, box = check_prompts(clicks, box, (int(shape[0]), int(shape[1])))
        with session.lock:
            segmenter = session.segmenters.get(box)
            if segmenter is None:
                base = None if box is None else self._box_mask(session, box)
                segmenter = ClickSegmenter(session.image, session.features, self.config, base)
                session.segmenters[box] = segmenter
                while len(session.segmenters) > self.config.memory:
                    session.segmenters.pop(next(iter(session.segmenters)))
            return segmenter(clicks)

    def _box_mask(self, session: Session, box: Box) -> np.ndarray:
        shape = (int(session.image.shape[0]), int(session.image.shape[1]))
        mask = dino_box_mask(session.image, session.features, box)
        if self.sam is not None:  # the union beats either alone (dinoseg.interactive.box)
            mask |= sam_box_mask(self.sam, self._embedding(session), box, shape)
        if not mask.any():  # nothing found: the annotator asked for the box's contents
            mask = box_pixels(box, shape)
        return mask

    def _embedding(self, session: Session) -> Tensor:
        if self.sam is None:
            raise RuntimeError("no SAM-family model was given to this engine")
        if session.embedding is None:
            session.embedding = self._load_embedding(session.key)
            if session.embedding is None:
                session.embedding = sam_embedding(self.sam, session.image)
                self._save_embedding(session.key, session.embedding)
        return session.embedding

    def _embedding_path(self, key: str) -> Path | None:
        if self.cache_dir is None or self.sam is None:
            return None
        import hashlib

        name = hashlib.sha256(f"{self.sam.name}|{self.sam.weights_id}|{key}".encode()).hexdigest()
        return self.cache_dir / "sam" / name[:2] / f"{name}.safetensors"

    def _load_embedding(self, key: str) -> Tensor | None:
        path = self._embedding_path(key)
        if path is None or not path.is_file():
            return None
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))["embedding"]
        except (OSError, KeyError, SafetensorError) as e:
            log.warning("SAM embedding %s unreadable (%s); computing it again", path, e)
            return None

    def _save_embedding(self, key: str, embedding: Tensor) -> None:
        path = self._embedding_path(key)
        if path is None:
            return
        import os

        from safetensors.torch import save_file

        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_file({"embedding": embedding.contiguous()}, str(tmp))
            tmp.replace(path)
        except OSError as e:
            log.warning("cannot write SAM embedding %s (%s)", path, e)
            tmp.unlink(missing_ok=True)

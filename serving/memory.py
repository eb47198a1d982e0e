"""The support memory a serving process uses: every labelled image helps the next request.

``serving.memory`` (params.yaml) names it: ``auto`` = ``$DINOSEG_HOME/memory``, built from the
base dataset's train split (``review.classes_from``) and the annotators' labels
(``review.labels_dir``) the first time it is missing; a folder = a memory made with
``dinoseg memory build``; ``""`` = no memory. The build runs in a background thread, so no
request waits for it: until it is done requests are served without the memory, with a notice.
A synced label is added at once (:meth:`ServedMemory.add_label`); every request first re-reads
the index when another process changed it (a file stamp, cheap).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from dinoseg import runtime
from dinoseg.memory import MemoryMode, SupportMemory
from dinoseg.served import ServedPredictor
from serving.config import ReviewConfig, ServingConfig

log = logging.getLogger(__name__)
AUTO = "auto"


class ServedMemory:
    """Opens (or builds) the configured memory once per process and attaches it.

    Args:
        serving: ``memory`` (where) and ``memory_images`` (retrieved per query).
        review: where the base dataset and the labels are (the build's sources).
    """

    def __init__(self, serving: ServingConfig, review: ReviewConfig):
        self.spec = serving.memory.strip()
        self.mode = MemoryMode(images=serving.memory_images or None)
        self.sources = [Path(review.classes_from), Path(review.labels_dir)]
        self._memory: SupportMemory | None = None
        self._lock = threading.Lock()
        self._building: threading.Thread | None = None
        self._dirty = False
        self.error: str | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.spec)

    @property
    def root(self) -> Path:
        return runtime.home() / "memory" if self.spec == AUTO else Path(self.spec)

    def _open(self, backbone: Any) -> SupportMemory | None:
        """The memory if it exists (opened once, refreshed later), else None (a build of an
        ``auto`` memory is started)."""
        if self._memory is not None:
            self._memory.refresh()
            return self._memory
        if (self.root / "index.safetensors").is_file():
            self._memory = SupportMemory.open(self.root)
            return self._memory
        if self.spec == AUTO and backbone is not None:
            self._start_build(backbone)
        elif self.spec != AUTO:
            self.error = f"{self.root}: no support memory here (dinoseg memory build)"
        return None

    def attach(self, predictor: ServedPredictor) -> str | None:
        """Give ``predictor`` the memory; returns a notice when it cannot be used yet."""
        if not self.enabled:
            return None
        with self._lock:
            try:
                memory = self._open(predictor.backbone)
            except Exception as e:  # a broken memory must not break serving
                log.exception("support memory unavailable")
                self.error = f"{type(e).__name__}: {e}"
                memory = None
        if memory is None:
            predictor.attach_memory(None)
            why = self.error or "being built from the labelled images"
            return f"support memory not used ({why})"
        if predictor.memory is not memory:
            predictor.attach_memory(memory, self.mode)
        return None

    def ready(self, predictor: ServedPredictor, timeout: float = 3600.0) -> bool:
        """Attach the memory to ``predictor``, building it now (waiting) when it is missing;
        returns whether it is in use (for callers that must not start without it)."""
        self.attach(predictor)
        building = self._building
        if building is not None:
            building.join(timeout)
        return self.attach(predictor) is None

    def _start_build(self, backbone: Any) -> None:
        if self._building is not None and self._building.is_alive():
            return
        self._building = threading.Thread(target=self._build, args=(backbone,),
                                          name="memory-build", daemon=True)  # fmt: skip
        self._building.start()

    def _build(self, backbone: Any) -> None:
        from dinoseg.memory import Source, build_memory
        from dinoseg.memory.encoder import MemoryEncoder

        try:
            layers = tuple(backbone.layers)
            encoder = MemoryEncoder(backbone, layer=10 if 10 in layers else layers[-1])
            while True:
                self._dirty = False
                sources = [Source(p) for p in self.sources if (p / "train").is_dir()]
                memory, stats = build_memory(self.root, sources, encoder)
                log.info("support memory %s built: %s", self.root, stats)
                if not self._dirty:
                    break
            with self._lock:
                self._memory = memory
                self.error = None
        except Exception as e:
            log.exception("building the support memory failed")
            self.error = f"build failed: {type(e).__name__}: {e}"

    def add_label(self, image: np.ndarray, label_map: np.ndarray, class_names: Mapping[int, str],
                  source: str, complete: Collection[str] = ()) -> bool:  # fmt: skip
        """Add one synced label now (the next request of its class retrieves it); while the
        memory is being built the build is told to run once more. ``complete``: the classes
        labelled wherever they are in the image (:meth:`SupportMemory.add`). Returns whether
        it was added here."""
        if not self.enabled:
            return False
        with self._lock:
            if self._memory is None and (self.root / "index.safetensors").is_file():
                self._memory = SupportMemory.open(self.root)
            memory = self._memory
        if memory is None:
            self._dirty = True
            return False
        if memory.encoder is None:
            memory.encoder = _encoder_for(memory)
        return memory.add(image, label_map, class_names, source, complete=complete)

    def status(self) -> dict[str, Any]:
        """What ``dinoseg.status`` shows of the memory."""
        if not self.enabled:
            return {"memory": None}
        memory = self._memory
        building = self._building is not None and self._building.is_alive()
        return {"memory": {"root": str(self.root), "images": len(memory) if memory else 0,
                           "version": memory.version if memory else None,
                           "building": building, "error": self.error}}  # fmt: skip


def _encoder_for(memory: SupportMemory) -> Any:
    """An encoder with the memory's settings (its backbone loaded by spec)."""
    from dinoseg.backbone import load_backbone
    from dinoseg.memory.encoder import MemoryEncoder

    s = memory.settings
    backbone = load_backbone(s.backbone, layers=(s.layer,))
    return MemoryEncoder(backbone, image_size=s.image_size, layer=s.layer)

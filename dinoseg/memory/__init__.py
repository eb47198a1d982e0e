"""Support memory: every labelled image becomes an example of its classes.

- :mod:`~dinoseg.memory.store`: :class:`SupportMemory` on disk (global descriptors in one
  matrix, labelled patch features per image, a content version), ``add`` / ``retrieve``.
- :mod:`~dinoseg.memory.build`: :func:`build_memory` from dataset folders (base split + labels).
- :mod:`~dinoseg.memory.encoder`: the memory's encoder (one block, one working size).
- :mod:`~dinoseg.memory.labels`: content hashes and per-patch class fractions.
- :mod:`~dinoseg.memory.vote`: :class:`MemoryMode`, the memory as a mode of any predictor.

A predictor uses it through ``FewShotPredictor.attach_memory(memory, mode)`` and
``set_support(images, masks, class_name=...)`` (docs/memory.md).
"""

from dinoseg.memory.build import Source, build_memory, parse_source
from dinoseg.memory.encoder import (
    EncoderSettings,
    MemoryEncoder,
    global_descriptor,
    load_encoder,
)
from dinoseg.memory.labels import MemoryEntry, image_hash, label_hash
from dinoseg.memory.store import SupportMemory
from dinoseg.memory.vote import MemoryMode, memory_vote

__all__ = [
    "EncoderSettings",
    "MemoryEncoder",
    "MemoryEntry",
    "MemoryMode",
    "Source",
    "SupportMemory",
    "build_memory",
    "global_descriptor",
    "image_hash",
    "label_hash",
    "load_encoder",
    "memory_vote",
    "parse_source",
]

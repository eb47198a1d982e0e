"""Review items: a result that needs a person, built once, in memory, for the annotation tool.

The segment job builds an item from the mask it has just predicted; the "send to annotators"
button builds the same item from the results store (:func:`item_from_record`). The annotation
adapter (``workers.labelstudio``) turns an item into its own task format; the item knows nothing
of Label Studio.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dinoseg.data.classnames import PLACEHOLDER
from serving import store


def review_key(query_sha256: str, model_version: str, class_name: str = PLACEHOLDER) -> str:
    """Idempotency key of a review item: query image hash + model version (+ the class asked
    for, when one was named): never two tasks for the same image and class from one model."""
    if class_name == PLACEHOLDER:
        return f"{query_sha256[:32]}:{model_version}"
    return f"{query_sha256[:32]}:{class_name}:{model_version}"


@dataclass
class ReviewItem:
    """One result to review.

    Attributes:
        result_id: the record in the results store.
        query: path of the query image (in the uploads folder).
        query_sha256: its content hash.
        mask: (H, W) bool predicted mask.
        confidence: the model's confidence in [0, 1] (annotators get the lowest first).
        model_version: the served model's version (registry version or name).
        class_name: the class the request asked for (``object`` when it named none).
        supports: the stakeholder's (image path, mask path) examples.
    """

    result_id: str
    query: str
    query_sha256: str
    mask: np.ndarray
    confidence: float
    model_version: str
    class_name: str = PLACEHOLDER
    supports: list[tuple[str, str]] = field(default_factory=list)

    @property
    def key(self) -> str:
        return review_key(self.query_sha256, self.model_version, self.class_name)

    @property
    def context(self) -> str:
        """One line for the reviewer: the model's confidence and version."""
        return f"confidence {self.confidence:.2f} · model {self.model_version}"

    def support_sheet(self, height: int = 360) -> np.ndarray:
        """The supports side by side with their masks outlined: (height, W, 3) uint8."""
        from dinoseg.io import load_image, load_mask
        from dinoseg.visualize import support_sheet

        images = [load_image(i) for i, _ in self.supports]
        masks = [load_mask(m, image_size=img.shape[:2])
                 for (_, m), img in zip(self.supports, images, strict=True)]  # fmt: skip
        return support_sheet(images, masks, height=height)


def item_from_meta(meta: dict[str, Any], mask: np.ndarray) -> ReviewItem:
    """The review item of a record's ``meta.json`` and its (H, W) bool mask."""
    return ReviewItem(
        result_id=str(meta["id"]), query=str(meta["query"]),
        query_sha256=str(meta["query_sha256"]), mask=mask,
        confidence=float(meta["confidence"]), model_version=str(meta["model_version"]),
        class_name=str(meta.get("class_name") or PLACEHOLDER),
        supports=[(str(s["image"]), str(s["mask"])) for s in meta.get("support") or []],
    )  # fmt: skip


def item_from_record(rid: str, root: Path | None = None) -> ReviewItem:
    """The review item of stored result ``rid`` (meta and mask read once)."""
    return item_from_meta(store.read_meta(rid, root), store.read_mask(rid, root))

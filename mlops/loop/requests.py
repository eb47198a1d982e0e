"""What both drivers do the same way: the stakeholders' requests and their scoring.

:class:`Uploads` stores the scenario's images as the web app does (content-addressed in the
uploads folder) and tells the oracle which pool image a content hash is; :func:`candidates`
turns the pool's results into what a strategy picks from; :func:`test_ious` scores the served
system on the test images of each class (IoU summed over images, in percent).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mlops.loop.oracle import Oracle
from mlops.loop.scenario import TEST_PARTS, Request, Scenario
from mlops.loop.strategies import Candidate

#: a driver's way to segment: (request, "pool" | "test", stems) -> result records (as replied)
Segment = Callable[[Request, str, list[str]], list[dict[str, Any]]]
CHUNK = 32  # queries per segment request


class Uploads:
    """The scenario's images in the uploads folder, by content."""

    def __init__(self, scen: Scenario, oracle: Oracle):
        self.scen, self.oracle = scen, oracle
        self._paths: dict[tuple[str, str], str] = {}

    def image(self, split: str, stem: str) -> str:
        from serving.uploads import store_file

        key = (split, stem)
        if key not in self._paths:
            ds = self.scen.pool if split == "pool" else self.scen.test
            path = store_file(ds.image_path(stem))
            self._paths[key] = str(path)
            if split == "pool":
                self.oracle.know(path.name.split(".")[0], stem)
        return self._paths[key]

    def request(self, req: Request, split: str, stems: list[str]) -> dict[str, Any]:
        """The ``segment`` request of ``req``'s support and the given images."""
        from serving.uploads import png_bytes, store_bytes

        mask = self.scen.truth(self.scen.pool, req.support, req.class_name)
        support = {"image": self.image("pool", req.support),
                   "mask": str(store_bytes(png_bytes(mask), ".png"))}
        return {"support": [support], "queries": [self.image(split, s) for s in stems],
                "class_name": req.class_name, "model": None, "threshold": None}  # fmt: skip


class Descriptors:
    """Global DINOv2 descriptors of query images (the diverse strategy), computed once."""

    def __init__(self, backbone: str = "packaged:dinov2-s"):
        self.spec = backbone
        self._encoder: Any = None
        self._cache: dict[str, np.ndarray] = {}

    def __call__(self, path: str) -> np.ndarray:
        if path not in self._cache:
            from dinoseg.backbone import load_backbone
            from dinoseg.io import load_image
            from dinoseg.memory.encoder import MemoryEncoder

            if self._encoder is None:
                self._encoder = MemoryEncoder(load_backbone(self.spec, layers=(10,)))
            self._cache[path] = self._encoder(load_image(path))[1].numpy()
        return self._cache[path]


def candidates(scen: Scenario, segment: Segment) -> list[Candidate]:
    """Every class's request on the pool; one candidate per (image, class)."""
    out = []
    for req in scen.requests:
        for r in segment(req, "pool", req.queries):
            sha = Path(r["query"]).name.split(".")[0]
            out.append(Candidate(r["id"], sha, req.class_name, float(r["confidence"]),
                                 r["query"]))  # fmt: skip
    return out


def test_ious(scen: Scenario, segment: Segment) -> dict[str, dict[str, float]]:
    """Per part of the test split (``all`` and :data:`~mlops.loop.scenario.TEST_PARTS`) and
    class: IoU (percent) of the served masks, summed over the part's images that show it."""
    from dinoseg.io import load_mask

    parts = ("all", *TEST_PARTS)
    ious: dict[str, dict[str, float]] = {p: {} for p in parts}
    for req in scen.requests:
        stems = scen.test_stems(req.class_name)
        counts = {p: [0, 0] for p in parts}
        for stem, r in zip(stems, segment(req, "test", stems), strict=True):
            truth = scen.truth(scen.test, stem, req.class_name)
            pred = load_mask(r["mask"], require_foreground=False)  # it may find nothing
            inter, union = int((pred & truth).sum()), int((pred | truth).sum())
            for p in ("all", scen.test_part(stem)):
                counts[p][0] += inter
                counts[p][1] += union
        for p, (inter, union) in counts.items():
            ious[p][req.class_name] = 100.0 * inter / union if union else float("nan")
    return ious


def champion() -> str | None:
    """The registry's champion version of the segmenter (None: none yet, or no registry)."""
    from mlops import registry

    try:
        mv = registry.find_version(registry.registry_client(), registry.MODEL_NAME,
                                   registry.CHAMPION)  # fmt: skip
    except Exception:
        return None
    return None if mv is None else str(mv.version)

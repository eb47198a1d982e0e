"""The simulated annotator: it answers a review task with the ground truth of the task's class.

The task names its query by content hash (``dinoseg_query_sha256``); the oracle knows which
pool image that is and draws exactly that image's pixels of the class the task asks for (one
brush region labelled with the class), as an annotator fixing the pre-annotation would end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dinoseg.io import InputError
from mlops.loop.scenario import Scenario


@dataclass
class Oracle:
    """Ground truth by query hash: ``images[sha256] = pool stem``."""

    scen: Scenario
    images: dict[str, str] = field(default_factory=dict)

    def know(self, sha256: str, stem: str) -> None:
        self.images[sha256] = stem

    def result(self, task_data: dict[str, Any]) -> list[dict[str, Any]]:
        """The annotation's ``result`` for a task (its class's ground-truth brush region)."""
        from workers.labelstudio.convert import mask_to_result

        sha = str(task_data.get("dinoseg_query_sha256") or "")
        name = str(task_data.get("class_name") or "")
        if sha not in self.images:
            raise InputError(f"the oracle does not know the image {sha[:12]}")
        if name not in self.scen.classes:
            raise InputError(f"the oracle does not label class {name!r}")
        mask = self.scen.truth(self.scen.pool, self.images[sha], name)
        return [mask_to_result(mask, name)]

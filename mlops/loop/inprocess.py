"""The loop without services: the functions the stack runs, called directly.

Segmentation is :class:`serving.segment.SegmentJob` (the served model following the registry's
champion, the support memory under the stack's home); a review task is the item the worker
would send to Label Studio, answered by the oracle and written by the sync's own
:func:`workers.labelstudio.sync.write_label` (then added to the memory at once); retraining
runs the simulation pipeline's stage functions in order (``prepare`` ... ``register``), as
``dvc repro`` runs them.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlops.loop.oracle import Oracle
from mlops.loop.project import LOOP_STAGES
from mlops.loop.requests import CHUNK, Descriptors, Uploads, candidates, champion, test_ious
from mlops.loop.rounds import Learned
from mlops.loop.scenario import Scenario
from mlops.loop.strategies import Candidate

log = logging.getLogger("mlops.loop")


@contextlib.contextmanager
def inside(project: Path) -> Iterator[None]:
    """Run in the project folder (params.yaml, dvc paths are relative to it)."""
    before = Path.cwd()
    os.chdir(project)
    try:
        yield
    finally:
        os.chdir(before)


class InProcess:
    """A :class:`mlops.loop.rounds.Driver` over the functions the stack runs."""

    def __init__(self, scen: Scenario, project: Path, *, retrain: bool = True):
        from serving.segment import SegmentJob

        self.scen, self.project, self.retrains = scen, project, retrain
        self.oracle = Oracle(scen)
        self.uploads = Uploads(scen, self.oracle)
        with inside(project):
            self.job = SegmentJob.from_params(Path("params.yaml"))
            predictor = self.job.holder.get().predictor
            if self.job.memory is not None and not self.job.memory.ready(predictor):
                raise RuntimeError(f"support memory unavailable: {self.job.memory.error}")
        self.describe = Descriptors()
        self._annotations = 0

    def _segment(self, req: Any, split: str, stems: list[str]) -> list[dict[str, Any]]:
        results = []
        for start in range(0, len(stems), CHUNK):
            request = self.uploads.request(req, split, stems[start : start + CHUNK])
            with inside(self.project):
                results += self.job.run(request).reply["results"]
        return results

    def segment_pool(self, scen: Scenario) -> list[Candidate]:
        return candidates(scen, self._segment)

    def annotate(self, scen: Scenario, picked: list[Candidate]) -> Learned:
        from serving.review import item_from_record
        from workers.labelstudio.labelfiles import write_label
        from workers.labelstudio.sync import SyncReport, _to_memory

        labels = self.project / "data" / "labels"
        base = self.project / "base"
        errors: list[str] = []
        with inside(self.project):
            for cand in picked:
                self._annotations += 1
                item = item_from_record(cand.result_id)
                data = {"dinoseg_query": item.query, "dinoseg_query_sha256": item.query_sha256,
                        "class_name": item.class_name, "dinoseg_result": item.result_id}
                task = {"id": self._annotations, "data": data,
                        "predictions": [{"model_version": item.model_version}]}  # fmt: skip
                ann = {"id": self._annotations, "result": self.oracle.result(data)}
                stem = write_label(labels, task, ann, set(scen.classes) | _known(base),
                                   "oracle", base)  # fmt: skip
                report = SyncReport()
                if self.job.memory is not None:
                    _to_memory(self.job.memory.add_label, labels, stem, report)
                errors += report.memory_errors
            champion = self.retrain(errors) if self.retrains else self.champion()
        return Learned(len(picked), champion, errors)

    def retrain(self, errors: list[str]) -> str | None:
        """The simulation pipeline's stages, in order, in the project folder; a failing stage
        stops the round's retraining (the champion stays the last good model)."""
        with inside(self.project):
            for stage in LOOP_STAGES:
                try:
                    importlib.import_module(f"mlops.{stage}").run()
                except Exception as e:
                    log.exception("stage %s failed", stage)
                    errors.append(f"{stage}: {type(e).__name__}: {e}")
                    break
        return self.champion()

    def champion(self) -> str | None:
        return champion()

    def test(self, scen: Scenario) -> tuple[dict[str, dict[str, float]], str | None]:
        return test_ious(scen, self._segment), self.champion()


def _known(base: Path) -> set[str]:
    from dinoseg.data.classnames import known_classes

    return set(known_classes([base]))

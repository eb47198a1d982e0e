"""``dinoseg loop simulate`` on the real stack it starts (workers, Label Studio, the oracle
answering through Label Studio's API, sync, ``dvc repro`` in the worker), on tiny data and a
tiny backbone: one round, and round 0 equal to the in-process mode's."""

from __future__ import annotations

import json
import os

import pytest

from mlops.loop.simulate import run_all
from tests.conftest import tiny_dinov2, write_synthetic_dataset
from tests.mlops.test_loop_inprocess import tiny_settings


def test_the_loop_on_the_real_stack_labels_through_label_studio(tmp_path, monkeypatch) -> None:
    from infra.labelstudio import VENV
    from mlops.loop.inprocess import InProcess
    from mlops.loop.realstack import RealStack

    if not (VENV / "bin" / "label-studio").is_file():
        pytest.fail(f"{VENV} is missing: run infra/labelstudio/install.sh (make test does)")
    write_synthetic_dataset(tmp_path / "data", n_train=10, n_val=4)
    tiny_dinov2(layers=2).save_pretrained(tmp_path / "bb")
    monkeypatch.setenv("DINOSEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    for key in ("LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY"):  # the stack sets its own
        monkeypatch.setenv(key, os.environ.get(key, ""))
    real = run_all(tiny_settings(tmp_path, "real", ["random"], 1), RealStack)
    local = run_all(tiny_settings(tmp_path, "local", ["random"], 1), InProcess)
    real, local = real["strategies"]["random"], local["strategies"]["random"]
    assert [r["labels"] for r in real] == [0, 2] and not any(r["errors"] for r in real), real
    assert real[0]["class_iou"] == pytest.approx(local[0]["class_iou"], abs=1e-6)
    project = tmp_path / "real" / "runs" / "random-seed0" / "project"
    labels = project / "data" / "labels"
    provenance = [json.loads(p.read_text()) for p in (labels / "provenance").iterdir()]
    tasks = [t for p in provenance for t in p["tasks"].values()]
    assert len(tasks) == 2 and all(t["annotator"] == "oracle@dinoseg.local" for t in tasks)
    complete = list((labels / "train" / "complete").iterdir())
    assert len(complete) == len(provenance)  # each asked class marked complete in its image
    register = json.loads((project / "metrics/register.json").read_text())
    assert register["version"] == 1 and register["decision"] in ("promoted", "refused")
    assert real[1]["champion"] == ("1" if register["promoted"] else None)  # the workers follow
    from infra.procs import marked

    home = tmp_path / "real" / "runs" / "random-seed0" / "home"
    assert marked(json.loads((home / "stack.json").read_text())["stack_id"]) == []  # all stopped

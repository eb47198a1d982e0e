"""``dinoseg loop simulate --in-process`` end to end on tiny data and a tiny backbone: rounds of
segment -> pick -> oracle label -> memory + retrain + gate -> test, report and MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlops.loop.inprocess import InProcess
from mlops.loop.simulate import Settings, run_all
from tests.conftest import tiny_dinov2, write_synthetic_dataset


def tiny_settings(tmp: Path, out: str, strategies: list[str], rounds: int) -> Settings:
    """The loop on ``tmp/data`` (synthetic) with the tiny backbone saved in ``tmp/bb``, budget 2,
    seed 0, results in ``tmp/<out>`` (shared with the real-stack test)."""
    bb = str(tmp / "bb")
    params = {
        "train": {"backbone": bb, "layers": [1, 2]},
        "serving": {"image_size": 70, "feature_cache_mb": 64},
        "heads": {"backbone": bb, "layers": [1, 2], "blocks": [2], "image_size": 70, "steps": 20,
                  "warm_steps": 10, "eval_every": 10, "threads": 1},
        "memory": {"backbone": bb, "layer": 2, "image_size": 70},
        "prepare": {"served_episodes": 10, "val_episodes": 8},
    }  # fmt: skip
    return Settings(pool=tmp / "data", pool_split="train", test=tmp / "data", test_split="val",
                    classes=["c1", "c2"], rounds=rounds, budget=2, strategies=strategies,
                    seeds=[0], out=tmp / out, extra={"params": params})  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, dict]:
    import os

    tmp = tmp_path_factory.mktemp("loop-run")
    write_synthetic_dataset(tmp / "data", n_train=10, n_val=4)
    tiny_dinov2(layers=2).save_pretrained(tmp / "bb")
    settings = tiny_settings(tmp, "out", ["uncertainty", "random"], rounds=2)
    old = {k: os.environ.get(k) for k in ("DINOSEG_CACHE", "OMP_NUM_THREADS")}
    os.environ.update(DINOSEG_CACHE=str(tmp / "cache"), OMP_NUM_THREADS="1")
    try:
        report = run_all(settings, InProcess)
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    return tmp / "out", report


def test_every_strategy_has_its_rounds(run) -> None:
    out, _report = run
    saved = json.loads((out / "report.json").read_text())
    assert saved["classes"] == ["c1", "c2"] and saved["mode"] == "in-process"
    for name in ("uncertainty", "random"):
        rows = saved["strategies"][name]
        assert [r["round"] for r in rows] == [0, 1, 2]
        assert [r["labels"] for r in rows] == [0, 2, 4]
        assert all(r["miou"] is not None and set(r["class_iou"]) == {"c1", "c2"} for r in rows)
        assert rows[0]["champion"] is None and not any(r["errors"] for r in rows)
        for r in rows:  # the test split's two halves, each scored on its own images
            assert set(r["parts"]) == {"choose", "tell"}, r["parts"]
            assert all(set(p["class_iou"]) == {"c1", "c2"} for p in r["parts"].values())
            for c, iou in r["class_iou"].items():  # pooled over both halves: between them
                lo, hi = sorted(p["class_iou"][c] for p in r["parts"].values())
                assert lo - 1e-6 <= iou <= hi + 1e-6, (c, iou, r["parts"])
    # round 0 is the same system for every strategy: no run's labels reach another run
    first = [saved["strategies"][n][0]["class_iou"] for n in ("uncertainty", "random")]
    assert first[0] == first[1]
    assert saved["summary"]["random"]["labels"] == [0.0, 2.0, 4.0]
    assert (out / "learning_curve.png").stat().st_size > 1000


def test_labels_reach_the_labels_folder_the_memory_and_the_registry(run) -> None:
    out, _ = run
    project = out / "runs" / "uncertainty-seed0" / "project"
    classes = json.loads((project / "data/labels/classes.json").read_text())["classes"]
    assert {"c1", "c2"} & set(classes.values())  # new classes, new ids after the base's
    assert set(classes.values()) >= {"c0", "c3"}
    provenance = list((project / "data/labels/provenance").iterdir())
    assert 1 <= len(provenance) <= 4  # 4 labels, some may share an image (two classes)
    manifest = json.loads((out / "runs/uncertainty-seed0/home/memory/manifest.json").read_text())
    assert set(manifest["classes"]) & {"c1", "c2"}  # the workers' memory learnt them at once
    register = json.loads((project / "metrics/register.json").read_text())
    assert register["version"] == 2 and register["figure"] in ("served", "benchmark")


def test_every_round_is_logged_to_mlflow(run) -> None:
    from mlflow import MlflowClient

    out, _ = run
    home = out / "runs" / "random-seed0" / "home"
    uri = f"sqlite:///{home / 'mlflow.db'}"
    client = MlflowClient(uri, uri)
    exp = client.get_experiment_by_name("dinoseg-loop")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.run_name == "random-seed0"
    history = client.get_metric_history(run.info.run_id, "labels")
    assert [(m.step, m.value) for m in history] == [(0, 0.0), (1, 2.0), (2, 4.0)]


def test_a_retrain_that_fails_keeps_the_last_good_champion(run, monkeypatch) -> None:
    import mlops.heads
    from mlops.loop.scenario import Scenario

    out, report = run
    home = out / "runs" / "uncertainty-seed0" / "home"
    project = out / "runs" / "uncertainty-seed0" / "project"
    monkeypatch.setenv("DINOSEG_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    data = Path(report["pool"].rsplit(":", 1)[0])
    scen = Scenario.load(data, "train", data, "val", ["c1", "c2"])
    driver = InProcess(scen, project)
    before = driver.champion()
    labels = sorted((project / "data/labels/train/masks").iterdir())

    def broken() -> None:
        raise RuntimeError("out of memory mid-way")

    monkeypatch.setattr(mlops.heads, "run", broken)
    errors: list[str] = []
    assert driver.retrain(errors) == before  # the champion stays the last good model
    assert errors == ["heads: RuntimeError: out of memory mid-way"]
    assert sorted((project / "data/labels/train/masks").iterdir()) == labels  # nothing lost
    assert not (Path.cwd() / "data" / "train_set").exists()  # the stages ran in the project

"""The aerial head's pipeline (aerial/dvc.yaml): its file agrees with mlops/aerial_*.py, and
``dvc repro aerial/dvc.yaml`` trains, evaluates, registers and promotes through the gate on a
temporary project (tiny synthetic tiles, tiny random DINOv2, sqlite MLflow)."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from mlops import aerial_common as ac
from mlops.aerial_register import AerialRegisterConfig
from mlops.registry import AERIAL_MODEL_NAME
from tests.aerial.aerial_helpers import write_city_folder
from tests.conftest import tiny_dinov2
from tests.mlops.test_mlops_dvcyaml import BOOKKEEPING, _covers, _no_code, _paths, stage_code
from tests.mlops.test_mlops_pipeline import Project, init_project

REPO = Path(__file__).resolve().parents[2]
STAGES = ["aerial_train", "aerial_evaluate", "aerial_register"]


def ran(output: str) -> list[str]:
    return re.findall(r"Running stage '(?:aerial/dvc\.yaml:)?(\w+)'", output)


def _load(name: str) -> dict:
    return yaml.safe_load((REPO / name).read_text())


def test_deps_name_the_code_each_aerial_stage_runs():
    for name, stage in _load("aerial/dvc.yaml")["stages"].items():
        code = {f for f in stage_code(name) if f not in BOOKKEEPING and not _no_code(REPO / f)}
        deps = [d for d in stage["deps"] if d.split("/")[0] in ("mlops", "dinoseg", "serving")]
        missing = sorted(f for f in code if not any(_covers(d, f) for d in deps))
        assert not missing, f"aerial/dvc.yaml stage {name}: add deps covering {missing}"
        stale = [d for d in deps if not any(_covers(d, f) for f in code)]
        assert not stale, f"aerial/dvc.yaml stage {name}: deps {stale} are code it does not import"
        assert len(set(deps)) == len(deps)


def test_aerial_stages_match_the_code_and_params():
    from dinoseg.aerial.train import AerialTrainConfig
    from dinoseg.config import resolve
    from serving.aerial_review import AerialReviewConfig

    stages = _load("aerial/dvc.yaml")["stages"]
    assert list(stages) == STAGES
    for name, stage in stages.items():
        assert stage["cmd"] == f"python -m mlops.{name}" and stage["wdir"] == ".."
        assert f"mlops/{name}.py" in stage["deps"]
    outs = {n: _paths(s.get("outs")) | _paths(s.get("metrics")) for n, s in stages.items()}
    assert str(ac.HEAD) in outs["aerial_train"] and str(ac.EVAL) in outs["aerial_evaluate"]
    assert ac.LABELS_DEP in stages["aerial_train"]["deps"]  # the configured folder (templated)
    params = _load("aerial/params.yaml")
    for stage in stages.values():
        for entry in stage["params"]:
            for key in entry[str(ac.AERIAL_PARAMS)]:
                node = params
                for part in key.split("."):
                    assert part in node, f"{key} is listed in aerial/dvc.yaml but not in params"
                    node = node[part]
    base = params["aerial_train"]["data"][0].rsplit(":", 1)[0]
    assert base in stages["aerial_train"]["deps"] and base == params["aerial_evaluate"]["data"]
    resolve(AerialTrainConfig, params["aerial_train"])  # unknown keys or bad values raise
    resolve(ac.AerialEvalConfig, params["aerial_evaluate"])
    resolve(AerialRegisterConfig, params["aerial_register"])
    resolve(AerialReviewConfig, params["aerial_review"])
    assert AERIAL_MODEL_NAME == "dinoseg-aerial-head"


def test_the_run_id_reads_the_configured_labels_folder(tmp_path, monkeypatch):
    """The run id digests ``aerial_review.labels_dir`` as configured, not the default folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DINOSEG_PIPELINE_RUN", raising=False)
    (tmp_path / "aerial").mkdir()
    (tmp_path / "aerial/params.yaml").write_text("aerial_review:\n  labels_dir: elsewhere\n")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "data/aerial_labels").mkdir(parents=True)
    before = ac.aerial_run_id()
    (tmp_path / "data/aerial_labels/tile.png").write_bytes(b"default folder")
    assert ac.aerial_run_id() == before  # not the folder the stage reads
    (tmp_path / "elsewhere/tile.png").write_bytes(b"a label")
    changed = ac.aerial_run_id()
    assert changed != before and changed.startswith("aerial-")


def test_the_stage_appends_the_annotators_labels_and_retrains_their_kind(tmp_path):
    from dinoseg.io import InputError
    from mlops.aerial_train import config
    from serving.aerial_review import AerialReviewConfig

    labels = tmp_path / "labels"
    review = {"labels_dir": str(labels), "retrain_kind": "mlp"}
    base = {"data": ["base:train"], "kind": "linear"}
    cfg = config(base, review)  # none yet
    assert cfg.data == ("base:train",) and cfg.kind == "linear"
    write_city_folder(labels)
    cfg = config({**base, "steps": 5}, review)
    assert cfg.data == ("base:train", f"{labels}:train") and cfg.steps == 5 and cfg.kind == "mlp"
    assert config(base, {**review, "retrain_kind": ""}).kind == "linear"  # "" keeps its kind
    # the section's defaults are the workers' (one dataclass): a section without the key
    # retrains the measured kind; a key the workers would not know is refused
    assert config(base, {"labels_dir": str(labels)}).kind == AerialReviewConfig.retrain_kind
    with pytest.raises(InputError, match="retrain_knd"):
        config(base, {**review, "retrain_knd": "mlp"})


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Project:
    tmp = tmp_path_factory.mktemp("aerial")
    data = write_city_folder(tmp / "dubai", sizes=((84, 98), (70, 112), (84, 84), (98, 70)))
    write_city_folder(data, sizes=((84, 112), (70, 98)), split="val", seed=10)
    tiny_dinov2(layers=2).save_pretrained(tmp / "bb")
    root = tmp / "project"
    (root / "aerial").mkdir(parents=True)
    dvc = (REPO / "aerial/dvc.yaml").read_text().replace("../shared/data/dubai", str(data))
    (root / "aerial/dvc.yaml").write_text(dvc)
    params = _load("aerial/params.yaml")
    params["aerial_train"].update(data=[f"{data}:train"], backbone=str(tmp / "bb"), blocks=[1, 2],
                                  tile=56, overlap=14, steps=80, eval_every=40, lr=0.01,
                                  val_fraction=0.0, threads=1)
    params["aerial_evaluate"].update(data=str(data), only=[], baseline_shots=1, tile=56,
                                     overlap=14, threads=1)
    (root / "aerial/params.yaml").write_text(yaml.safe_dump(params))
    for package in ("mlops", "dinoseg", "serving"):
        shutil.copytree(REPO / package, root / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    (root / "data/aerial_labels").mkdir(parents=True)
    (root / "data/aerial_labels/.gitkeep").touch()
    proj = init_project(root, tmp)
    proj.commit("aerial pipeline")
    return proj


def _alias(project: Project, alias: str) -> str:
    from mlflow import MlflowClient

    uri = project.env["MLFLOW_TRACKING_URI"]
    return str(MlflowClient(uri, uri).get_model_version_by_alias(AERIAL_MODEL_NAME, alias).version)


def test_repro_trains_evaluates_registers_and_promotes(project):
    out = project.dvc("repro", "aerial/dvc.yaml")
    assert ran(out) == STAGES
    evaluation = project.metrics("aerial_eval")
    assert evaluation["images"] == 2 and evaluation["baseline_miou"] is not None
    for key in ("iou_building", "fnr_road", "fpr_water", "boundary_f1", "pixel_accuracy"):
        assert evaluation[key] is not None, key
    record = project.metrics("aerial_register")
    assert record["version"] == 1 and record["model_name"] == AERIAL_MODEL_NAME
    assert record["promoted"] == (evaluation["miou"] > evaluation["baseline_miou"])
    assert record["promoted"], record["reason"]  # 80 steps on the same kind of tiles
    assert _alias(project, "challenger") == "1" == _alias(project, "champion")
    assert (project.root / "pipeline/aerial/head/MODEL_CARD.md").is_file()
    assert ran(project.dvc("repro", "aerial/dvc.yaml")) == []  # nothing changed
    project.commit("first aerial head")


def test_stage_runs_share_an_aerial_run_in_mlflow(project):
    from mlflow import MlflowClient

    uri = project.env["MLFLOW_TRACKING_URI"]
    client = MlflowClient(uri, uri)
    runs = client.search_runs([client.get_experiment_by_name("dinoseg").experiment_id])
    by_stage = {r.data.tags["stage"]: r for r in runs}
    assert set(by_stage) == {"pipeline", *STAGES}
    assert len({r.data.tags["pipeline_run"] for r in runs}) == 1
    assert next(iter(runs)).data.tags["pipeline_run"].startswith("aerial-")
    listed = {a.path for a in client.list_artifacts(by_stage["aerial_train"].info.run_id, "head")}
    assert "head/MODEL_CARD.md" in listed


def test_a_worse_head_is_refused_and_the_champion_stays(project):
    params = yaml.safe_load((project.root / "aerial/params.yaml").read_text())
    params["aerial_train"].update(steps=1, lr=1e-9)  # the untrained head
    params["aerial_register"].update(tolerance=0.0)
    (project.root / "aerial/params.yaml").write_text(yaml.safe_dump(params))
    out = project.dvc("repro", "aerial/dvc.yaml")
    assert ran(out) == STAGES
    record = project.metrics("aerial_register")
    assert record["version"] == 2 and not record["promoted"]
    assert record["champion_miou_source"] == "registry tags (same tiles)"
    assert record["reason"].startswith("refused: challenger")
    assert _alias(project, "champion") == "1" and _alias(project, "challenger") == "2"


def test_the_champion_maps_by_default(project, tmp_path):
    image = project.root.parent / "dubai/val/images/t0.png"
    done = project.run(sys.executable, "-m", "dinoseg", "aerial", "--image", str(image),
                       "--method", "head", "--tile", "56", "--overlap", "14",
                       "--out", str(tmp_path / "map"))
    assert '"method": "head"' in done.stdout and (tmp_path / "map/city.glb").is_file()

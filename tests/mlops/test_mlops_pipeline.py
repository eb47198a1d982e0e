"""The whole ``dvc repro`` pipeline on a temporary copy with a smoke configuration.

The copy holds this repository's dvc.yaml, params.yaml (with the smoke overrides below),
mlops/, dinoseg/ (stage deps) and DVC config; data is a tiny synthetic dataset, the backbone a
tiny random DINOv2 and the teacher ``tiny-random``. MLflow writes to a sqlite store in the
temporary folder. The tests run in order on one project: a first repro, a repro that does
nothing, a code change (marks only the stages that run it), new labels, a worse
model (``dvc exp run -S train.lr=0``) and the champion served through ``models:/``.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.conftest import COLOURS, tiny_dinov2, write_synthetic_dataset

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ALL_STAGES = ["prepare", "teacher", "distill", "train", "heads", "memory", "evaluate",
              "register"]
TIMEOUT = 300


def smoke_params(base: Path, backbone: Path, guard: Path) -> dict:
    """The repository's params.yaml with a schedule of seconds on tiny data and models."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["prepare"].update(base=str(base), val_episodes=12, served_episodes=12,
                             guard=f"{guard}:val", guard_episodes=8)
    common = {"backbone": str(backbone), "layers": [1, 2], "arch": "fsdino-tiny-residual",
              "threads": 1}  # the served recipe at tiny dims
    params["distill"].update(copy.deepcopy(common), teacher="tiny-random",
                             teacher_options={"embed_dim": 32}, sizes=[56, 70], steps_per_size=3,
                             batch_size=2, max_images=6, max_val_images=3)
    params["train"].update(copy.deepcopy(common), image_size=70, steps=40, epoch_steps=10,
                           batch_size=4, val_episodes=6, warmup_steps=1, min_area=0.01, lr=0.01)
    params["heads"].update(backbone=str(backbone), layers=[1, 2], blocks=[2], image_size=70,
                           steps=20, warm_steps=10, eval_every=10, threads=1)
    params["memory"].update(backbone=str(backbone), layer=2, image_size=70)
    params["evaluate"].update(examples=1)
    params["register"].update(tolerance=5.0)  # 12 episodes: figures move by several points
    return params


@dataclass
class Project:
    root: Path
    env: dict[str, str]

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(cmd, cwd=self.root, env=self.env, capture_output=True, text=True,
                              timeout=TIMEOUT, check=False)
        if check and done.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stdout[-3000:]}\n"
                        f"{done.stderr[-3000:]}")
        return done

    def dvc(self, *args: str) -> str:
        done = self.run(str(BIN / "dvc"), *args)
        return done.stdout + done.stderr

    def commit(self, message: str) -> None:
        self.run("git", "add", "-A")
        self.run("git", "commit", "-q", "-m", message)

    def metrics(self, name: str) -> dict:
        return json.loads((self.root / "metrics" / f"{name}.json").read_text())

    def alias(self, alias: str) -> str:
        from mlflow import MlflowClient

        uri = self.env["MLFLOW_TRACKING_URI"]
        mv = MlflowClient(uri, uri).get_model_version_by_alias("dinoseg-segmenter", alias)
        return str(mv.version)


def ran(output: str) -> list[str]:
    return re.findall(r"Running stage '(\w+)'", output)


def init_project(root: Path, tmp: Path) -> Project:
    """A git + DVC project in ``root`` whose commands run with this checkout's code and a
    home, cache and sqlite MLflow store under ``tmp`` (nothing of the caller's environment)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DINOSEG_"))}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", PYTHONPATH=str(REPO),
               DINOSEG_HOME=str(tmp / "var"), DINOSEG_CACHE=str(tmp / "cache"),
               MLFLOW_TRACKING_URI=f"sqlite:///{tmp}/var/mlflow.db", OMP_NUM_THREADS="1",
               MLFLOW_DISABLE_TELEMETRY="true", DVC_NO_ANALYTICS="1", GIT_AUTHOR_NAME="t",
               GIT_AUTHOR_EMAIL="t@example.com", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@example.com")
    proj = Project(root, env)
    proj.run("git", "init", "-q")
    proj.dvc("init", "-q")
    for name in (".dvc/config", ".dvcignore"):
        shutil.copy(REPO / name, root / name)
    return proj


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Project:
    tmp = tmp_path_factory.mktemp("pipeline")
    write_synthetic_dataset(tmp / "base", n_train=10, n_val=6)
    write_synthetic_dataset(tmp / "guard", n_train=2, n_val=6)  # never trained on
    tiny_dinov2(layers=2).save_pretrained(tmp / "bb")
    root = tmp / "project"
    root.mkdir()
    shutil.copy(REPO / "dvc.yaml", root)
    for package in ("mlops", "dinoseg"):  # the code the stages run is part of their deps
        shutil.copytree(REPO / package, root / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    params = smoke_params(tmp / "base", tmp / "bb", tmp / "guard")
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    (root / "data/labels").mkdir(parents=True)
    (root / "data/labels/.gitkeep").touch()
    proj = init_project(root, tmp)
    proj.commit("pipeline")
    return proj


def test_repro_runs_every_stage_and_promotes_the_first_model(project):
    out = project.dvc("repro")
    assert ran(out) == ALL_STAGES
    evaluation = project.metrics("eval")
    assert evaluation["miou"] > evaluation["baseline_miou"]
    assert evaluation["served_episodes"] > 0 and evaluation["guard_episodes"] == 8
    record = project.metrics("register")
    assert record["figure"] == "served"  # the gate judges what users get
    assert record["promoted"] == (evaluation["served_miou"] > evaluation["served_baseline_miou"])
    assert record["version"] == 1 and record["challenger_miou"] == evaluation["served_miou"]
    assert record["guard_miou"] == evaluation["guard_miou"]
    assert project.alias("challenger") == "1"
    for path in ("data/train_set/classes.json", "data/episodes/val.json",
                 "data/episodes/served.json", "data/episodes/guard.json",
                 "pipeline/model/model.safetensors", "pipeline/head/model.safetensors",
                 "pipeline/memory/manifest.json", "pipeline/eval/served/report.json",
                 "pipeline/eval/guard/report.json", "pipeline/eval/report_class_iou.png",
                 "metrics/train_history.csv", "metrics/eval_class_iou.csv"):
        assert (project.root / path).is_file(), path
    assert "files pushed" in project.dvc("push")  # the default local remote works
    project.commit("first model")


def test_stages_share_a_pipeline_run_in_mlflow(project):
    from mlflow import MlflowClient

    uri = project.env["MLFLOW_TRACKING_URI"]
    client = MlflowClient(uri, uri)
    exp = client.get_experiment_by_name("dinoseg")
    runs = client.search_runs([exp.experiment_id])
    assert len({r.data.tags["pipeline_run"] for r in runs}) == 1
    by_stage = {r.data.tags["stage"]: r for r in runs}
    assert set(by_stage) == {"pipeline", *ALL_STAGES}
    train = by_stage["train"]
    base = str(project.root.parent / "base")
    assert train.data.params["lr"] == "0.01" and train.data.params["data"] == base
    assert [m.step for m in client.get_metric_history(train.info.run_id, "loss")] == [10, 20,
                                                                                         30, 40]
    listed = {a.path for a in client.list_artifacts(train.info.run_id, "checkpoint")}
    assert "checkpoint/MODEL_CARD.md" in listed
    assert by_stage["register"].data.tags["decision"] == "promoted"
    assert "v1 promoted" in by_stage["pipeline"].data.tags["decision"]


def test_second_repro_runs_nothing(project):
    out = project.dvc("repro")
    assert ran(out) == [] and "Data and pipelines are up to date" in out


def test_code_changes_mark_the_stages_that_run_them(project):
    report = project.root / "dinoseg/eval/report.py"
    text = report.read_text()
    (report.parent / "__pycache__").mkdir()
    (report.parent / "__pycache__/report.cpython-312.pyc").write_bytes(b"compiled")
    assert "up to date" in project.dvc("status")  # compiled files are no change of code
    report.write_text(text + "# changed\n")
    try:
        changed = re.findall(r"^(\w+):", project.dvc("status"), re.MULTILINE)
    finally:
        report.write_text(text)
    assert changed == ["evaluate", "register"]
    assert "up to date" in project.dvc("status")


def test_new_labels_rerun_from_prepare(project):
    labels = project.root / "data/labels"
    shutil.copy(project.root.parent / "base/classes.json", labels)
    (labels / "train/images").mkdir(parents=True)
    (labels / "train/masks").mkdir(parents=True)
    image = np.random.default_rng(7).integers(0, 60, (56, 70, 3), dtype=np.uint8)
    mask = np.full((56, 70), 255, np.uint8)
    for c in range(4):
        image[2 + 13 * c : 14 + 13 * c, 30:58] = COLOURS[c]
        mask[2 + 13 * c : 14 + 13 * c, 30:58] = c
    Image.fromarray(image).save(labels / "train/images/annotated.png")
    Image.fromarray(mask).save(labels / "train/masks/annotated.png")
    (labels / "train/images/broken.jpg").write_bytes(b"\xff\xd8 truncated")
    out = project.dvc("repro")
    # labels teach the head and the memory; the segmenter's stages (teacher, distill, train)
    # read the base dataset only and do not rerun
    assert ran(out) == ["prepare", "heads", "memory", "evaluate", "register"]
    assert json.loads((project.root / "metrics/memory.json").read_text())["added"] == 1
    prepared = project.metrics("prepare")
    assert (prepared["label_images"], prepared["skipped_label_files"]) == (1, 1)
    assert "broken.jpg" in out  # the skipped file is reported
    diff = project.dvc("metrics", "diff")
    assert "label_images" in diff
    project.dvc("plots", "diff", "-o", str(project.root.parent / "plots"))
    assert (project.root.parent / "plots/index.html").is_file()
    record = project.metrics("register")
    assert record["version"] == 2 and record["champion_before"] == 1
    assert record["promoted"] == (record["challenger_miou"] >= record["champion_miou"] - 5.0)
    project.commit("labels")


def test_worse_model_is_refused(project):
    champion = project.alias("champion")
    # an untrained decoder without the prototype prior: deliberately worse
    out = project.dvc("exp", "run", "-S", "train.lr=0", "-S", "train.arch=fsdino-tiny")
    assert ran(out) == ["train", "evaluate", "register"]
    record = project.metrics("register")
    assert record["version"] == 3 and not record["promoted"]
    assert record["challenger_miou"] < record["champion_miou"] - 5.0
    assert record["reason"].startswith("refused: challenger")
    assert project.alias("challenger") == "3" and project.alias("champion") == champion


def test_champion_serves_through_the_registry(project, tmp_path):
    base = project.root.parent / "base/val"
    out = project.run(str(BIN / "dinoseg"), "predict", "--model",
                      "models:/dinoseg-segmenter@champion", "--support",
                      str(base / "images/000.png"), str(base / "masks/000.png"), "--class-id", "1",
                      "--query", str(base / "images/001.png"), "--out", str(tmp_path))
    assert (tmp_path / "001.png").is_file()
    assert f"models:/dinoseg-segmenter/{project.alias('champion')}" in out.stdout + out.stderr
    empty = {**project.env, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/none.db"}
    refused = subprocess.run(
        [str(BIN / "dinoseg"), "predict", "--model", "models:/dinoseg-segmenter@champion",
         "--support", str(base / "images/000.png"), str(base / "masks/000.png"),
         "--query", str(base / "images/001.png"), "--out", str(tmp_path / "o")],
        env=empty, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert refused.returncode == 2 and "no champion yet — run `dvc repro`" in refused.stderr

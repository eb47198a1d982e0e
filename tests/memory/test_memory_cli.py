"""``dinoseg memory``, ``dinoseg eval --memory`` and ``dinoseg predict --memory`` end to end
(tiny random DINOv2 saved as a transformers checkpoint)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dinoseg.cli import main
from tests.conftest import tiny_dinov2
from tests.memory.scenes import CYAN, YELLOW, scene, thing_scenes, write_folder


@pytest.fixture
def project(tmp_path: Path) -> dict[str, Path]:
    data = write_folder(tmp_path / "data", "train", thing_scenes(6, CYAN))
    write_folder(data, "val", thing_scenes(5, YELLOW, seed=200) + thing_scenes(3, CYAN, 400), 20)
    backbone = tmp_path / "tiny-dino"
    tiny_dinov2().save_pretrained(backbone)
    return {"data": data, "backbone": backbone, "root": tmp_path}


def test_eval_with_memory_runs_the_same_episodes(
    project: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DINOSEG_CACHE", str(project["root"] / "cache"))
    out = project["root"] / "report.json"
    argv = ["eval", "--data", str(project["data"]), "--split", "val", "--classes", "thing",
            "--episodes", "6", "--model", "prototype", "--model", "knn",
            "--backbone", str(project["backbone"]), "--image-size", "84",
            "--memory", f"{project['data']}:train", "--memory-k", "2", "--memory-k", "all",
            "--out", str(out), "--no-progress", "--examples", "0"]  # fmt: skip
    assert main(argv) == 0
    report = json.loads(out.read_text())
    names = ["prototype", "knn", "prototype+memory@2", "prototype+memory@all",
             "knn+memory@2", "knn+memory@all"]  # fmt: skip
    assert list(report["models"]) == names
    runs = {n: [(e["episode"], e["query"], e["class_id"]) for e in m["episodes"]]
            for n, m in report["models"].items()}  # fmt: skip
    assert all(r == runs["prototype"] for r in runs.values()) and len(runs["knn"]) == 6
    with_memory = report["models"]["knn+memory@2"]
    assert with_memory["spec"] == "knn" and with_memory["memory"]["images"] == 6
    assert with_memory["memory"]["mode"]["images"] == 2
    assert report["models"]["knn"]["memory"] is None
    assert [e["retrieved"] for e in with_memory["episodes"]] == [2] * 6
    # the cyan train labels find the cyan queries a yellow (or cyan) support alone misses
    assert with_memory["metrics"]["miou"] > report["models"]["knn"]["metrics"]["miou"] + 20
    assert [e["retrieved"] for e in report["models"]["knn+memory@all"]["episodes"]] == [6] * 6
    built = list((project["root"] / "cache" / "memory").iterdir())
    assert len(built) == 1  # built once under $DINOSEG_CACHE, reused by a second run
    assert main([*argv, "--memory-dir", str(built[0])]) == 0
    again = json.loads(out.read_text())
    assert again["models"]["knn+memory@2"]["metrics"] == with_memory["metrics"]
    assert "knn+memory@2" in capsys.readouterr().out


def test_memory_build_add_info_and_predict(
    project: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    root, mem = project["root"], project["root"] / "mem"
    build = ["memory", "build", "--data", f"{project['data']}:train", "--out", str(mem),
             "--backbone", str(project["backbone"]), "--layer", "2", "--image-size", "84",
             "--no-progress"]  # fmt: skip
    assert main(build) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["images"] == 6 and first["added"] == 6
    img, lab = scene(9, (10, 10, 50, 60), CYAN)
    Image.fromarray(img).save(root / "new.png")
    Image.fromarray(lab.astype(np.uint8)).save(root / "new_labels.png")
    add = ["memory", "add", "--memory", str(mem), "--image", str(root / "new.png"),
           "--labels", str(root / "new_labels.png"),
           "--classes", str(project["data"] / "classes.json")]  # fmt: skip
    assert main(add) == 0
    added = json.loads(capsys.readouterr().out)
    assert added["added"] and added["version"] != first["version"]
    assert main(["memory", "info", str(mem)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["images"] == 7 and info["version"] == added["version"]
    assert main([*add, "--complete", "thing"]) == 0  # the same label, now marked complete
    marked = json.loads(capsys.readouterr().out)
    assert marked["added"] and marked["version"] != added["version"]

    support, s_lab = scene(0, (14, 14, 42, 56), YELLOW)
    query, _ = scene(1, (42, 28, 70, 70), CYAN)
    Image.fromarray(support).save(root / "s.png")
    Image.fromarray((s_lab == 1).astype(np.uint8) * 255).save(root / "s_mask.png")
    Image.fromarray(query).save(root / "q.png")
    predict = ["predict", "--support", str(root / "s.png"), str(root / "s_mask.png"),
               "--query", str(root / "q.png"), "--out", str(root / "out"), "--model", "knn",
               "--backbone", str(project["backbone"]), "--image-size", "84",
               "--class-name", "Thing", "--memory", str(mem), "--memory-k", "3"]  # fmt: skip
    assert main(predict) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["memory_images"] == 3 and record["class_name"] == "Thing"
    assert main([*predict[:-6], "--memory", str(mem)]) == 2
    assert "--memory needs --class-name" in capsys.readouterr().err

"""The serving layer's support memory: built in the background from the base dataset and the
labels, attached to requests that name a class, a synced label retrievable at once."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from serving.segment import SegmentJob
from serving.uploads import png_bytes, store_bytes
from tests.conftest import tiny_dinov2
from tests.memory.scenes import CYAN, scene, thing_scenes, write_folder


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A params file over a tiny backbone, a base dataset of ``thing`` scenes, no labels yet."""
    monkeypatch.setenv("DINOSEG_HOME", str(tmp_path / "home"))
    tiny_dinov2().save_pretrained(tmp_path / "tiny")
    write_folder(tmp_path / "base", "train", thing_scenes(4))
    params = {"serving": {"model": "prototype", "backbone": str(tmp_path / "tiny"),
                          "image_size": 84, "memory": "auto", "memory_images": 3},
              "review": {"classes_from": str(tmp_path / "base"),
                         "labels_dir": str(tmp_path / "labels")}}  # fmt: skip
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path


def _request(class_name: str | None) -> dict:
    img, lab = scene(7, (20, 20, 50, 60), CYAN)
    q, _ = scene(8, (30, 10, 60, 50), CYAN)
    return {"support": [{"image": str(store_bytes(png_bytes(img), ".png")),
                         "mask": str(store_bytes(png_bytes(lab == 1), ".png"))}],
            "queries": [str(store_bytes(png_bytes(q), ".png"))], "class_name": class_name}


def test_memory_is_built_in_the_background_then_used(project: Path) -> None:
    job = SegmentJob.from_params(project / "params.yaml")
    first = job.run(_request("thing")).reply
    assert "support memory not used (being built" in (first["notice"] or "")
    job.memory._building.join(120)  # type: ignore[union-attr]
    status = job.status()["memory"]
    assert status["images"] == 4 and status["version"] and not status["building"]
    second = job.run(_request("thing")).reply
    assert second["notice"] is None
    meta = json.loads((Path(second["results"][0]["mask"]).parent / "meta.json").read_text())
    assert meta["memory"]["version"] == status["version"]
    assert len(meta["memory"]["retrieved"]) == 3  # memory_images
    unnamed = job.run(_request(None)).reply  # no class: the memory is not consulted
    meta = json.loads((Path(unnamed["results"][0]["mask"]).parent / "meta.json").read_text())
    assert meta["memory"] is None and unnamed["notice"] is None
    fresh = SegmentJob.from_params(project / "params.yaml")
    assert fresh.run(_request(None)).reply["notice"] is None  # nor mentioned when unnamed


def test_a_synced_label_is_retrievable_at_once(project: Path) -> None:
    job = SegmentJob.from_params(project / "params.yaml")
    job.run(_request("thing"))
    job.memory._building.join(120)  # type: ignore[union-attr]
    before = job.status()["memory"]["version"]
    img, lab = scene(40, (5, 5, 40, 40), CYAN)
    lab = np.where(lab == 1, 3, 9)  # a new class "pole" (id 3), the rest void
    assert job.memory.add_label(img, lab, {3: "pole"}, "labels:train/x")  # type: ignore[union-attr]
    other = SegmentJob.from_params(project / "params.yaml")  # another process, same memory
    reply = other.run(_request("pole")).reply
    meta = json.loads((Path(reply["results"][0]["mask"]).parent / "meta.json").read_text())
    assert meta["memory"]["version"] != before
    assert len(meta["memory"]["retrieved"]) == 1  # the only labelled image of "pole"


def test_no_memory_when_switched_off(project: Path) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["serving"]["memory"] = ""
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    job = SegmentJob.from_params(project / "params.yaml")
    reply = job.run(_request("thing")).reply
    assert reply["notice"] is None and job.status()["memory"] is None
    assert not (project / "home" / "memory").exists()

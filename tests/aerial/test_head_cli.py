"""``dinoseg aerial train | eval`` and ``dinoseg aerial --method head`` end to end (packaged
DINOv2-S on small synthetic tiles), the aerial job with a head, and the evaluation's scores."""

from __future__ import annotations

import json

import numpy as np
import pytest
from aerial_helpers import NAMES, city_tile, write_city_folder
from PIL import Image

from dinoseg.aerial.config import AerialConfig
from dinoseg.aerial.evaluate import evaluate_method, label_map
from dinoseg.aerial.methods.base import AerialMethod
from dinoseg.cli import main, with_default_verb
from dinoseg.io import InputError


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A frozen linear head trained by the CLI on 4 synthetic tiles (and val tiles to score)."""
    tmp = tmp_path_factory.mktemp("cli")
    data = write_city_folder(tmp / "data", sizes=((84, 98), (70, 112), (84, 84), (98, 70)))
    write_city_folder(data, sizes=((84, 112), (70, 98)), split="val", seed=10)
    out = tmp / "head"
    rc = main(["aerial", "train", "--data", f"{data}:train", "--strategy", "frozen",
               "--augment", "rotate", "--out", str(out), "tile=56", "overlap=14", "steps=40",
               "eval_every=20", "lr=0.01", "val_fraction=0", "threads=1", "views=1"])
    assert rc == 0
    return {"data": data, "head": out, "tmp": tmp}


def test_train_writes_a_checkpoint_with_its_card(trained):
    head = trained["head"]
    assert {"model.safetensors", "config.json", "metrics.json", "MODEL_CARD.md",
            "resolved_config.json"} <= {p.name for p in head.iterdir()}
    cfg = json.loads((head / "resolved_config.json").read_text())
    assert cfg["augment"] == ["rotate"] and cfg["steps"] == 40 and cfg["strategy"] == "frozen"
    card = (head / "MODEL_CARD.md").read_text()
    assert "Augmentation: rotate (1 views per image)" in card and "encoder scale 1" in card


def test_map_with_the_head(trained, tmp_path, capsys):
    image, _ = city_tile(84, 112, seed=10)
    Image.fromarray(image).save(tmp_path / "photo.png")
    rc = main(["aerial", "--image", str(tmp_path / "photo.png"), "--method", "head", "--model",
               str(trained["head"]), "--tile", "56", "--overlap", "14", "--out",
               str(tmp_path / "map")])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["method"] == "head" and set(summary["classes"]) == set(NAMES)
    labels = np.asarray(Image.open(tmp_path / "map" / "classes.png"))
    truth = np.asarray(Image.open(trained["data"] / "val" / "masks" / "t0.png"))
    assert (labels == truth).mean() > 0.5  # 5 classes


def test_eval_reports_the_map_figures(trained, tmp_path, capsys):
    out = tmp_path / "report.json"
    rc = main(["aerial", "eval", "--data", str(trained["data"]), "--split", "val", "--method",
               "head", "--model", str(trained["head"]), "--out", str(out), "--tile", "56",
               "--overlap", "14"])
    assert rc == 0 and "head: mIoU" in capsys.readouterr().out
    r = json.loads(out.read_text())
    assert r["method"] == "head" and [i["stem"] for i in r["images"]] == ["t0", "t1"]
    assert set(r["per_class"]) == set(NAMES) and r["miou"] > 40
    assert 0 <= r["safety"]["fnr"]["road"] <= 100 and "water" in r["safety"]["hazard_fpr"]
    assert r["cpu_s_per_mp"] > 0 and r["peak_rss_mb"] > 0 and r["boundary_f1"] is not None


@pytest.mark.parametrize(("args", "message"), [
    (["eval", "--method", "head", "--out", "r.txt"], "ending in .json"),
    (["eval", "--method", "fewshot", "--out", "r.json"], "needs at least one --support"),
    (["eval", "--method", "head", "--model", "prototype", "head_model=knn", "--out", "r.json"],
     "--method head needs --model"),
    (["eval", "--method", "head", "--model", "nowhere", "--out", "r.json"],
     "no such head checkpoint directory"),
    (["train", "--out", "h", "steps=0"], "steps must be positive"),
    (["train", "--out", "h", "--strategy", "finetune", "tune_blocks=0"], "tune_blocks >= 1"),
])  # fmt: skip
def test_bad_verbs_are_one_clear_line(trained, tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    data = ["--data", str(trained["data"])] + (["--split", "val"] if args[0] == "eval" else [])
    assert main(["aerial", args[0], *data, *args[1:]]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "h").exists()


def test_map_is_the_default_verb():
    assert with_default_verb(["aerial", "--image", "x"]) == ["aerial", "map", "--image", "x"]
    assert with_default_verb(["aerial", "train", "--out", "h"]) == ["aerial", "train", "--out", "h"]
    assert with_default_verb(["aerial", "-h"]) == ["aerial", "-h"]
    assert with_default_verb(["heads", "train"]) == ["heads", "train"]  # no default verb


class _Fixed(AerialMethod):
    """A method answering the same labels for any image (its classes in another order)."""

    name = "fixed"

    def __init__(self, labels: np.ndarray, names: list[str]):
        super().__init__()
        self.labels, self.names = labels, names

    @property
    def class_names(self) -> list[str]:
        return self.names

    def segment(self, image, *, progress=None, out=None) -> np.ndarray:
        return self.labels.copy()


def test_scores_of_a_perfect_and_a_water_only_map(tmp_path):
    data = write_city_folder(tmp_path / "d", sizes=((70, 84),), split="val")
    truth = np.asarray(Image.open(data / "val" / "masks" / "t0.png"))
    cfg = AerialConfig(min_area=0, smooth_iterations=0)
    order = ["road", "water", "land", "building", "vegetation"]  # matched by name
    relabel = np.array([order.index(n) for n in NAMES], np.uint8)
    perfect = evaluate_method(_Fixed(relabel[truth], order), cfg, data, "val")
    assert perfect["miou"] == 100 and perfect["pixel_accuracy"] == 100
    assert perfect["safety"]["fnr"]["road"] == 0 and perfect["boundary_f1"] == 100
    water = evaluate_method(_Fixed(np.full_like(truth, 1), order), cfg, data, "val")
    assert water["safety"]["fnr"]["road"] == 100 and water["safety"]["hazard_fpr"]["water"] == 100
    share = 100 * (truth == 1).mean()
    assert water["per_class"]["water"]["iou"] == pytest.approx(share)
    assert water["images"][0]["predicted_share"]["water"] == 100
    # the safety figure covers the config's safety classes
    buildings = AerialConfig(min_area=0, smooth_iterations=0, safety_classes=("building", "road"))
    both = evaluate_method(_Fixed(np.full_like(truth, 1), order), buildings, data, "val")
    assert both["safety"]["fnr"] == {"building": 100, "road": 100}


def test_label_map_needs_a_shared_class():
    assert label_map(["Road", "sea"], NAMES)[:2].tolist() == [4, 5]  # sea: not a class -> wrong
    with pytest.raises(InputError, match="share no name"):
        label_map(["cluster 0"], NAMES)


def test_aerial_job_with_a_head_offers_its_least_confident_tiles(trained, tmp_path, monkeypatch):
    from dinoseg import runtime
    from serving.aerial import REVIEW_TILES, aerial_config, run_aerial_job

    monkeypatch.setenv("DINOSEG_HOME", str(tmp_path / "home"))
    uploads = runtime.ensure(runtime.uploads_dir())
    image, _ = city_tile(98, 140, seed=11)
    Image.fromarray(image).save(uploads / "photo.png")
    request = {"image": str(uploads / "photo.png"),
               "config": {"method": "head", "model": str(trained["head"]), "tile": 56,
                          "overlap": 14}}  # fmt: skip
    reply = run_aerial_job(request, params=tmp_path / "none.yaml")
    assert reply["stats"]["method"] == "head"
    labels = np.asarray(Image.open(reply["out"] + "/classes.png"))
    tiles = reply["review"]
    assert len(tiles) == REVIEW_TILES
    assert [t["confidence"] for t in tiles] == sorted(t["confidence"] for t in tiles)
    for t in tiles:
        y0, x0, y1, x1 = t["box"]
        np.testing.assert_array_equal(np.asarray(Image.open(t["image"])), image[y0:y1, x0:x1])
        np.testing.assert_array_equal(np.asarray(Image.open(t["labels"])), labels[y0:y1, x0:x1])
        assert t["classes"] == NAMES and t["model"] == str(trained["head"])
        assert t["image"].startswith(str(uploads))
    assert aerial_config({"model": "x", "method": "head"}, tmp_path / "none.yaml").model == "x"
    few = run_aerial_job({"image": str(uploads / "photo.png"), "config": {"method": "kmeans",
                          "k": 3, "tile": 56, "overlap": 14}}, params=tmp_path / "none.yaml")
    assert few["review"] == []  # only a head scores its tiles
    assert reply["notice"] == few["notice"] == ""


def test_the_head_is_the_default_once_it_resolves_and_says_tiles_go_unused(trained, tmp_path,
                                                                          monkeypatch):  # fmt: skip
    from dinoseg import runtime
    from serving.aerial import DefaultMethod, default_method, run_aerial_job

    monkeypatch.setenv("DINOSEG_HOME", str(tmp_path / "home"))
    params = tmp_path / "params.yaml"
    params.write_text(f"aerial:\n  method: kmeans\n  head_model: {tmp_path / 'absent'}\n")
    assert default_method(params) == "kmeans"  # no head there: the configured method
    params.write_text(f"aerial:\n  head_model: {trained['head']}\n")
    assert default_method(params) == "head"
    assert default_method(tmp_path / "none.yaml") == "fewshot"  # no champion registered here
    clock = [0.0]
    cached = DefaultMethod(params, check_seconds=30.0, clock=lambda: clock[0])
    assert cached() == "head"
    params.write_text("aerial:\n  method: kmeans\n")  # the head is withdrawn
    clock[0] = 29.0
    assert cached() == "head"  # looked up at most once per period
    clock[0] = 30.0
    assert cached() == "kmeans"
    params.write_text(f"aerial:\n  head_model: {trained['head']}\n")
    uploads = runtime.ensure(runtime.uploads_dir())
    image, labels = city_tile(98, 140, seed=11)
    Image.fromarray(image).save(uploads / "photo.png")
    Image.fromarray(labels.astype(np.uint8)).save(uploads / "mask.png")
    tile = {"image": str(uploads / "photo.png"), "mask": str(uploads / "mask.png")}
    request = {"image": str(uploads / "photo.png"), "supports": [tile],
               "config": {"method": "head", "tile": 56, "overlap": 14}}  # fmt: skip
    reply = run_aerial_job(request, params=params)
    assert reply["stats"]["method"] == "head"
    assert reply["notice"] == ("the head method does not read annotated tiles: the 1 given were "
                               "not used")

"""A head trained end to end on a tiny synthetic dataset with a tiny random DINOv2: the
checkpoint, the predictor, warm start with a new class, the CLI."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dinoseg.checkpoint import read_config
from dinoseg.feature_cache import CachedPredictor, FeatureCache
from dinoseg.heads import HeadPredictor, HeadTrainConfig, is_head_checkpoint, train_head
from dinoseg.heads.checkpoint import HEAD_ARCH, load_head
from dinoseg.heads.predict import FUSION_THRESHOLD
from dinoseg.io import InputError
from dinoseg.models.build import build_segmenter
from dinoseg.predictor import FewShotPredictor
from tests.conftest import tiny_dinov2, write_synthetic_dataset


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("heads")
    write_synthetic_dataset(tmp / "data", n_train=12, n_val=4)
    tiny_dinov2(layers=2).save_pretrained(tmp / "bb")
    cfg = HeadTrainConfig(data=(f"{tmp / 'data'}:train",), backbone=str(tmp / "bb"),
                          layers=(1, 2), blocks=(2,), image_size=70, steps=60, batch_size=4,
                          lr=1e-2, eval_every=20, val_fraction=0.4, min_val_images=2,
                          threads=1, threshold=FUSION_THRESHOLD)
    return tmp, cfg, train_head(cfg, tmp / "head")


def _load(root: Path, split: str, i: int) -> tuple[np.ndarray, np.ndarray]:
    img = np.asarray(Image.open(root / split / "images" / f"{i:03d}.png").convert("RGB"))
    return img, np.asarray(Image.open(root / split / "masks" / f"{i:03d}.png"))


def test_the_checkpoint_is_a_project_checkpoint_of_a_head(setup):
    _tmp, _cfg, out = setup
    assert {"model.safetensors", "config.json", "metrics.json", "MODEL_CARD.md",
            "resolved_config.json"} <= {p.name for p in out.iterdir()}
    assert is_head_checkpoint(out) and read_config(out).arch == HEAD_ARCH
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["classes"] == ["c0", "c1", "c2", "c3"]
    assert metrics["fit_images"] + metrics["val_images"] == 12 and metrics["val_images"] > 0
    assert [h["step"] for h in metrics["history"]] == [20, 40, 60]
    assert metrics["best_step"] in (20, 40, 60)
    assert metrics["val"]["miou"] == max(h["val_miou"] for h in metrics["history"])


def test_the_trained_head_separates_the_classes_on_new_images(setup):
    tmp, _cfg, out = setup
    head = HeadPredictor.load(out)
    assert head.classes == ("c0", "c1", "c2", "c3")
    hits = []
    for i in range(4):
        img, lab = _load(tmp / "data", "val", i)
        probs = head.probs([img])[0]
        assert probs.shape == (4, 56, 70)
        np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
        labelled = lab != 255
        hits.append(np.mean(probs.argmax(0)[labelled] == lab[labelled]))
    assert np.mean(hits) > 0.5  # four classes: chance is 0.25


def test_prob_takes_the_class_by_name_and_rejects_unknown_ones(setup):
    tmp, _, out = setup
    head = HeadPredictor.load(out)
    img, _ = _load(tmp / "data", "val", 0)
    (p,) = head.prob([img], "C1")
    np.testing.assert_array_equal(p, head.probs([img])[0][1])
    (pred,) = head.predict([img], "c1")
    np.testing.assert_array_equal(pred.mask, p > head.threshold)
    assert head.label_counts == {"c0": 12, "c1": 12, "c2": 12, "c3": 12}  # fit + held back
    assert head.serves("C1", min_labels=12) and not head.serves("c1", min_labels=13)
    assert not head.serves("sky", min_labels=0)
    with pytest.raises(InputError, match="does not know class 'sky'"):
        head.prob([img], "sky")
    with pytest.raises(InputError, match="RGB"):
        head.prob([img[..., 0]], "c1")


def test_a_few_shot_predictor_and_the_head_encode_an_image_once(setup):
    tmp, _, out = setup
    cache = FeatureCache()
    backbone = HeadPredictor.load(out).encoder.backbone
    fs = CachedPredictor(FewShotPredictor(build_segmenter("prototype"), backbone,
                                          image_size=70), cache)
    head = HeadPredictor.load(out, backbone, cache=cache)
    img, lab = _load(tmp / "data", "val", 1)
    fs.set_support([img], [lab == 0])
    fs.predict([img])
    misses = cache.stats.misses
    alone = HeadPredictor.load(out).prob([img], "c0")[0]
    shared = head.prob([img], "c0")[0]
    assert cache.stats.misses == misses  # the head found the query's features in the cache
    np.testing.assert_allclose(shared, alone, atol=1e-6)
    given = head.prob([img], "c0", feats=[head.features_of(img)])[0]
    np.testing.assert_allclose(given, alone, atol=1e-6)
    with pytest.raises(InputError, match="feature tensors"):
        head.prob([img], "c0", feats=[head.features_of(img)[:1]])


def test_warm_start_grows_a_new_class_and_keeps_the_old_ones(setup, tmp_path):
    tmp, cfg, out = setup
    labels = tmp_path / "labels"
    (labels / "train" / "images").mkdir(parents=True)
    (labels / "train" / "masks").mkdir(parents=True)
    (labels / "classes.json").write_text(json.dumps({"classes": {"0": "c1", "1": "bar"},
                                                     "ignore_index": 255}))
    for i in range(3):  # the annotator's one-class labels: "bar" = class c3's bars, renamed
        img, lab = _load(tmp / "data", "train", i)
        Image.fromarray(img).save(labels / "train" / "images" / f"l{i}.png")
        Image.fromarray(np.where(lab == 3, 1, 255).astype(np.uint8)).save(
            labels / "train" / "masks" / f"l{i}.png")
    warm = replace(cfg, data=(*cfg.data, str(labels)), init=str(out), steps=20)
    grown = train_head(warm, tmp_path / "grown")
    head, _ = load_head(grown)
    assert head.classes == ("c0", "c1", "c2", "c3", "bar")
    metrics = json.loads((grown / "metrics.json").read_text())
    assert metrics["carried_classes"] == 4 and metrics["labels_per_class"]["bar"] == 3
    with pytest.raises(InputError, match="kind, blocks"):
        train_head(replace(warm, kind="mlp"), tmp_path / "bad")


def test_the_cli_trains_and_compares(setup, tmp_path):
    from dinoseg.cli import main

    tmp, cfg, out = setup
    rc = main(["heads", "train", "--data", f"{tmp / 'data'}:train", "--out",
               str(tmp_path / "h"), f"backbone={cfg.backbone}", "layers=[1, 2]", "blocks=[2]",
               "image_size=70", "steps=5", "eval_every=5", "threads=1"])
    assert rc == 0 and is_head_checkpoint(tmp_path / "h")
    report = tmp_path / "r.json"
    rc = main(["heads", "eval", "--model", str(out), "--fewshot", "prototype", "--backbone",
               cfg.backbone, "--image-size", "70", "--fuse", "1.0", "--fuse", "0.5",
               "--data", str(tmp / "data"), "--episodes", "6", "--out", str(report)])
    assert rc == 0
    models = json.loads(report.read_text())["models"]
    assert list(models) == ["prototype", "head:head", "head:head*1+prototype",
                            "head:head*0.5+prototype"]
    assert all(m["episodes"] == 6 for m in models.values())
    thresholds = json.loads(report.read_text())["thresholds"]
    assert thresholds["prototype"] == 0.5 and thresholds["head:head"] == FUSION_THRESHOLD
    assert models["head:head*1+prototype"]["miou"] == models["head:head"]["miou"]
    assert main(["heads", "eval", "--model", str(tmp_path / "nope"), "--backbone",
                 cfg.backbone, "--data", str(tmp / "data"), "--out", str(report)]) == 2

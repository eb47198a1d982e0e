"""compare(): few-shot predictors give exactly their `evaluate` figures; heads get the class
by name; fusions mix probabilities."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dinoseg.backbone import DinoBackbone
from dinoseg.data import EpisodeSampler, FolderDataset
from dinoseg.eval.protocol import evaluate
from dinoseg.heads.compare import Fusion, compare, fewshot_learner
from dinoseg.io import InputError
from dinoseg.models.build import build_segmenter
from dinoseg.predictor import FewShotPredictor
from tests.conftest import tiny_dinov2, write_synthetic_dataset


@pytest.fixture
def data(tmp_path):
    torch.set_num_threads(1)
    write_synthetic_dataset(tmp_path / "d", n_train=2, n_val=6)
    ds = FolderDataset(tmp_path / "d", "val", cache_dir=tmp_path / "cache")
    sampler = EpisodeSampler(ds, None, shots=1, n_episodes=8, seed=3, min_area=0.01)
    backbone = DinoBackbone(tiny_dinov2(), (1, 2), spec="tiny")
    return ds, sampler, backbone


def test_a_few_shot_predictor_scores_as_under_evaluate(data):
    ds, sampler, backbone = data
    proto = FewShotPredictor(build_segmenter("prototype"), backbone, image_size=70)
    report = evaluate({"p": proto}, sampler, class_names=ds.class_names, progress=False).report
    ours = compare({"p": fewshot_learner(proto)}, sampler, ds.class_names)["models"]["p"]
    theirs = report["models"]["p"]["metrics"]
    assert ours["miou"] == pytest.approx(theirs["miou"])
    assert ours["fb_iou"] == pytest.approx(theirs["fb_iou"])
    assert ours["per_class"] == theirs["per_class"]


def test_learners_get_the_class_by_name_and_fusions_mix(data):
    ds, sampler, _ = data
    seen = []

    def oracle(ep, name):  # the episode's class by name -> the true mask
        seen.append(name)
        return (ep["query_mask"] == 1).astype(np.float32)

    def empty(ep, name):
        return np.zeros(ep["query_mask"].shape, np.float32)

    fusions = {"half": Fusion("oracle", "empty", 0.5), "most": Fusion("oracle", "empty", 0.75)}
    models = compare({"oracle": oracle, "empty": empty}, sampler, ds.class_names,
                     fusions=fusions, thresholds={"half": 0.4})["models"]
    assert set(seen) <= {"c0", "c1", "c2", "c3"} and len(seen) == 8
    assert models["oracle"]["miou"] == 100.0 and models["empty"]["miou"] == 0.0
    assert models["most"]["miou"] == 100.0  # 0.75 > 0.5
    assert models["half"]["miou"] == 100.0  # 0.5 > its threshold 0.4
    with pytest.raises(InputError, match="must both be learners"):
        compare({"oracle": oracle}, sampler, ds.class_names, fusions=fusions)
    with pytest.raises(InputError, match="fusion weight"):
        Fusion("a", "b", 1.5)


def test_fuse_mixes_two_probabilities_of_one_image():
    from dinoseg.heads.predict import fuse

    head, fewshot = np.full((2, 3), 0.8, np.float32), np.full((2, 3), 0.4, np.float32)
    np.testing.assert_allclose(fuse(head, fewshot, 0.75), 0.7)
    np.testing.assert_allclose(fuse(head, fewshot, 0.0), fewshot)
    with pytest.raises(InputError, match="pixels"):
        fuse(head, fewshot[:1])
    with pytest.raises(InputError, match="fusion weight"):
        fuse(head, fewshot, -0.1)

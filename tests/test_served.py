"""The served system: few-shot predictor + support memory + a supervised head, fused for the
classes the head serves, encoding each image once."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dinoseg.checkpoint import CheckpointConfig, save_checkpoint
from dinoseg.heads import HeadTrainConfig, train_head
from dinoseg.heads.predict import FUSION_THRESHOLD, FUSION_WEIGHT
from dinoseg.models.build import build_segmenter
from dinoseg.served import HEAD_DIR, ServedPredictor, load_served
from tests.conftest import tiny_dinov2, write_synthetic_dataset


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """A prototype checkpoint on a tiny backbone with a trained head in ``head/``."""
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("served")
    write_synthetic_dataset(tmp / "data", n_train=12, n_val=4)
    tiny_dinov2(layers=2).save_pretrained(tmp / "bb")
    cfg = HeadTrainConfig(data=(f"{tmp / 'data'}:train",), backbone=str(tmp / "bb"),
                          layers=(1, 2), blocks=(2,), image_size=70, steps=60, batch_size=4,
                          lr=1e-2, eval_every=20, val_fraction=0.4, min_val_images=2,
                          threads=1, threshold=FUSION_THRESHOLD)  # fmt: skip
    ckpt = tmp / "model"
    save_checkpoint(ckpt, build_segmenter("prototype"),
                    CheckpointConfig(arch="prototype", backbone=str(tmp / "bb"), layers=[1, 2],
                                     image_size=70))  # fmt: skip
    train_head(cfg, tmp / "head")
    shutil.copytree(tmp / "head", ckpt / HEAD_DIR)
    return tmp


def _val(root: Path, i: int) -> tuple[np.ndarray, np.ndarray]:
    img = np.asarray(Image.open(root / "data/val/images" / f"{i:03d}.png").convert("RGB"))
    return img, np.asarray(Image.open(root / "data/val/masks" / f"{i:03d}.png"))


def test_a_bundle_loads_with_its_head_and_fuses_for_served_classes(bundle: Path) -> None:
    served = load_served(str(bundle / "model"))
    assert served.head is not None and served.image_size == 70
    served.min_labels = 1  # the tiny dataset has few images per class
    img, lab = _val(bundle, 0)
    q, _ = _val(bundle, 1)
    served.set_support([img], [lab == 0], class_name="c0")
    assert served.serves("c0")
    cache = served.fewshot.cache
    (fused,) = served.predict([q])
    assert cache.stats.misses == 2  # support + query: the head read the query from the cache
    served.fewshot.class_name = "c0"
    (alone,) = served.fewshot.predict([q])
    head = served.head.prob([q], "c0")[0]
    np.testing.assert_allclose(fused.prob, FUSION_WEIGHT * head + (1 - FUSION_WEIGHT) * alone.prob,
                               atol=1e-5)  # fmt: skip
    np.testing.assert_array_equal(fused.mask, fused.prob > FUSION_THRESHOLD)


def test_without_a_served_class_the_few_shot_answer_stands(bundle: Path) -> None:
    served = load_served(str(bundle / "model"))
    img, lab = _val(bundle, 0)
    q, _ = _val(bundle, 2)
    for name in (None, "unknown-class"):
        served.set_support([img], [lab == 0], class_name=name)
        assert not served.serves(name)
        (pred,) = served.predict([q])
        (plain,) = served.fewshot.predict([q])
        np.testing.assert_array_equal(pred.prob, plain.prob)
    served.min_labels = 10**6  # a known class with too few labels stays few-shot
    assert not served.serves("c0")
    no_head = ServedPredictor(served.fewshot)
    assert not no_head.serves("c0") and no_head.model_id == served.model_id
    no_head.model_id = "v7"
    assert served.fewshot.model_id == "v7"

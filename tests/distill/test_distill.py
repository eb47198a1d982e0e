"""Adapter distillation end to end with a tiny random teacher and a tiny random DINOv2."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from dinoseg.distill.loop import DistillConfig, teacher_content
from dinoseg.distill.run import run_distillation
from dinoseg.train.loop import TrainConfig
from dinoseg.train.run import init_from, run_training
from tests.conftest import tiny_dinov2, write_synthetic_dataset


def _cfg(tmp_path, **kw):
    write_synthetic_dataset(tmp_path / "data")
    tiny_dinov2(layers=2).save_pretrained(tmp_path / "bb")
    base = dict(data=str(tmp_path / "data"), backbone=str(tmp_path / "bb"), layers=(1, 2),
                arch="fsdino-tiny", teacher="tiny-random", teacher_options={"embed_dim": 32},
                sizes=(56, 70), steps_per_size=10, batch_size=3, lr=5e-3,
                teacher_cache=str(tmp_path / "tcache"), max_val_images=6)
    base.update(kw)
    return DistillConfig(**base)


def test_distillation_brings_the_adapter_to_the_teacher(tmp_path):
    out = run_distillation(_cfg(tmp_path), tmp_path / "distilled")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["val_distilled"]["mse"] < 0.5 * metrics["val_untrained"]["mse"]
    assert metrics["val_distilled"]["cosine"] > metrics["val_untrained"]["cosine"]
    assert [s["size"] for s in metrics["stages"]] == [56, 70]
    assert (out / "resolved_config.json").is_file() and (out / "MODEL_CARD.md").is_file()
    # teacher embeddings were cached on disk, keyed per image
    assert len(list((tmp_path / "tcache").rglob("*.safetensors"))) == 10 + 6


def test_training_starts_from_the_distilled_adapter(tmp_path):
    distilled = run_distillation(_cfg(tmp_path, steps_per_size=2), tmp_path / "d")
    cfg = TrainConfig(data=str(tmp_path / "data"), backbone=str(tmp_path / "bb"), layers=(1, 2),
                      arch="fsdino-tiny", image_size=70, steps=2, epoch_steps=2, batch_size=2,
                      val_episodes=2, warmup_steps=1, min_area=0.01, init=str(distilled))
    out = run_training(cfg, tmp_path / "t")
    card = (out / "MODEL_CARD.md").read_text()
    assert f"Adapter initialised from: {distilled}" in card
    assert "Teacher: `tiny-random`" in card and "for tests only" in card  # the teacher's note
    assert "Random weights" in (distilled / "MODEL_CARD.md").read_text()
    from dinoseg.models import build_segmenter

    fresh = build_segmenter("fsdino-tiny", num_layers=2)
    assert init_from(fresh, str(distilled)) > 0
    ref = load_file(str(distilled / "model.safetensors"))
    for k, v in fresh.state_dict().items():
        if k.startswith("adapter."):
            torch.testing.assert_close(v, ref[k])


def test_teacher_content_cells():
    assert teacher_content((360, 480), 256, 64) == (48, 64)  # 4:3 image in a 256 square
    assert teacher_content((480, 360), 256, 64) == (64, 48)


def test_every_registered_teacher_has_a_model_card_note():
    from dinoseg.teachers import TEACHER_NOTES, TEACHER_REGISTRY

    assert set(TEACHER_NOTES) == set(TEACHER_REGISTRY)
    assert "medical" in TEACHER_NOTES["litemedsam"]

"""The loop simulation's parts: strategies, the scenario and its base, the oracle, the rounds,
the report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dinoseg.io import InputError
from mlops.loop.oracle import Oracle
from mlops.loop.report import merge_reports, plot_curve, summarise, write_report
from mlops.loop.rounds import Learned, run_rounds
from mlops.loop.scenario import Scenario, derive_base
from mlops.loop.strategies import Candidate, pick
from tests.conftest import write_synthetic_dataset


def _cands(n: int) -> list[Candidate]:
    return [Candidate(f"r{i}", f"img{i}", "c1", confidence=i / n, query=f"q{i}") for i in range(n)]


def test_strategies_pick_what_they_promise() -> None:
    rng = np.random.default_rng(0)
    cands = _cands(20)
    assert [c.result_id for c in pick("uncertainty", cands, 3, rng)] == ["r0", "r1", "r2"]
    done = {("img0", "c1"), ("img1", "c1")}
    assert [c.result_id for c in pick("uncertainty", cands, 2, rng, done)] == ["r2", "r3"]
    a = pick("random", cands, 5, np.random.default_rng(1))
    b = pick("random", cands, 5, np.random.default_rng(1))
    assert a == b and len({c.result_id for c in a}) == 5
    assert a != pick("random", cands, 5, np.random.default_rng(2))
    # several classes: each gets its share, least confident first within each
    mixed = [Candidate(f"m{i}", f"img{i}", "weak" if i < 10 else "strong", confidence=i / 20)
             for i in range(20)]  # fmt: skip
    got = [c.result_id for c in pick("balanced", mixed, 4, rng)]
    assert got == ["m0", "m10", "m1", "m11"]
    assert [c.result_id for c in pick("uncertainty", mixed, 4, rng)] == ["m0", "m1", "m2", "m3"]
    # two clusters of near-identical frames: diverse takes one of each, uncertainty does not
    far = {f"q{i}": np.array([1.0, 0.01 * i]) if i % 2 else np.array([0.0, 1.0 + 0.01 * i])
           for i in range(20)}  # fmt: skip
    picked = pick("diverse", cands, 2, rng, describe=lambda q: far[q])
    assert {int(c.query[1:]) % 2 for c in picked} == {0, 1}
    with pytest.raises(InputError, match="descriptors"):
        pick("diverse", cands, 2, rng)
    with pytest.raises(InputError, match="unknown strategy"):
        pick("greedy", cands, 2, rng)
    with pytest.raises(InputError, match="budget"):
        pick("random", cands, 0, rng)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("loop") / "ds"
    write_synthetic_dataset(root, n_train=8, n_val=4)
    return root


def test_the_base_hides_the_scenario_classes(data: Path, tmp_path: Path) -> None:
    scen = Scenario.load(data, "train", data, "val", ["C1", "c3"], seed=0)
    assert scen.classes == ["c1", "c3"]
    for req in scen.requests:
        assert req.support not in req.queries and len(req.queries) == 7
    again = Scenario.load(data, "train", data, "val", ["c1", "c3"], seed=0)
    assert [r.support for r in again.requests] == [r.support for r in scen.requests]
    base = derive_base(scen, tmp_path / "base")
    classes = json.loads((base / "classes.json").read_text())["classes"]
    assert classes == {"0": "c0", "2": "c2"}
    mask = np.asarray(Image.open(base / "train" / "masks" / "000.png"))
    original = np.asarray(Image.open(data / "train" / "masks" / "000.png"))
    assert not np.isin(mask, [1, 3]).any() and (mask[original == 1] == 255).all()
    assert (mask[original == 2] == 2).all()
    assert (base / "train" / "images" / "000.png").is_symlink()
    with pytest.raises(InputError, match="not a class"):
        Scenario.load(data, "train", data, "val", ["unicorn"])


def test_the_oracle_draws_the_ground_truth_of_the_task_class(data: Path) -> None:
    from workers.labelstudio.convert import result_to_mask

    scen = Scenario.load(data, "train", data, "val", ["c2"])
    oracle = Oracle(scen)
    oracle.know("ab" * 32, "003")
    (region,) = oracle.result({"dinoseg_query_sha256": "ab" * 32, "class_name": "c2"})
    mask, label = result_to_mask(region)
    np.testing.assert_array_equal(mask, scen.truth(scen.pool, "003", "c2"))
    assert label == "c2"
    with pytest.raises(InputError, match="does not know the image"):
        oracle.result({"dinoseg_query_sha256": "cd" * 32, "class_name": "c2"})
    with pytest.raises(InputError, match="does not label class"):
        oracle.result({"dinoseg_query_sha256": "ab" * 32, "class_name": "c0"})


class Scripted:
    """A driver whose system improves with labels and whose second round fails."""

    def __init__(self) -> None:
        self.labels, self.calls = 0, 0

    def segment_pool(self, scen):
        return _cands(12)

    def annotate(self, scen, picked):
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("retrain failed mid-way")
        self.labels += len(picked)
        return Learned(len(picked), str(self.calls), [])

    def test(self, scen):
        tell = {"c1": 11.0 + self.labels, "c2": float("nan")}  # NaN: no image of c2 there
        scores = {"all": {"c1": 10.0 + self.labels, "c2": 20.0}, "choose": {}, "tell": tell}
        return scores, str(self.calls) if self.calls else None


def test_rounds_report_failures_and_keep_going(data: Path) -> None:
    scen = Scenario.load(data, "train", data, "val", ["c1"])
    seen = []
    rows = run_rounds(Scripted(), scen, "uncertainty", 3, 4, 0, seen.append)
    assert rows == seen and [r["round"] for r in rows] == [0, 1, 2, 3]
    assert [r["labels"] for r in rows] == [0, 4, 4, 8]
    assert rows[0]["miou"] == 15.0 and rows[1]["miou"] == 17.0 and rows[3]["miou"] == 19.0
    assert rows[2]["errors"] == ["RuntimeError: retrain failed mid-way"]
    assert rows[2]["champion"] == "2" and rows[0]["champion"] is None
    assert rows[3]["parts"]["tell"]["miou"] == 19.0 and rows[3]["parts"]["choose"]["miou"] is None
    summary = summarise({"uncertainty": rows})["uncertainty"]["parts"]
    assert summary["tell"]["miou_mean"] == [11.0, 15.0, 15.0, 19.0]


def test_the_report_averages_seeds_and_draws_the_curve(tmp_path: Path) -> None:
    rows = [{"round": r, "labels": 10 * r, "miou": m, "seed": s, "class_iou": {}}
            for s, ms in ((0, (30.0, 40.0)), (1, (32.0, 46.0))) for r, m in enumerate(ms)]
    report = {"classes": ["sky"], "test": "t", "mode": "in-process",
              "strategies": {"random": rows}}  # fmt: skip
    s = summarise(report["strategies"])["random"]
    assert s["labels"] == [0.0, 10.0] and s["miou_mean"] == [31.0, 43.0]
    assert math.isclose(s["miou_std"][1], 3.0) and s["seeds"] == [0, 1]
    written = json.loads(write_report(tmp_path, report).read_text())
    assert written["summary"]["random"]["miou_mean"] == [31.0, 43.0]
    png = plot_curve(tmp_path, report)
    assert png.stat().st_size > 1000


def test_reports_of_separate_runs_merge(tmp_path: Path) -> None:
    def one(seed: int, miou: float, test: str = "t") -> Path:
        rows = [{"round": 0, "labels": 0, "miou": miou, "seed": seed, "class_iou": {}}]
        report = {"classes": ["sky"], "test": test, "pool": "p", "mode": "in-process",
                  "settings": {"seeds": [seed]}, "strategies": {"random": rows}}  # fmt: skip
        return write_report(tmp_path / f"s{seed}{test}", report)

    merged = merge_reports([one(0, 30.0), one(1, 34.0)])
    assert merged["settings"]["seeds"] == [0, 1]
    assert summarise(merged["strategies"])["random"]["miou_mean"] == [32.0]
    with pytest.raises(InputError, match="test 'other' differs"):
        merge_reports([one(0, 30.0), one(2, 30.0, test="other")])
    with pytest.raises(InputError, match="not a readable loop report"):
        merge_reports([tmp_path / "missing.json"])


def test_the_test_score_takes_empty_masks_and_scores_each_half_apart(
    data: Path, tmp_path: Path
) -> None:
    """A served mask may find nothing (IoU 0, not an error: seed 2 of the README run stopped
    there); the first half of the test images chooses, the second tells."""
    from mlops.loop.requests import test_ious

    scen = Scenario.load(data, "train", data, "val", ["c1"], seed=0)
    stems = list(scen.test.stems)
    assert [scen.test_part(s) for s in stems] == ["choose"] * (len(stems) // 2) + ["tell"] * (
        len(stems) - len(stems) // 2)  # fmt: skip

    def segment(req, split, names):  # the truth on the first half, nothing on the second
        out = []
        for stem in names:
            truth = scen.truth(scen.test, stem, req.class_name)
            mask = truth if scen.test_part(stem) == "choose" else np.zeros_like(truth)
            Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / f"{stem}.png")
            out.append({"mask": str(tmp_path / f"{stem}.png")})
        return out

    ious = test_ious(scen, segment)
    assert ious["choose"]["c1"] == 100.0 and ious["tell"]["c1"] == 0.0
    assert 0.0 < ious["all"]["c1"] < 100.0

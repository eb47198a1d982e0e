from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from dinoseg.cli import main

CAR = 8


def _args(camvid, out, *extra):
    v = camvid / "val"
    return [
        "predict",
        "--support",
        str(v / "images/0016E5_07959.jpg"),
        str(v / "masks/0016E5_07959.png"),
        "--class-id",
        str(CAR),
        "--query",
        str(v / "images/0016E5_07977.jpg"),
        str(v / "images/0016E5_08019.jpg"),
        "--out",
        str(out),
        *extra,
    ]


def test_predict_writes_masks_and_json(camvid, tmp_path, capsys):
    assert main(_args(camvid, tmp_path / "o", "--overlay")) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert [r["query"].rsplit("/", 1)[1] for r in lines] == ["0016E5_07977.jpg", "0016E5_08019.jpg"]
    for rec in lines:
        mask = np.asarray(Image.open(rec["mask"]))
        assert mask.shape == (360, 480) and set(np.unique(mask)) <= {0, 255}
        assert 0.0 <= rec["confidence"] <= 1.0
        assert Image.open(rec["overlay"]).size == (480, 360)
        stem = rec["query"].rsplit("/", 1)[1][:-4]
        gt = np.asarray(Image.open(camvid / "val/masks" / f"{stem}.png")) == CAR
        iou = (gt & (mask > 0)).sum() / max(1, (gt | (mask > 0)).sum())
        # the baseline finds the cars: well above marking everything (IoU = car fraction)
        assert iou > max(0.12, 2 * gt.mean()), f"{stem}: car IoU {iou:.2f}"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda a, t: a.__setitem__(2, str(t / "missing.jpg")), "file not found"),
        (lambda a, t: a.__setitem__(5, "3000"), "no class 3000"),
        (lambda a, t: a.__setitem__(3, str(t / "small.png")), "must match"),
        (lambda a, t: a.__setitem__(7, str(t / "junk.jpg")), "not a readable image"),
    ],
)
def test_bad_input_exit_2_with_message(camvid, tmp_path, capsys, mutate, message):
    Image.fromarray(np.ones((20, 20), np.uint8)).save(tmp_path / "small.png")
    (tmp_path / "junk.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    args = _args(camvid, tmp_path / "o")
    mutate(args, tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()  # nothing half-written


def test_entry_point_subprocess_no_traceback(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "dinoseg.cli",
            "predict",
            "--support",
            str(tmp_path / "a.jpg"),
            str(tmp_path / "a.png"),
            "--query",
            str(tmp_path / "q.jpg"),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2
    assert "file not found" in r.stderr and "Traceback" not in r.stderr

import json
from pathlib import Path

import pytest

from dinoseg.cli import main
from dinoseg.data.folder import FolderDataset
from dinoseg.data.split import in_val, split_dataset
from dinoseg.io import InputError
from tests.conftest import write_synthetic_dataset


def test_split_is_deterministic_disjoint_and_complete(tmp_path: Path) -> None:
    write_synthetic_dataset(tmp_path / "src", n_train=40, n_val=2)
    counts = split_dataset(tmp_path / "src", tmp_path / "out", val_fraction=0.25, seed=3)
    train = FolderDataset(tmp_path / "out", "train")
    val = FolderDataset(tmp_path / "out", "val")
    stems_t = {p.stem for p in (tmp_path / "out/train/images").iterdir()}
    stems_v = {p.stem for p in (tmp_path / "out/val/images").iterdir()}
    assert counts == {"train": len(train), "val": len(val)}
    assert not stems_t & stems_v and len(stems_t | stems_v) == 40
    assert stems_v == {s for s in stems_t | stems_v if in_val(s, 0.25, 3)}
    assert 4 <= len(stems_v) <= 18  # about a quarter of 40
    assert (tmp_path / "out/train/images" / f"{min(stems_t)}.png").is_symlink()
    record = json.loads((tmp_path / "out/split.json").read_text())
    assert record["counts"] == counts and record["seed"] == 3
    # the same call again gives the same split (and replaces its own previous output)
    assert split_dataset(tmp_path / "src", tmp_path / "out", val_fraction=0.25, seed=3) == counts


def test_split_refuses_bad_input_without_writing(tmp_path: Path) -> None:
    write_synthetic_dataset(tmp_path / "src", n_train=4, n_val=2)
    with pytest.raises(InputError, match="val_fraction"):
        split_dataset(tmp_path / "src", tmp_path / "out", val_fraction=1.5)
    (tmp_path / "mine").mkdir()
    with pytest.raises(InputError, match="not made by"):
        split_dataset(tmp_path / "src", tmp_path / "mine")
    with pytest.raises(InputError, match=r"no image/mask pairs|no such|missing"):
        split_dataset(tmp_path / "src", tmp_path / "out", split="test")
    assert not (tmp_path / "out").exists()


def test_split_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_synthetic_dataset(tmp_path / "src", n_train=10, n_val=2)
    assert main(["split", "--data", str(tmp_path / "src"), "--out", str(tmp_path / "o")]) == 0
    assert "train" in capsys.readouterr().out
    assert main(["split", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "p")]) == 2

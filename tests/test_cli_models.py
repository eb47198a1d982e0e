from __future__ import annotations

import re

from dinoseg.cli import main


def test_models_lists_parameter_counts(capsys):
    assert main(["models", "fsdino-s"]) == 0
    out = capsys.readouterr().out
    total = int(re.search(r"fsdino-s\s+([\d,]+) trainable", out).group(1).replace(",", ""))
    parts = [int(n.replace(",", "")) for n in re.findall(r"^\s+\w+\s+([\d,]+)$", out, re.M)]
    assert 4_000_000 < total < 6_500_000
    assert len(parts) == 4 and sum(parts) == total


def test_unknown_model_is_a_clear_error(capsys):
    assert main(["models", "fsdino-xl"]) == 2
    assert "unknown model 'fsdino-xl'" in capsys.readouterr().err

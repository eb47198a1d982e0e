"""``dinoseg aerial``'s device: checked with the rest of its config, before any work."""

from __future__ import annotations

import pytest
import torch

from dinoseg.io import InputError


def test_aerial_config_checks_its_device(monkeypatch: pytest.MonkeyPatch) -> None:
    from dinoseg.aerial.config import AerialConfig

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError, match="device cuda: CUDA is not available"):
        AerialConfig(device="cuda").check()
    AerialConfig(device="cpu").check()

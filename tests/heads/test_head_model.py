"""The head module: shapes, seeding, warm start (classes grown, old outputs kept)."""

from __future__ import annotations

import pytest
import torch

from dinoseg.heads.model import HeadSpec, SegHead, build_head, grow_from
from dinoseg.io import InputError


def _feats(blocks: int = 1, b: int = 2, c: int = 8, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, c, 3, 5, generator=g) for _ in range(blocks)]


@pytest.mark.parametrize("kind", ["linear", "mlp", "conv"])
def test_every_kind_gives_one_logit_per_class_and_patch(kind):
    spec = HeadSpec(kind=kind, blocks=(1, 2), dim=8, classes=("a", "b", "c"), hidden=6)
    out = build_head(spec)(_feats(blocks=2))
    assert out.shape == (2, 3, 3, 5)


def test_bad_specs_are_one_line_errors():
    with pytest.raises(InputError, match="head kind"):
        HeadSpec(kind="transformer", blocks=(1,), dim=8, classes=("a",))
    with pytest.raises(InputError, match="repeat"):
        HeadSpec(kind="linear", blocks=(1,), dim=8, classes=("a", "a"))
    with pytest.raises(InputError, match="at least one"):
        HeadSpec(kind="linear", blocks=(), dim=8, classes=("a",))


def test_build_is_seeded_and_leaves_the_global_generator_alone():
    spec = HeadSpec(kind="mlp", blocks=(1,), dim=8, classes=("a", "b"), hidden=4)
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a, b = build_head(spec, seed=1), build_head(spec, seed=1)
    assert torch.equal(torch.rand(1), expected_next)
    c = build_head(spec, seed=2)
    for (k, x), y, _z in zip(a.state_dict().items(), b.state_dict().values(),
                            c.state_dict().values(), strict=True):
        assert torch.equal(x, y), k
    assert not torch.equal(a.out.weight, c.out.weight)


def test_statistics_standardise_the_input():
    spec = HeadSpec(kind="linear", blocks=(1,), dim=8, classes=("a",))
    head = build_head(spec)
    x = _feats()
    shifted = [x[0] * 3.0 + 5.0]
    head.set_statistics(torch.full((8,), 5.0), torch.full((8,), 3.0))
    plain = build_head(spec)
    torch.testing.assert_close(head(shifted), plain(x))


def test_warm_start_keeps_old_classes_and_adds_new_rows():
    old = build_head(HeadSpec(kind="mlp", blocks=(1,), dim=8, classes=("road", "sky"), hidden=4))
    old.set_statistics(torch.rand(8), torch.rand(8) + 0.5)
    new = build_head(HeadSpec(kind="mlp", blocks=(1,), dim=8, classes=("car", "road", "sky"),
                              hidden=4), seed=5)
    assert grow_from(new, old) == 2
    old.eval(), new.eval()
    x = _feats()
    torch.testing.assert_close(new(x)[:, 1:], old(x))  # road and sky: the same logits
    assert torch.all(new.out.weight[0] == 0)
    with torch.no_grad():
        torch.testing.assert_close(new(x)[:, 0], torch.full((2, 3, 5), float(old.out.bias.mean())))


def test_warm_start_refuses_other_shapes_and_dropped_classes():
    old = SegHead(HeadSpec(kind="linear", blocks=(1,), dim=8, classes=("road", "sky")))
    with pytest.raises(InputError, match="drops"):
        grow_from(SegHead(HeadSpec(kind="linear", blocks=(1,), dim=8, classes=("road",))), old)
    with pytest.raises(InputError, match="kind, blocks"):
        grow_from(SegHead(HeadSpec(kind="mlp", blocks=(1,), dim=8, classes=("road", "sky"))),
                  old)
    with pytest.raises(InputError, match="kind, blocks"):
        grow_from(SegHead(HeadSpec(kind="linear", blocks=(2,), dim=8, classes=("road", "sky"))),
                  old)


def test_spec_round_trips_through_a_dict():
    spec = HeadSpec(kind="conv", blocks=(9, 10), dim=384, classes=("a", "b"), hidden=32)
    assert HeadSpec.from_dict(spec.as_dict()) == spec


def _images(n: int = 6) -> list:
    from dinoseg.heads.data import LabelledImage

    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        target = torch.zeros(2, 3, 5)
        target[i % 2] = 1.0
        feats = [torch.randn(8, 3, 5, generator=g) + 3.0 * (i % 2)]
        out.append(LabelledImage(str(i), str(i), feats, target, torch.ones(3, 5),
                                 frozenset({i % 2})))
    return out


def test_fit_is_seeded_learns_and_keeps_the_best_validation_step():
    from dinoseg.heads.fit import Schedule, feature_statistics, fit_head, patch_iou

    images = _images()
    spec = HeadSpec(kind="linear", blocks=(1,), dim=8, classes=("a", "b"))
    heads = []
    for seed in (0, 0, 1):
        head = build_head(spec)
        head.set_statistics(*feature_statistics(images[:4]))
        before = patch_iou(head, images[4:])["miou"]
        result = fit_head(head, images[:4], images[4:],
                          Schedule(steps=20, batch_size=2, lr=0.05, eval_every=5, seed=seed))
        heads.append(head)
    assert [h["step"] for h in result["history"]] == [5, 10, 15, 20]
    assert result["val"]["miou"] == max(h["val_miou"] for h in result["history"])
    assert result["val"]["miou"] == 100.0 and before is not None and before < 100.0
    assert torch.equal(heads[0].out.weight, heads[1].out.weight)
    assert not torch.equal(heads[0].out.weight, heads[2].out.weight)

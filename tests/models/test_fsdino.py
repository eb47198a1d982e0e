"""Behavioural tests of the FS-DINO few-shot segmenter and its parts."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from dinoseg.models import (
    SEGMENTER_REGISTRY,
    SERVED_ARCH,
    FSDINOSegmenter,
    SegmenterConfig,
    build_segmenter,
    count_parameters,
)
from dinoseg.models.conv4d import (
    CenterPivotConv4d,
    CorrelationEncoder,
    GroupNorm4d,
    channels_last_4d,
)
from dinoseg.models.prompts import prior_map

PATCH = 14
TINY_C, TINY_L = 32, 2


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    """The tiny tensors here gain nothing from intra-op threads, and OpenMP threads spinning
    against a busy 2-core machine slowed these tests down ~50x; restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _rect(h: int, w: int, top: int, left: int, hh: int, ww: int) -> Tensor:
    mask = torch.zeros(h, w)
    mask[top : top + hh, left : left + ww] = 1.0
    return mask


def _features(mask: Tensor, direction: Tensor, gen: torch.Generator) -> list[Tensor]:
    """(..., h, w) mask -> TINY_L layers of (..., C, h, w) noise + direction on foreground."""
    feats = []
    for _ in range(TINY_L):
        noise = torch.randn(*mask.shape[:-2], TINY_C, *mask.shape[-2:], generator=gen)
        feats.append(noise + 3.0 * direction[:, None, None] * mask.unsqueeze(-3))
    return feats


def _episode(
    b: int, k: int, q_hw: tuple[int, int], s_hw: tuple[int, int], seed: int = 0
) -> tuple[list[Tensor], list[Tensor], Tensor, Tensor]:
    """Synthetic episode; returns query_feats, support_feats, support_masks (image res),
    query target (B, h, w) at the feature grid."""
    gen = torch.Generator().manual_seed(seed)
    direction = F.normalize(torch.randn(TINY_C, generator=gen), dim=0)
    (h, w), (hs, ws) = q_hw, s_hw
    q_mask = _rect(h, w, h // 4, w // 3, h // 2, w // 3).expand(b, h, w)
    s_mask = _rect(hs, ws, 1, hs // 3, hs // 2, ws // 2).expand(b, k, hs, ws)
    query_feats = _features(q_mask, direction, gen)
    support_feats = _features(s_mask, direction, gen)
    masks = s_mask.repeat_interleave(PATCH, dim=-2).repeat_interleave(PATCH, dim=-1)
    return query_feats, support_feats, masks.contiguous(), q_mask.contiguous()


def _tiny(seed: int = 0) -> FSDINOSegmenter:
    torch.manual_seed(seed)
    model = build_segmenter("fsdino-tiny")
    assert isinstance(model, FSDINOSegmenter)
    return model


@pytest.mark.parametrize("k", [1, 3])
def test_output_shape_any_sizes(k: int) -> None:
    query_feats, support_feats, masks, _ = _episode(2, k, (16, 20), (18, 18))
    out = _tiny()(query_feats, support_feats, masks)
    assert out.shape == (2, 1, 64, 80)
    assert torch.isfinite(out).all()


def test_k_identical_supports_match_one_shot() -> None:
    model = _tiny().eval()
    query_feats, support_feats, masks, _ = _episode(1, 1, (12, 12), (10, 14), seed=1)
    rep = [s.expand(-1, 4, -1, -1, -1).contiguous() for s in support_feats]
    with torch.no_grad():
        one = model(query_feats, support_feats, masks)
        four = model(query_feats, rep, masks.expand(-1, 4, -1, -1))
    torch.testing.assert_close(four, one, rtol=1e-4, atol=1e-4)


def test_support_content_matters() -> None:
    model = _tiny().eval()
    query_feats, support_feats, masks, _ = _episode(1, 1, (12, 12), (12, 12), seed=2)
    with torch.no_grad():
        a = model(query_feats, support_feats, masks)
        b = model(query_feats, support_feats, masks.flip(-1))
    assert (a - b).abs().max() > 1e-3


def test_deterministic_in_eval() -> None:
    model = _tiny().eval()
    query_feats, support_feats, masks, _ = _episode(2, 2, (12, 12), (12, 12))
    with torch.no_grad():
        first = model(query_feats, support_feats, masks)
        second = model(query_feats, support_feats, masks)
    assert torch.equal(first, second)


def test_gradients_reach_every_part() -> None:
    model = _tiny()
    query_feats, support_feats, masks, _ = _episode(2, 2, (12, 12), (12, 12))
    model(query_feats, support_feats, masks).square().mean().backward()
    for part in (model.adapter, model.prompts, model.correlation, model.decoder):
        grads = [p.grad for p in part.parameters()]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), type(part).__name__


def test_empty_support_mask_gives_finite_output_and_grads() -> None:
    model = _tiny()
    query_feats, support_feats, masks, _ = _episode(2, 2, (12, 12), (12, 12))
    out = model(query_feats, support_feats, torch.zeros_like(masks))
    out.mean().backward()
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_tiny_model_overfits_one_episode() -> None:
    model = _tiny(seed=3)
    query_feats, support_feats, masks, target = _episode(1, 2, (12, 12), (10, 14), seed=3)
    target_up = target.repeat_interleave(4, -2).repeat_interleave(4, -1).unsqueeze(1)
    optim = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(100):
        loss = F.binary_cross_entropy_with_logits(
            model(query_feats, support_feats, masks), target_up
        )
        optim.zero_grad()
        loss.backward()
        optim.step()
    with torch.no_grad():
        pred = model.eval()(query_feats, support_feats, masks) > 0
    truth = target_up > 0.5
    iou = (pred & truth).sum() / (pred | truth).sum()
    assert iou > 0.9, f"IoU {iou:.3f}, final loss {loss.item():.4f}"


def test_fsdino_s_parameter_count() -> None:
    model = build_segmenter("fsdino-s")
    assert isinstance(model, FSDINOSegmenter)
    total = count_parameters(model)
    parts = {
        n: count_parameters(getattr(model, n))
        for n in ("adapter", "prompts", "correlation", "decoder")
    }
    print(f"fsdino-s trainable parameters: {total:,} {parts}")
    assert 4_000_000 <= total <= 6_500_000
    assert sum(parts.values()) == total
    assert count_parameters(model, trainable_only=False) >= total


def test_registry_and_unknown_name() -> None:
    assert {SERVED_ARCH, "fsdino-s", "fsdino-b", "fsdino-l", "fsdino-g", "fsdino-tiny",
            "fsdino-tiny-residual", "prototype"} <= set(SEGMENTER_REGISTRY)
    with pytest.raises(ValueError, match="fsdino-s"):
        build_segmenter("no-such-model")
    with pytest.raises(ValueError, match="unknown SegmenterConfig keys"):
        build_segmenter("fsdino-tiny", not_a_field=1)
    proto = build_segmenter("prototype")
    query_feats, support_feats, masks, _ = _episode(1, 1, (8, 8), (8, 8))
    assert proto(query_feats, support_feats, masks).shape[:2] == (1, 1)


def test_config_json_roundtrip_and_overrides() -> None:
    model = build_segmenter("fsdino-tiny", embed_layer=0)
    assert isinstance(model, FSDINOSegmenter)
    cfg = SegmenterConfig.from_dict(json.loads(json.dumps(model.config.to_dict())))
    assert cfg == model.config and cfg.embed_layer == 0 and cfg.name == "fsdino-tiny"
    with pytest.raises(ValueError):
        SegmenterConfig(num_layers=2, embed_layer=2)


def test_wrong_number_of_layers_raises() -> None:
    query_feats, support_feats, masks, _ = _episode(1, 1, (8, 8), (8, 8))
    with pytest.raises(ValueError, match="feature layers"):
        _tiny()(query_feats[:1], support_feats[:1], masks)


def test_center_pivot_conv4d_matches_naive_definition() -> None:
    torch.manual_seed(0)
    conv = CenterPivotConv4d(2, 3, kernel_size=3, support_stride=2)
    x = torch.randn(1, 2, 4, 5, 7, 6)
    out = conv(x)
    assert out.shape == (1, 3, 4, 5, 4, 3)
    padded = F.pad(x, (1, 1, 1, 1, 1, 1, 1, 1))  # pad all four spatial dims by 1
    assert conv.query_conv.bias is not None
    expected = torch.zeros_like(out) + conv.query_conv.bias.view(1, 3, 1, 1, 1, 1)
    for di in range(3):
        for dj in range(3):
            # query plane: shift (hq, wq), support centre at the strided positions
            xq = padded[:, :, di : di + 4, dj : dj + 5, 1:-1:2, 1:-1:2]
            expected += torch.einsum("oc,nchwab->nohwab", conv.query_conv.weight[:, :, di, dj], xq)
            # support plane: query centre, shifted strided support window
            xs = padded[:, :, 1:-1, 1:-1, di : di + 7 : 2, dj : dj + 6 : 2]
            expected += torch.einsum(
                "oc,nchwab->nohwab", conv.support_conv.weight[:, :, di, dj], xs
            )
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


def test_prior_map_is_max_similarity_to_foreground() -> None:
    query = torch.randn(1, 8, 3, 3)
    support = torch.randn(1, 2, 8, 3, 3)
    support[0, 1, :, 2, 2] = 2.0 * query[0, :, 1, 1]  # a fg pixel of shot 2 matches (1, 1)
    masks = torch.zeros(1, 2, 3, 3)
    masks[0, 1, 2, 2] = 1.0
    prior = prior_map(query, support, masks)
    assert prior.shape == (1, 1, 3, 3)
    assert prior[0, 0, 1, 1] == pytest.approx(1.0, abs=1e-5)
    assert prior.max() <= 1.0 + 1e-6
    assert prior_map(query, support, torch.zeros_like(masks)).abs().sum() == 0


def _random_rects(gen: torch.Generator, n: int, h: int, w: int) -> Tensor:
    """(n, h, w) masks, each one random axis-aligned rectangle of side >= 3."""
    masks = torch.zeros(n, h, w)
    for i in range(n):
        hh, ww = (int(torch.randint(3, d - 2, (1,), generator=gen)) for d in (h, w))
        top = int(torch.randint(0, h - hh + 1, (1,), generator=gen))
        left = int(torch.randint(0, w - ww + 1, (1,), generator=gen))
        masks[i, top : top + hh, left : left + ww] = 1.0
    return masks


def _random_episodes(
    gen: torch.Generator, b: int, hw: int = 10
) -> tuple[list[Tensor], list[Tensor], Tensor, Tensor]:
    """B one-shot episodes. Each has its own target and distractor directions; query and
    support both show a target and a distractor rectangle, only the support target is masked.
    Returns query_feats, support_feats, support_masks (image res), query target (B, h, w)."""
    dirs = F.normalize(torch.randn(b, 2, TINY_C, generator=gen), dim=-1)  # target, distractor

    def scene(n: int) -> tuple[Tensor, Tensor]:
        target = _random_rects(gen, n, hw, hw)
        distractor = _random_rects(gen, n, hw, hw) * (1.0 - target)
        return target, distractor

    def feats(target: Tensor, distractor: Tensor) -> Tensor:  # (B, h, w) -> (B, C, h, w)
        signal = dirs[:, 0, :, None, None] * target[:, None]
        signal = signal + dirs[:, 1, :, None, None] * distractor[:, None]
        return torch.randn(b, TINY_C, hw, hw, generator=gen) + 3.0 * signal

    (q_target, q_distractor), (s_target, s_distractor) = scene(b), scene(b)
    query_feats = [feats(q_target, q_distractor) for _ in range(TINY_L)]
    support_feats = [feats(s_target, s_distractor)[:, None] for _ in range(TINY_L)]
    masks = s_target[:, None].repeat_interleave(PATCH, -2).repeat_interleave(PATCH, -1)
    return query_feats, support_feats, masks, q_target


def _iou(logits: Tensor, target: Tensor) -> float:
    truth = F.interpolate(target[:, None], size=logits.shape[-2:], mode="nearest") > 0.5
    pred = logits > 0
    return float((pred & truth).sum() / (pred | truth).sum())


def test_tiny_model_learns_to_use_the_support() -> None:
    """Trained on random episodes (new target/distractor directions each), the model segments
    the target in unseen episodes, and fails when given another episode's support or when the
    support mask is ignored: it reads the support and its mask."""
    model, gen = _tiny(seed=0), torch.Generator().manual_seed(0)
    optim = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        query_feats, support_feats, masks, target = _random_episodes(gen, b=4)
        logits = model(query_feats, support_feats, masks)
        target_up = F.interpolate(target[:, None], size=logits.shape[-2:], mode="nearest")
        loss = F.binary_cross_entropy_with_logits(logits, target_up)
        optim.zero_grad()
        loss.backward()
        optim.step()
    query_feats, support_feats, masks, target = _random_episodes(gen, b=8)
    with torch.no_grad():
        matched = model.eval()(query_feats, support_feats, masks)
        other_feats = [s.roll(1, dims=0) for s in support_feats]  # another episode's support
        swapped = model(query_feats, other_feats, masks.roll(1, dims=0))
        unmasked = model(query_feats, support_feats, torch.ones_like(masks))
    print(
        f"IoU matched {_iou(matched, target):.3f} swapped {_iou(swapped, target):.3f} "
        f"unmasked {_iou(unmasked, target):.3f}"
    )
    assert _iou(matched, target) > 0.9
    assert _iou(swapped, target) < 0.3
    assert _iou(unmasked, target) < 0.8


def test_correlation_encoder_layout_agnostic_and_groupnorm_exact() -> None:
    torch.manual_seed(0)
    encoder = CorrelationEncoder(2, embed_dim=16, channels=(4, 8), strides=(2, 2))
    corr = torch.rand(2, 2, 5, 6, 7, 9)
    squeezed = encoder.squeeze(corr)
    assert squeezed.shape == (2, 8, 5, 6)
    torch.testing.assert_close(encoder.squeeze(channels_last_4d(corr)), squeezed)
    assert encoder(corr).shape == (2, 16, 5, 6)
    norm, reference = GroupNorm4d(4, 8), torch.nn.GroupNorm(4, 8)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    reference.load_state_dict(norm.state_dict())
    x = 3.0 * torch.randn(2, 8, 3, 4, 5, 2) + 1.0
    torch.testing.assert_close(norm(x), reference(x), rtol=1e-4, atol=1e-4)


def test_prototype_residual_starts_as_the_baseline():
    """With the residual on and the gate at 0 the segmenter equals the prototype baseline."""
    from dinoseg.models.prototype import PrototypeBaseline

    torch.manual_seed(0)
    model = build_segmenter("fsdino-tiny", prototype_residual=True).eval()
    b, k, c, h, w = 2, 2, 32, 6, 7
    q = [torch.randn(b, c, h, w) for _ in range(2)]
    s = [torch.randn(b, k, c, h, w) for _ in range(2)]
    m = (torch.rand(b, k, h * 14, w * 14) > 0.5).float()
    with torch.no_grad():
        ours = model(q, s, m)
        base = PrototypeBaseline(embed_layer=-1)(q, s, m)
    base = torch.nn.functional.interpolate(base, size=ours.shape[-2:], mode="bilinear")
    torch.testing.assert_close(torch.sigmoid(ours), torch.sigmoid(base), atol=2e-3, rtol=0)
    assert model.gate is not None and model.gate.requires_grad


def test_served_entry_is_fsdino_s_with_the_residual_and_strides_4_2_2():
    """The served recipe is a registry entry (the train/distill default): the same model, at
    the same seed the same weights, as fsdino-s with the two overrides params.yaml used to
    pass."""
    torch.manual_seed(0)
    served = build_segmenter(SERVED_ARCH)
    torch.manual_seed(0)
    by_hand = build_segmenter("fsdino-s", prototype_residual=True, corr_strides=(4, 2, 2))
    assert isinstance(served, FSDINOSegmenter) and served.config.name == SERVED_ARCH
    assert served.gate is not None and served.config.corr_strides == (4, 2, 2)
    assert served.config == SegmenterConfig.from_dict({**by_hand.config.to_dict(),
                                                       "name": SERVED_ARCH})
    a, b = served.state_dict(), by_hand.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    tiny = build_segmenter("fsdino-tiny-residual")
    assert tiny.gate is not None and tiny.config.corr_strides == (4, 2, 2)


def test_removed_options_in_old_configs_load_when_off_and_are_refused_when_on():
    """Checkpoints written before residual_zero_head / similarity_only were removed carry
    both at False: that config still builds; switched on, a clear error names the commit."""
    old = {**build_segmenter("fsdino-tiny").config.to_dict(), "residual_zero_head": False,
           "similarity_only": False}
    assert SegmenterConfig.from_dict(old) == build_segmenter("fsdino-tiny").config
    for key, commit in (("residual_zero_head", "bc47a30"), ("similarity_only", "ba2c05b")):
        with pytest.raises(ValueError, match=f"{key}=true was removed.*{commit}"):
            SegmenterConfig.from_dict({**old, key: True})

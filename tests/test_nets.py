"""Tests for torchrl_dreamerv3.nets: encoder, decoder and heads (SPEC §2, §4, §5)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from torchrl_dreamerv3.functional.symlog import symlog
from torchrl_dreamerv3.nets import (
    BinaryHead,
    BoundedNormalHead,
    CategoricalHead,
    MLPHead,
    MultiDecoder,
    MultiEncoder,
    SameStridedConv2d,
    TransposedConv2d,
    TwoHotHead,
    upsample2x,
)

PRESETS = {
    # rew/con/pol/val MLP layers; debug uses layers=1 everywhere
    "debug": dict(deter=8, stoch=2, classes=4, blocks=4, depth=2, units=8, layers=1, bins=5, head_layers=(1, 1, 1, 1)),
    "size1m": dict(deter=512, stoch=32, classes=4, blocks=8, depth=4, units=64, layers=3, bins=255, head_layers=(1, 1, 3, 3)),
    "size12m": dict(deter=2048, stoch=32, classes=16, blocks=8, depth=16, units=256, layers=3, bins=255, head_layers=(1, 1, 3, 3)),
}
IMG64, VEC17, IMG96 = {"image": (3, 64, 64)}, {"vector": (17,)}, {"image": (1, 96, 96)}
# obs, (discrete, actions), preset, enc, dec, rew, con, pol, val: counted on the reference (JAX) code
COUNTS = [
    (IMG64, (True, 6), "debug", 3_752, 6_339, 189, 153, 198, 189),
    (IMG64, (True, 6), "size1m", 14_304, 80_595, 57_663, 41_153, 49_926, 66_111),
    (IMG64, (True, 6), "size12m", 220_416, 1_272_003, 721_407, 656_129, 789_510, 853_503),
    (VEC17, (False, 6), "size1m", 9_664, 50_641, 57_663, 41_153, 50_316, 66_111),
    (VEC17, (False, 6), "size12m", 136_960, 792_337, 721_407, 656_129, 791_052, 853_503),
    (IMG96, (True, 18), "size1m", 13_904, 142_273, 57_663, 41_153, 50_706, 66_111),
]


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def latent(p: dict) -> tuple[int, int, int]:
    return p["deter"], p["stoch"], p["classes"]


def build(obs, action, preset, strided=False):
    p = PRESETS[preset]
    rew_l, con_l, pol_l, val_l = p["head_layers"]
    discrete, actions = action
    enc = MultiEncoder(obs, depth=p["depth"], layers=p["layers"], units=p["units"], strided=strided)
    # the decoder's block count is the reference's dec.bspace = 8 in every preset, not rssm.blocks
    dec = MultiDecoder(obs, *latent(p), depth=p["depth"], layers=p["layers"], units=p["units"], strided=strided)
    rew = TwoHotHead(*latent(p), rew_l, p["units"], bins=p["bins"])
    con = BinaryHead(*latent(p), con_l, p["units"])
    pol = (CategoricalHead if discrete else BoundedNormalHead)(*latent(p), pol_l, p["units"], actions)
    val = TwoHotHead(*latent(p), val_l, p["units"], bins=p["bins"])
    return enc, dec, rew, con, pol, val


def state(p: dict, *lead: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(*lead, p["deter"]), torch.randn(*lead, p["stoch"], p["classes"])


def images(*shape: int) -> torch.Tensor:
    return torch.randint(0, 256, shape, dtype=torch.uint8)


# ---------------------------------------------------------------------------------------------
# Parameter counts (equal to the reference)


@pytest.mark.parametrize("row", COUNTS, ids=lambda r: f"{list(r[0])[0]}-{r[2]}")
def test_parameter_counts_match_reference(row):
    obs, action, preset, *expected = row
    assert [count(m) for m in build(obs, action, preset)] == expected


@pytest.mark.parametrize("row", COUNTS, ids=lambda r: f"{list(r[0])[0]}-{r[2]}")
def test_strided_variants_have_reference_parameter_counts(row):
    # The reference's strided convs (plain stride 2 / transposed) use the same kernel shapes.
    obs, action, preset, enc, dec, *_ = row
    strided = build(obs, action, preset, strided=True)
    assert (count(strided[0]), count(strided[1])) == (enc, dec)


# ---------------------------------------------------------------------------------------------
# Shapes and dtypes

OBS_MIXED = {"cam": (3, 32, 48), "joints": (5,), "aux": (2,)}


@pytest.mark.parametrize("lead", [(3,), (2, 3)])
@pytest.mark.parametrize("strided", [False, True])
def test_encoder_shapes(lead, strided):
    enc = MultiEncoder(OBS_MIXED, depth=2, layers=1, units=8, strided=strided)
    assert enc.keys == ("cam", "joints", "aux")
    assert enc.out_features == 8 + (32 // 16) * (48 // 16) * 8
    out = enc(images(*lead, 3, 32, 48), torch.randn(*lead, 5), torch.randn(*lead, 2))
    assert out.shape == (*lead, enc.out_features) and out.dtype == torch.float32


@pytest.mark.parametrize("lead", [(3,), (2, 3)])
@pytest.mark.parametrize("strided", [False, True])
def test_decoder_shapes_and_range(lead, strided):
    p = PRESETS["debug"]
    dec = MultiDecoder(OBS_MIXED, *latent(p), depth=2, layers=1, units=8, strided=strided)
    assert dec.keys == ("cam", "joints", "aux")
    cam, joints, aux = dec(*state(p, *lead))
    assert cam.shape == (*lead, 3, 32, 48) and cam.dtype == torch.float32
    assert joints.shape == (*lead, 5) and aux.shape == (*lead, 2)
    assert ((cam > 0) & (cam < 1)).all()


@pytest.mark.parametrize("lead", [(3,), (2, 3)])
def test_head_shapes(lead):
    p = PRESETS["debug"]
    deter, stoch = state(p, *lead)
    assert TwoHotHead(*latent(p), 1, 8, bins=5)(deter, stoch).shape == (*lead, 5)
    assert BinaryHead(*latent(p), 1, 8)(deter, stoch).shape == (*lead, 1)
    assert CategoricalHead(*latent(p), 2, 8, actions=6)(deter, stoch).shape == (*lead, 6)
    mean, std = BoundedNormalHead(*latent(p), 2, 8, actions=3)(deter, stoch)
    assert mean.shape == std.shape == (*lead, 3)


def test_batch_dims_are_independent():
    p = PRESETS["debug"]
    enc = MultiEncoder(OBS_MIXED, depth=2, layers=1, units=8)
    dec = MultiDecoder(OBS_MIXED, *latent(p), depth=2, layers=1, units=8)
    obs = (images(2, 3, 3, 32, 48), torch.randn(2, 3, 5), torch.randn(2, 3, 2))
    full = enc(*obs)
    torch.testing.assert_close(enc(*(x[1, 2] for x in obs)), full[1, 2])
    deter, stoch = state(p, 2, 3)
    for a, b in zip(dec(deter, stoch), dec(deter[1], stoch[1])):
        torch.testing.assert_close(a[1], b)


# ---------------------------------------------------------------------------------------------
# Reference semantics


def _capture_input(module: torch.nn.Module) -> list[torch.Tensor]:
    seen = []
    module.register_forward_hook(lambda mod, args, out: seen.append(args[0].detach()))
    return seen


def test_encoder_preprocessing_and_key_order():
    obs = {"z_img": (2, 16, 16), "vec": (3,), "a_img": (1, 16, 16)}
    enc = MultiEncoder(obs, depth=2, layers=1, units=8)
    conv_in, mlp_in = _capture_input(enc.convs[0]), _capture_input(enc.mlp[0])
    z_img, a_img, vec = images(4, 2, 16, 16), images(4, 1, 16, 16), torch.randn(4, 3) * 10
    enc(z_img, vec, a_img)
    # images: sorted-key channel concat, x / 255 - 0.5; vectors: symlog
    expected = torch.cat([a_img, z_img], 1).float() / 255 - 0.5
    torch.testing.assert_close(conv_in[0], expected, rtol=0, atol=0)
    torch.testing.assert_close(mlp_in[0], symlog(vec), rtol=0, atol=0)
    raw = MultiEncoder({"vec": (3,)}, layers=1, units=8, symlog=False)
    raw_in = _capture_input(raw.mlp[0])
    raw(vec)
    torch.testing.assert_close(raw_in[0], vec, rtol=0, atol=0)


def test_encoder_tokens_are_vector_then_hwc_flattened_image():
    enc = MultiEncoder({"img": (3, 32, 32), "vec": (4,)}, depth=2, layers=1, units=8)
    last = []
    enc.norms[-1].register_forward_hook(lambda mod, args, out: last.append(out))  # SiLU(RMSNorm(x)), fused
    vec_out = []
    enc.mlp.register_forward_hook(lambda mod, args, out: vec_out.append(out))
    tokens = enc(images(5, 3, 32, 32), torch.randn(5, 4))
    torch.testing.assert_close(tokens[:, :8], vec_out[0])
    torch.testing.assert_close(tokens[:, 8:], last[0].permute(0, 2, 3, 1).reshape(5, -1))


def test_strided_encoder_conv_is_jax_same_padding():
    conv = SameStridedConv2d(3, 4, 5)
    x = torch.randn(2, 3, 16, 12)
    # JAX 'SAME' stride 2 (pad 1 before, 2 after) = stride-1 'SAME' sampled at odd positions
    expected = F.conv2d(x, conv.weight, conv.bias, padding=2)[..., 1::2, 1::2]
    torch.testing.assert_close(conv(x), expected)


def test_transposed_conv_matches_reference_construction():
    conv = TransposedConv2d(3, 4, 5)
    x = torch.randn(2, 3, 4, 6)
    up = x.repeat_interleave(2, -1).repeat_interleave(2, -2)
    keep = (torch.arange(up.shape[-2]) % 2 == 1)[:, None] & (torch.arange(up.shape[-1]) % 2 == 1)[None, :]
    expected = F.conv2d(up * keep, conv.weight, conv.bias, padding=2)
    torch.testing.assert_close(conv(x), expected)


def test_upsample_is_reference_repeat():
    x = torch.randn(2, 3, 4, 5).contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(upsample2x(x), x.repeat_interleave(2, -1).repeat_interleave(2, -2), rtol=0, atol=0)


def test_decoder_spatial_layout_matches_reference_rearrange():
    # x0 = rearrange(BlockLinear(deter), '(g h w c) -> h w (g c)'); x1 = Linear(stoch) as (h, w, c)
    dec = MultiDecoder({"img": (1, 32, 48)}, deter=16, stoch=2, classes=3, depth=4, layers=1, units=4, blocks=8)
    h, w, c = dec.min_shape
    g, cg = 8, c // 8
    seen = _capture_input(dec.sp_norm)
    deter, stoch = torch.randn(2, 16), torch.randn(2, 2, 3)
    dec(deter, stoch)
    x0 = dec.sp0(deter)
    x1 = dec.sp2(dec.sp1_norm(dec.sp1(stoch.flatten(-2))))
    expected = torch.empty(2, c, h, w)
    for gi in range(g):
        for hi in range(h):
            for wi in range(w):
                for ci in range(cg):
                    src = ((gi * h + hi) * w + wi) * cg + ci
                    expected[:, gi * cg + ci, hi, wi] = x0[:, src]
    for hi in range(h):
        for wi in range(w):
            expected[:, :, hi, wi] += x1[:, (hi * w + wi) * c: (hi * w + wi + 1) * c]
    torch.testing.assert_close(seen[0], expected)


def test_feature_orders():
    p = PRESETS["debug"]
    deter, stoch = state(p, 3)
    head = MLPHead(*latent(p), 1, 8, out_features=2)
    # The head applies its first layer to deter and stoch separately (no concat copy); that must
    # equal the MLP on feat2tensor's order concat(deter, stoch).
    torch.testing.assert_close(head.trunk(deter, stoch), head.mlp(torch.cat([deter, stoch.flatten(-2)], -1)))
    dec = MultiDecoder({"v": (3,)}, *latent(p), layers=1, units=8)
    dec_in = _capture_input(dec.mlp[0])
    dec(deter, stoch)
    torch.testing.assert_close(dec_in[0], torch.cat([stoch.flatten(-2), deter], -1))  # decoder order


def test_decoder_splits_image_channels_in_key_order():
    p = PRESETS["debug"]
    dec = MultiDecoder({"b": (2, 16, 16), "a": (3, 16, 16)}, *latent(p), depth=2, layers=1, units=8)
    raw = []
    dec.img_out.register_forward_hook(lambda mod, args, out: raw.append(out))
    b, a = dec(*state(p, 4))
    assert b.shape == (4, 2, 16, 16) and a.shape == (4, 3, 16, 16)
    torch.testing.assert_close(b, torch.sigmoid(raw[0][:, :2]))
    torch.testing.assert_close(a, torch.sigmoid(raw[0][:, 2:]))


@pytest.mark.parametrize("strided", [False, True])
def test_channels_last_equals_contiguous(strided):
    p = PRESETS["debug"]
    enc = MultiEncoder(OBS_MIXED, depth=2, layers=1, units=8, strided=strided)
    dec = MultiDecoder(OBS_MIXED, *latent(p), depth=2, layers=1, units=8, strided=strided)
    obs = (images(4, 3, 32, 48), torch.randn(4, 5), torch.randn(4, 2))
    deter, stoch = state(p, 4)
    fast = enc(*obs), dec(deter, stoch)
    enc.memory_format = dec.memory_format = torch.contiguous_format
    slow = enc(*obs), dec(deter, stoch)
    torch.testing.assert_close(fast[0], slow[0], rtol=1e-5, atol=1e-5)
    for a, b in zip(fast[1], slow[1]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Initialisation


def test_zero_init_twohot_heads_give_zero_logits():
    p = PRESETS["size1m"]
    deter, stoch = state(p, 2, 3)
    for layers in (1, 3):
        logits = TwoHotHead(*latent(p), layers, 64)(deter, stoch)
        assert logits.shape == (2, 3, 255) and torch.equal(logits, torch.zeros_like(logits))


def _std_ratio(weight: torch.Tensor, fan_in: int, outscale: float = 1.0) -> float:
    return weight.std().item() * math.sqrt(fan_in) / outscale


def test_init_scales():
    torch.manual_seed(0)
    p = PRESETS["size12m"]
    enc, dec, rew, con, pol, val = build(IMG64, (True, 6), "size12m")
    conv = enc.convs[1]  # 32 -> 48 channels, fan-in 5 * 5 * 32
    assert _std_ratio(conv.weight, 5 * 5 * 32) == pytest.approx(1.0, rel=0.03)
    # BlockLinear fan-in is the full input size, not the per-block size
    assert _std_ratio(dec.sp0.weight, p["deter"]) == pytest.approx(1.0, rel=0.03)
    assert _std_ratio(dec.sp2.weight, 2 * 256) == pytest.approx(1.0, rel=0.03)
    assert _std_ratio(pol.mlp[0].weight, pol.in_features) == pytest.approx(1.0, rel=0.03)
    assert _std_ratio(pol.out.weight, 256, 0.01) == pytest.approx(1.0, rel=0.1)
    assert _std_ratio(con.out.weight, 256, 1.0) == pytest.approx(1.0, rel=0.2)
    cont = BoundedNormalHead(*latent(p), 3, 256, actions=6)
    assert _std_ratio(cont.out.weight, 256, 0.01) == pytest.approx(1.0, rel=0.1)
    assert _std_ratio(cont.std_out.weight, 256, 0.01) == pytest.approx(1.0, rel=0.1)
    assert torch.equal(rew.out.weight, torch.zeros_like(rew.out.weight))
    assert torch.equal(val.out.weight, torch.zeros_like(val.out.weight))
    for module in (enc, dec, rew, con, pol, val):
        for name, param in module.named_parameters():
            if name.endswith("bias"):
                assert torch.equal(param, torch.zeros_like(param)), name


# ---------------------------------------------------------------------------------------------
# Input validation: messages name the key, the expected and the actual value


def test_encoder_rejects_bad_inputs():
    enc = MultiEncoder({"pixels": (3, 32, 32), "state": (5,)}, depth=2, layers=1, units=8)
    img, vec = images(4, 3, 32, 32), torch.randn(4, 5)
    with pytest.raises(ValueError, match=r"'pixels'.*\(3, 32, 32\).*\(4, 3, 64, 64\)"):
        enc(images(4, 3, 64, 64), vec)
    with pytest.raises(TypeError, match=r"'pixels'.*uint8.*torch.float32"):
        enc(img.float(), vec)
    with pytest.raises(ValueError, match=r"'state'.*\(5,\).*\(4, 6\)"):
        enc(img, torch.randn(4, 6))
    with pytest.raises(ValueError, match=r"2 inputs.*'pixels', 'state'.*got 1"):
        enc(img)
    with pytest.raises(ValueError, match=r"'state'.*\(2,\).*\(4,\)"):
        enc(img, torch.randn(2, 5))


@pytest.mark.parametrize("cls", [MultiEncoder, MultiDecoder])
def test_construction_rejects_bad_shapes(cls):
    kw = dict(deter=8, stoch=2, classes=4) if cls is MultiDecoder else {}
    with pytest.raises(ValueError, match=r"'pixels'.*multiple of 16.*\(64, 72\)"):
        cls({"pixels": (3, 64, 72)}, **kw)
    with pytest.raises(ValueError, match=r"'b'.*\(32, 32\).*\(64, 64\)"):
        cls({"a": (3, 32, 32), "b": (3, 64, 64)}, **kw)
    with pytest.raises(ValueError, match=r"'grid'.*\(4, 4\)"):
        cls({"grid": (4, 4)}, **kw)


def test_state_inputs_are_checked():
    p = PRESETS["debug"]
    head = TwoHotHead(*latent(p), 1, 8, bins=5)
    dec = MultiDecoder({"v": (3,)}, *latent(p), layers=1, units=8)
    with pytest.raises(ValueError, match=r"'deter'.*\(\.\.\., 8\).*\(3, 9\)"):
        head(torch.randn(3, 9), torch.randn(3, 2, 4))
    with pytest.raises(ValueError, match=r"'stoch'.*\(\.\.\., 2, 4\).*\(3, 8\)"):
        dec(torch.randn(3, 8), torch.randn(3, 8))

"""Robustness transforms: exact adjoints, identities, and geometry checked independently."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from onnxviz.errors import OnnxvizError
from onnxviz.transforms import (
    Jitter,
    Pad,
    Rotate,
    Scale,
    affine_warp,
    no_transforms,
    sample,
    standard_transforms,
    transforms_by_name,
)

STEPS = {
    "pad": (Pad(3, 0.5),),
    "jitter": (Jitter(4),),
    "scale": (Scale((0.8, 0.9, 1.1, 1.3)),),
    "rotate": (Rotate((-10.0, -3.0, 7.0, 10.0)),),
    "resize": (),
    "standard": standard_transforms(),
}


def dot_test(sampled, n, c, rng):
    x = rng.standard_normal((n, c, *sampled.in_hw))
    g = rng.standard_normal((n, c, *sampled.out_hw))
    # the linear part: apply(x) - apply(0)
    wx = sampled.apply(x) - sampled.apply(np.zeros_like(x))
    wtg = sampled.adjoint(g)
    assert wx.shape == g.shape and wtg.shape == x.shape and wtg.dtype == np.float64
    assert np.vdot(wx, g) == pytest.approx(np.vdot(x, wtg), rel=1e-12)


@pytest.mark.parametrize("name", list(STEPS))
@pytest.mark.parametrize(("in_hw", "out_hw"), [((20, 20), (20, 20)), ((19, 24), (16, 13))])
def test_each_transform_has_exact_adjoint(name, in_hw, out_hw):
    rng = np.random.default_rng(0)
    for _ in range(4):
        sampled = sample(STEPS[name], rng, in_hw, out_hw)
        dot_test(sampled, 2, 3, rng)


@pytest.mark.parametrize("c", [1, 3, 5])
def test_per_item_draws_have_exact_adjoint(c):
    rng = np.random.default_rng(1)
    sampled = sample(standard_transforms(), rng, (24, 24), (20, 22), items=3)
    assert len(sampled.warps) == 3 and len({str(d) for d in sampled.draws}) > 1
    dot_test(sampled, 3, c, rng)
    with pytest.raises(ValueError, match="items"):
        sampled.apply(np.zeros((2, c, 24, 24)))


def test_identity_cases_return_the_input_exactly():
    rng = np.random.default_rng(2)
    x = rng.random((2, 3, 17, 23))
    trivial = (Pad(0), Jitter(0), Scale((1.0,)), Rotate((0.0,)))
    for chain in (no_transforms(), trivial):
        sampled = sample(chain, rng, (17, 23), (17, 23))
        assert np.array_equal(sampled.apply(x), x)
        assert np.array_equal(sampled.adjoint(x), x)
    # the general gather / scatter path (not the identity shortcut) is exact too
    warp = dataclasses.replace(affine_warp(np.eye(3), (17, 23), (17, 23)), identity=False)
    planes = x.reshape(6, -1)
    assert np.array_equal(warp.apply(planes), planes)
    assert np.array_equal(warp.adjoint(planes), planes)


def test_pad_and_jitter_are_exact_integer_shifts():
    rng = np.random.default_rng(3)
    x = rng.random((1, 2, 10, 12))
    chain = (Pad(4, 0.5), Jitter(6))
    seen = set()
    for _ in range(20):
        sampled = sample(chain, rng, (10, 12), (12, 14))
        pad, jitter = sampled.draws[0]
        oy, ox = jitter["offset"]
        assert pad["width"] == 4 and 0 <= oy <= 6 and 0 <= ox <= 6
        seen.add((oy, ox))
        padded = np.pad(x, ((0, 0), (0, 0), (4, 4), (4, 4)), constant_values=0.5)
        expected = padded[:, :, oy : oy + 12, ox : ox + 14]
        assert np.array_equal(sampled.apply(x), expected)
    assert len(seen) > 5


def test_draws_come_from_the_lists_and_are_seeded():
    chain = standard_transforms()
    scales = set(chain[2].factors)
    angles = set(chain[3].degrees)
    a = sample(chain, np.random.default_rng(11), (32, 32), (32, 32))
    b = sample(chain, np.random.default_rng(11), (32, 32), (32, 32))
    assert a.draws == b.draws
    x = np.random.default_rng(0).random((1, 3, 32, 32)).astype(np.float32)
    assert np.array_equal(a.apply(x), b.apply(x))
    rng = np.random.default_rng(12)
    for _ in range(30):
        pad, j8, scale, rot, j4 = sample(chain, rng, (32, 32), (32, 32)).draws[0]
        assert pad == {"step": "pad", "width": 12, "value": 0.5}
        assert max(j8["offset"]) <= 8 and max(j4["offset"]) <= 4 and min(j4["offset"]) >= 0
        assert scale["factor"] in scales and rot["degrees"] in angles
        assert scale["size"] == (int(scale["factor"] * 48),) * 2


def test_outside_is_filled_with_the_pad_value():
    rng = np.random.default_rng(13)
    gray = np.full((1, 3, 20, 20), 0.5)
    white = np.ones((1, 3, 20, 20))
    for _ in range(5):
        sampled = sample(standard_transforms(), rng, (20, 20), (20, 20))
        np.testing.assert_allclose(sampled.apply(gray), 0.5, atol=1e-12)
        out = sampled.apply(white)
        assert out.min() >= 0.5 - 1e-12 and out.max() <= 1 + 1e-12
        assert out.min() < 0.6 and out.max() > 0.99  # gray border, white middle


def test_float32_in_float32_out():
    rng = np.random.default_rng(14)
    sampled = sample(standard_transforms(), rng, (24, 24), (16, 16))
    x = rng.random((1, 3, 24, 24))
    y32 = sampled.apply(x.astype(np.float32))
    g32 = sampled.adjoint(np.ones((1, 3, 16, 16), np.float32))
    assert y32.dtype == np.float32 and g32.dtype == np.float32
    np.testing.assert_allclose(y32, sampled.apply(x), atol=1e-6)
    np.testing.assert_allclose(g32, sampled.adjoint(np.ones((1, 3, 16, 16))), atol=1e-6)


def test_scale_matches_separable_linear_interpolation():
    """Scaling by 2 against np.interp along each axis (fill beyond the edges)."""
    rng = np.random.default_rng(4)
    h, w = 6, 9
    x = rng.random((h, w))
    sampled = sample((Scale((2.0,)),), rng, (h, w), (2 * h, 2 * w))
    got = sampled.apply(x[None, None])[0, 0]

    def interp_axis(a, n_out, axis):
        n = a.shape[axis]
        pos = (np.arange(n_out) + 0.5) * n / n_out - 0.5
        a = np.moveaxis(a, axis, -1)
        rows = [np.interp(pos, np.arange(-1, n + 1), np.r_[0.5, r, 0.5]) for r in a]
        return np.moveaxis(np.array(rows), -1, axis)

    expected = interp_axis(interp_axis(x, 2 * h, 0), 2 * w, 1)
    np.testing.assert_allclose(got, expected, atol=1e-12)


def test_quarter_turn_of_a_square_is_rot90():
    """Rotation about the center by 90 degrees maps pixel centers onto pixel centers."""
    rng = np.random.default_rng(5)
    x = rng.random((1, 1, 8, 8))
    out = sample((Rotate((90.0,)),), rng, (8, 8), (8, 8)).apply(x)[0, 0]
    candidates = [np.rot90(x[0, 0], 1), np.rot90(x[0, 0], -1)]
    assert min(np.abs(out - c).max() for c in candidates) < 1e-12


def _replay_matrix(draws, in_hw, out_hw):
    """The 3x3 output -> input map rebuilt from a sample's recorded draws."""
    m = np.eye(3)
    hw = in_hw
    for rec in draws:
        if rec["step"] == "pad":
            p = rec["width"]
            m = m @ np.array([[1, 0, -p], [0, 1, -p], [0, 0, 1.0]])
            hw = (hw[0] + 2 * p, hw[1] + 2 * p)
        elif rec["step"] == "jitter":
            oy, ox = rec["offset"]
            m = m @ np.array([[1, 0, oy], [0, 1, ox], [0, 0, 1.0]])
            hw = (hw[0] - rec["amount"], hw[1] - rec["amount"])
        elif rec["step"] == "scale":
            m = m @ np.diag([hw[0] / rec["size"][0], hw[1] / rec["size"][1], 1.0])
            hw = rec["size"]
        else:
            r = np.radians(rec["degrees"])
            shift = np.array([[1, 0, hw[0] / 2], [0, 1, hw[1] / 2], [0, 0, 1.0]])
            rot = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
            m = m @ shift @ rot @ np.linalg.inv(shift)
    return m @ np.diag([hw[0] / out_hw[0], hw[1] / out_hw[1], 1.0])


def test_matches_torch_grid_sample():
    """The whole standard chain against torch's affine_grid + grid_sample (independent code)."""
    torch = pytest.importorskip("torch")
    functional = torch.nn.functional
    rng = np.random.default_rng(6)
    in_hw, out_hw = (30, 26), (21, 24)
    x = rng.random((2, 3, *in_hw))
    for _ in range(4):
        sampled = sample(standard_transforms(), rng, in_hw, out_hw)
        a = _replay_matrix(sampled.draws[0], in_hw, out_hw)
        # continuous (y, x) <-> torch's normalized (x, y) in [-1, 1], align_corners=False
        to_norm_in = np.array([[0, 2 / in_hw[1], -1], [2 / in_hw[0], 0, -1], [0, 0, 1]])
        from_norm_out = np.array(
            [[0, out_hw[0] / 2, out_hw[0] / 2], [out_hw[1] / 2, 0, out_hw[1] / 2], [0, 0, 1]]
        )
        theta = torch.tensor((to_norm_in @ a @ from_norm_out)[:2])[None].expand(2, 2, 3)
        grid = functional.affine_grid(theta, [2, 3, *out_hw], align_corners=False)
        ref = functional.grid_sample(
            torch.tensor(x - 0.5),
            grid,
            mode="bilinear",
            padding_mode="zeros",
            align_corners=False,
        )
        # sample positions are float32 (see affine_warp): up to ~1e-5 apart on values in [0, 1]
        np.testing.assert_allclose(sampled.apply(x), ref.numpy() + 0.5, rtol=0, atol=1e-5)


def test_bad_input_is_reported():
    rng = np.random.default_rng(15)
    with pytest.raises(OnnxvizError, match="too small"):
        sample((Jitter(8),), rng, (6, 6), (6, 6))
    with pytest.raises(OnnxvizError, match="--transforms"):
        transforms_by_name("fancy")
    assert transforms_by_name("standard") == standard_transforms()
    assert transforms_by_name("none") == ()
    sampled = sample(standard_transforms(), rng, (32, 32), (24, 24))
    with pytest.raises(ValueError, match="shape"):
        sampled.apply(np.zeros((1, 3, 24, 24)))
    with pytest.raises(ValueError, match="shape"):
        sampled.adjoint(np.zeros((1, 3, 32, 32)))


@pytest.mark.parametrize(("in_hw", "out_hw"), [((128, 128), (128, 128)), ((48, 40), (31, 29))])
def test_dense_path_equals_the_general_gather_and_scatter(in_hw, out_hw):
    """Shrinking warps (the standard chain) take the dense path; it computes exactly what the
    general neighbour gather and bincount scatter compute, forward and adjoint."""
    rng = np.random.default_rng(16)
    x = rng.random((3, in_hw[0] * in_hw[1]))
    g = rng.standard_normal((3, out_hw[0] * out_hw[1]))
    for _ in range(5):
        warp = sample(standard_transforms(), rng, in_hw, out_hw).warps[0]
        assert warp._distinct()
        dense = warp.apply(x), warp.adjoint(g)
        warp._cache["distinct"] = False
        general = warp.apply(x), warp.adjoint(g)
        np.testing.assert_allclose(dense[0], general[0], rtol=0, atol=1e-12)
        np.testing.assert_allclose(dense[1], general[1], rtol=0, atol=1e-12)
    # enlarging takes the general path
    assert not sample((Scale((2.0,)),), rng, (8, 8), (16, 16)).warps[0]._distinct()

import contextlib
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import dense_matrix, top_singular_value
from flax import nnx

from hycas_jax import rng
from hycas_jax.models.fdpan import FDPAN
from hycas_jax.models.rpfan import RPFAN, random_channel_projection, random_projection_filters
from hycas_jax.models.sncan import SNCAN
from hycas_jax.nn import dct, spectral
from hycas_jax.nn.depthwise import reverse_mode_only

HW, CIN, COUT = (6, 6), 2, 4


def _x():
    return jax.random.uniform(jax.random.key(0), (2, *HW, CIN))


def test_sncan_is_rani_of_snc():
    s = SNCAN(CIN, COUT, 3, input_hw=HW, rngs=nnx.Rngs(0))
    key = jax.random.key(5)
    np.testing.assert_allclose(s(_x(), key), s.rani(s.conv(_x()), key), rtol=1e-6)


@pytest.mark.parametrize("form", dct.LOWPASS_FORMS)
def test_fdpan_follows_the_four_stage_cascade(form):
    s = FDPAN(CIN, COUT, 3, input_hw=HW, stride=2, dct_keep=0.5, rngs=nnx.Rngs(1))
    s.lowpass_form = form  # the same low-pass, computed another way
    key, x = jax.random.key(5), _x()
    mask = np.outer(dct.lowpass_mask_1d(HW[0], 0.5), dct.lowpass_mask_1d(HW[1], 0.5))
    low = dct.idct2(dct.dct2(x) * mask[None, :, :, None])
    expected = s.rani(s.conv(low @ s.mix.matrix()), key)
    np.testing.assert_allclose(s(x, key), expected, rtol=1e-4, atol=1e-5)
    assert s(x, key).shape == (2, 3, 3, COUT)


def test_depthwise_rpfan_redraws_l1_normalized_filters_from_the_key():
    s = RPFAN(CIN, COUT, 3, input_hw=HW, form="depthwise", rngs=nnx.Rngs(2))
    filters = random_projection_filters(jax.random.key(3), 3, COUT)
    np.testing.assert_allclose(jnp.abs(filters).sum(axis=(0, 1, 2)), 1.0, rtol=1e-6)
    x = _x()
    a, b = s(x, jax.random.key(0)), s(x, jax.random.key(1))
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(a, s(x, jax.random.key(0)))
    proj_key, rani_key = jax.random.split(jax.random.key(0))
    manual = jax.lax.conv_general_dilated(
        x @ s.mix.matrix(), random_projection_filters(proj_key, 3, COUT), (1, 1), "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=COUT)
    np.testing.assert_allclose(a, s.rani(manual, rani_key), rtol=1e-5, atol=1e-6)


def test_mixed_rpfan_adds_random_filters_to_a_learned_conv_of_the_premix():
    s = RPFAN(CIN, COUT, 3, input_hw=HW, stride=2, rngs=nnx.Rngs(2))
    assert s.form == "mixed" and s.random_weight == 0.1
    x, key = _x(), jax.random.key(0)
    a = s(x, key)
    assert not np.allclose(a, s(x, jax.random.key(1)))
    np.testing.assert_array_equal(a, s(x, key))
    proj_key, rani_key = jax.random.split(key)
    filter_key, channel_key = jax.random.split(proj_key)
    h = x @ s.mix.matrix()
    q = random_channel_projection(channel_key, CIN, COUT)
    random = jax.lax.conv_general_dilated(
        h @ q, random_projection_filters(filter_key, 3, COUT), (2, 2), "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=COUT)
    manual = 0.9 * s.learned(h) + 0.1 * random
    np.testing.assert_allclose(a, s.rani(manual, rani_key), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="rpfan_random_weight must be in"):
        RPFAN(CIN, COUT, 3, input_hw=HW, random_weight=1.5, rngs=nnx.Rngs(2))


@pytest.mark.parametrize("shape", [(1, 8), (2, 8), (8, 2), (5, 5), (16, 32)])
def test_random_channel_projection_has_norm_at_most_one_and_close_to_it(shape):
    for seed in range(5):
        q = np.asarray(random_channel_projection(jax.random.key(seed), *shape), np.float64)
        assert q.shape == shape
        norm = np.linalg.norm(q, 2)
        assert 0.97 < norm <= spectral.SAFETY


def test_a_random_draw_uses_most_of_its_norm_budget():
    """Every draw of the random filters has norm <= 1 (the bound), and the bound is not
    idle: the draws' exact norms (dense SVD) reach a good part of it."""
    cin, cout, hw = 4, 8, (6, 6)
    norms = []
    for seed in range(12):
        filter_key, channel_key = jax.random.split(jax.random.key(seed))
        q = random_channel_projection(channel_key, cin, cout)
        f = random_projection_filters(filter_key, 3, cout)
        fn = lambda x: jax.lax.conv_general_dilated(  # noqa: E731
            x @ q, f, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=cout)
        norms.append(top_singular_value(dense_matrix(fn, (1, *hw, cin))))
    assert max(norms) <= spectral.SAFETY
    # The channel projection's largest direction and the filters' largest frequency
    # response rarely align: a draw reaches about half of the bound.
    assert np.median(norms) > 0.45, norms


@pytest.mark.parametrize("form, least", [("mixed", 0.5), ("depthwise", None)])
def test_mixed_rpfan_carries_signal_across_draws(form, least):
    """The mean over draws of the stream's output, against its spread: the learned
    channels keep a mean, the redrawn zero-mean filters alone do not."""
    s = RPFAN(CIN, COUT, 3, input_hw=HW, rani=None, form=form, rngs=nnx.Rngs(2))
    x = _x()
    outs = jax.vmap(lambda k: s(x, k))(jax.random.split(jax.random.key(0), 400))
    ratio = float(jnp.sqrt(jnp.mean(jnp.mean(outs, 0) ** 2)) / jnp.sqrt(jnp.mean(outs ** 2)))
    if least is None:
        assert ratio < 0.1
    else:
        assert ratio > least


@pytest.mark.parametrize("cls", [SNCAN, FDPAN, RPFAN, functools.partial(RPFAN, form="depthwise"),
                                 functools.partial(RPFAN, random_weight=1.0)],
                         ids=["SNCAN", "FDPAN", "RPFAN", "RPFAN-depthwise", "RPFAN-random-only"])
@pytest.mark.parametrize("stride", [1, 2])
def test_stream_bound_holds_for_fixed_keys(cls, stride):
    s = cls(CIN, COUT, 3, input_hw=HW, stride=stride, rngs=nnx.Rngs(3))
    bound = s.lipschitz_bound()
    for seed in range(3):
        key = jax.random.key(seed)
        # Biases make the stream affine; the matrix of its linear part is its Jacobian.
        fn = lambda x: s(x, key) - s(jnp.zeros_like(x), key)
        exact = top_singular_value(dense_matrix(fn, (1, *HW, CIN)))
        assert exact <= bound
        assert exact > 0.2 * bound  # the bound is not vacuous


def test_rpfan_bound_holds_for_extreme_draws():
    # Any kernel with l1 norm 1 is a contraction (Young): check it on spiky kernels too.
    for k in [np.eye(3)[:, :, None, None] / 3.0, np.ones((3, 3, 1, 1)) / 9.0]:
        dense = dense_matrix(lambda x: spectral.conv2d(x, jnp.asarray(k, jnp.float32)), (1, 5, 5, 1))
        assert top_singular_value(dense) <= 1.0 + 1e-6


@pytest.mark.parametrize("k,stride,hw", [(3, 2, (6, 6)), (3, 2, (7, 5)), (2, 2, (6, 6)), (5, 1, (6, 7))])
def test_depthwise_random_filters_match_a_grouped_same_conv(k, stride, hw):
    # Same grid as the SNC streams: the gate adds the streams position by position.
    from hycas_jax.nn.depthwise import depthwise_conv
    x = jax.random.normal(jax.random.key(0), (2, *hw, 3))
    filters = random_projection_filters(jax.random.key(1), k, 3)
    expected = jax.lax.conv_general_dilated(
        x, filters, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=3)
    np.testing.assert_allclose(depthwise_conv(x, filters, stride), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("k,stride,hw", [(3, 2, (6, 6)), (3, 2, (7, 5)), (2, 2, (6, 6)), (5, 1, (6, 7)),
                                         (3, 3, (8, 7)), (1, 2, (5, 5))])
def test_depthwise_backward_matches_the_grouped_conv(k, stride, hw):
    # Under reverse_mode_only, depthwise_conv uses its own backward pass; with
    # or without it, gradients must be the grouped conv's.
    from hycas_jax.nn.depthwise import depthwise_conv, reverse_mode_only
    x = jax.random.normal(jax.random.key(0), (2, *hw, 3))
    filters = jax.random.normal(jax.random.key(1), (k, k, 1, 3))
    grouped = lambda x, f: jax.lax.conv_general_dilated(
        x, f, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=3)
    ours = lambda x, f: depthwise_conv(x, f, stride)
    expected, vjp_expected = jax.vjp(grouped, x, filters)
    cotangent = jax.random.normal(jax.random.key(2), expected.shape)
    # Under vmap every sample has its own filters, as in Monte Carlo certification.
    xs, fs = x[:, None], jnp.stack([filters, 2.0 * filters])
    batched = lambda conv: jax.vmap(jax.grad(lambda x, f: jnp.sum(conv(x, f) ** 2), (0, 1)))(xs, fs)
    for reverse_only in (False, True):
        with reverse_mode_only() if reverse_only else contextlib.nullcontext():
            _, vjp = jax.vjp(ours, x, filters)
            got = vjp(cotangent)
            got_batched = jax.jit(lambda: batched(ours))()
        for a, b in zip(got, vjp_expected(cotangent)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
        for a, b in zip(got_batched, batched(grouped)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    # Forward mode works outside the context.
    np.testing.assert_allclose(jax.jvp(ours, (x, filters), (x, filters))[1],
                               jax.jvp(grouped, (x, filters), (x, filters))[1], rtol=1e-5, atol=1e-5)


def _plain_filters(key, k, channels):
    w = rng.normal(key, (k, k, 1, channels), jnp.float32, fusible=False)
    return w / (jnp.sum(jnp.abs(w), axis=(0, 1, 2), keepdims=True) + 1e-12)


def test_filters_are_materialized_bit_for_bit():
    keys = jax.random.split(jax.random.key(7), 5)
    ours = jax.jit(jax.vmap(lambda key: random_projection_filters(key, 3, 16)))(keys)
    plain = jax.jit(jax.vmap(lambda key: _plain_filters(key, 3, 16)))(keys)
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(plain))


_HLO_LINE = re.compile(r'^\s*(?:ROOT\s+)?%?([\w.\-]+) = [^(]*?(\w+)\((.*?)\).*?op_name="([^"]*)"')


def test_depthwise_stencil_reads_the_filters_instead_of_redrawing_them():
    # XLA fused the filters' erf_inv into every tap of the depthwise stencil (recomputed
    # k*k times per output element); the stencil's fusions must take them from memory.
    s = RPFAN(CIN, 16, 3, input_hw=(14, 14), rngs=nnx.Rngs(2))
    graphdef, params = nnx.split(s)
    x = jax.random.uniform(jax.random.key(0), (8, 14, 14, CIN))

    def loss(params, x, key):
        with reverse_mode_only():
            return jnp.sum(nnx.merge(graphdef, params)(x, key) ** 2)

    text = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, x, jax.random.key(1)).compile().as_text()
    op_name, operands = {}, {}
    for line in text.splitlines():
        m = _HLO_LINE.match(line)
        if m:
            op_name[m.group(1)] = m.group(4)
            operands[m.group(1)] = re.findall(r"%([\w.\-]+)", m.group(3))
    stencils = [n for n, o in op_name.items() if "depthwise" in o and operands[n]]
    assert stencils
    for name in stencils:
        redrawn = [a for a in operands[name] if "erf_inv" in op_name.get(a, "")]
        assert not redrawn, f"{name} recomputes the filters from {redrawn}"

"""AOL convolutions, space-to-depth and the per-pair head bound against exact matrices."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import dense_matrix, top_singular_value
from flax import nnx

from hycas_jax import models
from hycas_jax.models.base import pair_bounds
from hycas_jax.models.fdpan import FDPAN
from hycas_jax.models.rpfan import RPFAN
from hycas_jax.models.sncan import SNCAN
from hycas_jax.nn import aol, frozen, spectral


@pytest.mark.parametrize("hw,block", [((4, 6), 2), ((5, 7), 2), ((6, 6), 3), ((3, 3), 1)])
def test_space_to_depth_is_a_norm_preserving_rearrangement(hw, block):
    shape = (1, *hw, 3)
    dense = dense_matrix(lambda x: aol.space_to_depth(x, block), shape)
    # Every input entry lands in exactly one output entry: a 0/1 isometry.
    assert set(np.unique(dense)) <= {0.0, 1.0}
    np.testing.assert_array_equal(dense.sum(axis=0), 1.0)
    assert dense.sum(axis=1).max() <= 1.0
    np.testing.assert_allclose(dense.T @ dense, np.eye(dense.shape[1]))


@pytest.mark.parametrize("k,cin,cout", [(3, 2, 5), (3, 6, 4), (5, 3, 3), (1, 4, 4)])
def test_aol_scale_matches_a_float64_loop_and_bounds_every_padded_conv(k, cin, cout):
    kernel = jax.random.normal(jax.random.key(k * cin + cout), (k, k, cin, cout))
    d = np.asarray(aol.aol_scale(kernel), np.float64)
    reference = np.abs(aol.aol_gram_numpy(kernel)).sum(axis=(0, 1, 3)) ** -0.5
    np.testing.assert_allclose(d, reference, rtol=1e-5)
    w = np.asarray(kernel, np.float64) * d[:, None]
    for hw in [(3, 3), (6, 5), (9, 9)]:
        for stride in (1, 2):
            exact = top_singular_value(spectral.conv_dense_matrix(w, hw, stride))
            assert exact <= 1.0 + 1e-6  # the AOL theorem, for every zero-padded input size


@pytest.mark.parametrize("stride", [1, 2])
def test_aol_conv_bound_dominates_its_dense_matrix(stride):
    conv = aol.AOLConv(3, 6, 3, input_hw=(6, 6), stride=stride, rngs=nnx.Rngs(1))
    # A trained-like kernel: far from the identity-like initialization.
    conv.kernel[...] = jax.random.normal(jax.random.key(2), conv.kernel.shape)
    fn = lambda x: conv(x) - conv(jnp.zeros_like(x))
    exact = top_singular_value(dense_matrix(fn, (1, 6, 6, 3)))
    bound = conv.lipschitz_bound()
    assert exact <= bound <= 1.0 + 1e-3
    # Space-to-depth of a 6 x 6 map is an exact permutation: the dense bound is tight.
    assert bound <= 1.001 * exact
    assert conv(jnp.ones((2, 6, 6, 3))).shape == (2, -(-6 // stride), -(-6 // stride), 6)


def test_aol_conv_at_initialization_keeps_the_signal():
    # The identity-like start passes a random input on at nearly full norm.
    conv = aol.AOLConv(8, 8, 3, input_hw=(8, 8), use_bias=False, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (4, 8, 8, 8))
    ratio = float(jnp.linalg.norm(conv(x)) / jnp.linalg.norm(x))
    assert 0.7 < ratio <= 1.0


@pytest.mark.parametrize("cls", [SNCAN, FDPAN, RPFAN], ids=["SNCAN", "FDPAN", "RPFAN"])
@pytest.mark.parametrize("stride", [1, 2])
def test_streams_on_aol_convs_keep_their_bounds_and_freeze_to_the_same_map(cls, stride):
    make = functools.partial(cls, 2, 4, 3, input_hw=(6, 6), stride=stride, conv="aol")
    stream = make(rngs=nnx.Rngs(3))
    assert isinstance(getattr(stream, "conv", None) or stream.learned, aol.AOLConv)
    key, x = jax.random.key(0), jax.random.uniform(jax.random.key(1), (2, 6, 6, 2))
    fn = lambda v: stream(v, key) - stream(jnp.zeros_like(v), key)
    exact = top_singular_value(dense_matrix(fn, (1, 6, 6, 2)))
    assert exact <= stream.lipschitz_bound()
    still = frozen.freeze(stream)
    np.testing.assert_allclose(still(x, key), stream(x, key), rtol=1e-4, atol=1e-5)
    assert exact <= still.lipschitz_bound()


def tight(kind="lipschitz", rani="off", pool="flatten"):
    cfg = models.default_config()
    cfg.kind, cfg.rani, cfg.conv, cfg.pool = kind, rani, "aol", pool
    cfg.image_shape, cfg.mean, cfg.std = (8, 8, 1), (0.5,), (0.25,)
    cfg.widths, cfg.strides = (4, 8), (2, 1)
    cfg.streams = (("sncan",),) * 2 if kind == "lipschitz" else (models.ALL_STREAMS,) * 2
    return cfg


@pytest.mark.parametrize("kind,rani,pool", [("lipschitz", "off", "flatten"),
                                            ("lipschitz", "off", "sum"),
                                            ("hycas", "budgeted", "flatten")])
def test_whole_tight_network_bounds_hold_pair_by_pair(kind, rani, pool):
    model = models.build(tight(kind, rani, pool), key=jax.random.key(0))
    key = jax.random.key(5)
    fn = lambda x: model(x, key) - model(jnp.zeros_like(x), key)
    x0 = jax.random.uniform(jax.random.key(6), (1, 8, 8, 1))
    # The network is piecewise linear: its Jacobian at x0 is the matrix of one piece.
    jac = np.asarray(jax.jacfwd(lambda v: model(v.reshape(1, 8, 8, 1), key).reshape(-1))(
        x0.reshape(-1)), np.float64)
    assert top_singular_value(jac) <= model.lipschitz_bound()
    pairs = model.pair_bounds()
    for i in range(10):
        for j in range(10):
            assert np.linalg.norm(jac[i] - jac[j]) <= pairs[i, j] + 1e-9
    assert np.all(pairs <= np.sqrt(2) * model.lipschitz_bound() * spectral.SAFETY)
    del fn


def test_pair_bounds_are_exact_row_difference_norms():
    w = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])  # (C = 2, K = 3)
    pairs = pair_bounds(w, 3.0) / spectral.SAFETY
    np.testing.assert_allclose(pairs, 3.0 * np.array(
        [[0, np.sqrt(5), 1], [np.sqrt(5), 0, 2], [1, 2, 0]]))


def test_unknown_conv_and_pool_are_refused():
    for field, value in (("conv", "cayley"), ("pool", "max")):
        cfg = tight()
        cfg[field] = value
        with pytest.raises(ValueError, match=field):
            models.build(cfg, key=jax.random.key(0))

"""`hycas_jax.rng.normal` must be `jax.random.normal`, bit for bit, only faster."""
import jax
import jax.extend.random as jex_random
import jax.numpy as jnp
import numpy as np
import pytest

from hycas_jax import rng

SHAPES = [(), (1,), (7,), (3, 5), (2, 28, 28, 1), (1, 14, 14, 16), (3, 3, 1, 64), (100_003,)]


@pytest.mark.parametrize("shape", SHAPES)
def test_normal_equals_jax_random_normal_bit_for_bit(shape):
    for seed in (0, 1, 2**31 + 5):
        key = jax.random.key(seed)
        expected = np.asarray(jax.random.normal(key, shape))
        np.testing.assert_array_equal(np.asarray(rng.normal(key, shape)), expected)
        np.testing.assert_array_equal(np.asarray(jax.jit(rng.normal, static_argnums=1)(key, shape)),
                                      expected)
        np.testing.assert_array_equal(np.asarray(rng.normal(key, shape, fusible=False)), expected)


def test_normal_equals_jax_under_vmap_and_fold_in():
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(3), i))(jnp.arange(37))
    draw = lambda fn: jax.jit(jax.vmap(lambda k: fn(k, (1, 7, 7, 32))))(keys)
    np.testing.assert_array_equal(np.asarray(draw(rng.normal)), np.asarray(draw(jax.random.normal)))


def test_threefry_matches_jax_primitive():
    key = jax.random.key_data(jax.random.key(11))
    counts = jnp.arange(64, dtype=jnp.uint32)
    x0, x1 = rng.threefry2x32(key[0], key[1], counts[:32], counts[32:])
    np.testing.assert_array_equal(np.concatenate([x0, x1]),
                                  np.asarray(jex_random.threefry_2x32(key, counts)))


def test_other_generators_and_dtypes_are_forwarded_to_jax():
    rbg = jax.random.key(0, impl="rbg")
    np.testing.assert_array_equal(rng.normal(rbg, (4, 3)), jax.random.normal(rbg, (4, 3)))
    key = jax.random.key(0)
    out = rng.normal(key, (5,), jnp.bfloat16)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_array_equal(out, jax.random.normal(key, (5,), jnp.bfloat16))
    legacy = jax.random.PRNGKey(0)  # raw uint32 key data
    np.testing.assert_array_equal(rng.normal(legacy, (3,)), jax.random.normal(legacy, (3,)))


def test_normal_moments():
    z = np.asarray(rng.normal(jax.random.key(4), (200_000,)), np.float64)
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1.0) < 0.01
    assert np.isfinite(z).all()


def test_legacy_threefry_mode_is_forwarded():
    # In JAX's non-partitionable Threefry mode the bits differ; rng.normal follows JAX.
    key = jax.random.key(0)
    with jax.threefry_partitionable(False):
        np.testing.assert_array_equal(rng.normal(key, (9, 3)), jax.random.normal(key, (9, 3)))

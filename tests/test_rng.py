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


# ---------------------------------------------------------------- quantile16

ALL16 = jnp.arange(65536, dtype=jnp.uint32)


def _ks_to_normal(values) -> float:
    """Kolmogorov distance between the uniform law on `values` and N(0, 1)."""
    from scipy import special
    v = np.sort(np.asarray(values, np.float64))
    cdf, k = special.ndtr(v), np.arange(len(v))
    return float(max(np.abs(cdf - (k + 1) / len(v)).max(), np.abs(cdf - k / len(v)).max()))


def test_quantile16_law_is_within_its_tolerance_of_the_normal_exhaustively():
    """Every one of the 65,536 values a 16-bit draw can give: their law is the draw's law."""
    v = np.asarray(jax.jit(rng.quantile16_map)(ALL16))
    grid = 0.5 / 65536  # the 16-bit grid alone, with exact quantiles at the midpoints
    assert grid < _ks_to_normal(v) <= 1e-5
    # Odd symmetry (the top bit is the sign), monotone in the low 15 bits, bounded.
    np.testing.assert_array_equal(v[32768:], -v[:32768])
    assert np.all(np.diff(v[:32768]) > 0) and v[0] > 0
    assert np.abs(v).max() < 4.35
    # Moments: mean exactly 0, variance within 2e-5 of 1.
    assert v.astype(np.float64).sum() == 0.0 and abs(np.var(v.astype(np.float64)) - 1) < 2e-5


def test_mask_law_under_quantile16_is_within_the_tolerance_for_any_parameters():
    """The mask is monotone in omega, so its Kolmogorov distance to the mask of exact
    normals is omega's; its mean and spread move by no more than that (mask in [0, 1])."""
    from scipy import integrate, special
    v = np.asarray(rng.quantile16_map(ALL16), np.float64)
    for scale, shift in ((0.75, 1.5), (1.0, 0.0), (3.0, -1.2), (-2.0, 0.4), (20.0, 0.0)):
        mask = lambda w: special.expit(scale * w + shift)  # noqa: E731
        moment = lambda k: integrate.quad(  # noqa: E731
            lambda w: mask(w) ** k * np.exp(-w * w / 2) / np.sqrt(2 * np.pi), -12, 12,
            points=[-shift / scale], epsabs=1e-12, limit=200)[0]
        mean, second = moment(1), moment(2)
        m = mask(v)
        assert abs(m.mean() - mean) <= 1e-5
        assert abs((m * m).mean() - second) <= 1e-5
        assert abs(m.std() - np.sqrt(second - mean * mean)) <= 1e-4
        assert 0 <= m.min() and m.max() <= 1


def test_quantile16_draws_two_values_per_random_word():
    key = jax.random.key(5)
    out = rng.quantile16(key, (3, 7, 5))  # odd size: the last word's high half unused
    words = np.asarray(jax.random.bits(key, (53,), jnp.uint32))  # ceil(105 / 2)
    words = np.where(words == 0xFFFFFFFF, 0, words)  # the remainder's one changed word
    halves = words.view(np.uint16).astype(np.uint32)[:105]
    np.testing.assert_array_equal(np.asarray(out).ravel(), np.asarray(rng.quantile16_map(halves)))
    assert out.shape == (3, 7, 5) and out.dtype == jnp.float32
    # Same key, same values (jitted too); other keys, other values; per-key under vmap.
    np.testing.assert_array_equal(jax.jit(rng.quantile16, static_argnums=1)(key, (3, 7, 5)), out)
    assert not np.allclose(rng.quantile16(jax.random.key(6), (3, 7, 5)), out)
    keys = jax.random.split(key, 4)
    batched = jax.jit(jax.vmap(lambda k: rng.quantile16(k, (9, 2))))(keys)
    for i in range(4):
        np.testing.assert_array_equal(batched[i], rng.quantile16(keys[i], (9, 2)))


@pytest.mark.parametrize("impl", rng.IMPLS)
def test_quantile16_sample_moments_for_every_key_implementation(impl):
    v = np.asarray(rng.quantile16(rng.key(1, impl), (400_000,)), np.float64)
    assert abs(v.mean()) < 5 / np.sqrt(len(v)) and abs(v.var() - 1) < 5 * np.sqrt(2 / len(v))
    assert _ks_to_normal(v) < 1.63 / np.sqrt(len(v)) + 1e-5  # KS test at 1%


def test_internal_normal_picks_the_form_and_rejects_others():
    key = jax.random.key(2)
    np.testing.assert_array_equal(rng.internal_normal(key, (5,), "normal"),
                                  jax.random.normal(key, (5,)))
    np.testing.assert_array_equal(rng.internal_normal(key, (5,), "quantile16"),
                                  rng.quantile16(key, (5,)))
    with pytest.raises(ValueError, match="unknown internal noise 'uniform'"):
        rng.check_noise("uniform")

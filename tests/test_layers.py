"""Bounds of the small layers against their dense matrices, and their formulas."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import dense_matrix, top_singular_value
from flax import nnx

from hycas_jax.nn import activations, normalize
from hycas_jax.nn.conv import SNConv
from hycas_jax.nn.orthogonal import OrthogonalMix


@pytest.mark.parametrize("cin,cout", [(3, 3), (2, 5), (6, 4)])
def test_orthogonal_mix_has_orthonormal_rows_or_columns(cin, cout):
    mix = OrthogonalMix(cin, cout, rngs=nnx.Rngs(0))
    mix.generator[...] = jax.random.normal(jax.random.key(1), mix.generator.shape)
    q = np.asarray(mix.matrix(), np.float64)
    gram = q @ q.T if cin <= cout else q.T @ q
    np.testing.assert_allclose(gram, np.eye(min(cin, cout)), atol=1e-5)
    exact = top_singular_value(dense_matrix(mix, (1, 3, 3, cin)))
    assert exact <= mix.lipschitz_bound() and exact == pytest.approx(1.0, abs=1e-5)


def test_lipschitz_linear_and_plain_linear_bounds():
    lin = normalize.LipschitzLinear(6, 4, rngs=nnx.Rngs(0))
    exact = top_singular_value(dense_matrix(lambda x: lin(x) - lin(jnp.zeros_like(x)), (1, 6)))
    assert exact <= lin.lipschitz_bound() and exact == pytest.approx(1.0, rel=1e-5)
    plain = normalize.Linear(6, 4, rngs=nnx.Rngs(0))
    plain.weight[...] *= 7.0
    exact = top_singular_value(dense_matrix(lambda x: plain(x) - plain(jnp.zeros_like(x)), (1, 6)))
    assert exact <= plain.lipschitz_bound() <= exact * 1.001


def test_pooling_and_normalization_bounds():
    sum_norm = top_singular_value(dense_matrix(normalize.sum_pool, (1, 4, 3, 2)))
    assert sum_norm == pytest.approx(1.0, rel=1e-6)
    mean_norm = top_singular_value(dense_matrix(normalize.mean_pool, (1, 4, 3, 2)))
    assert mean_norm <= normalize.mean_pool_bound((4, 3)) and mean_norm == pytest.approx(1 / np.sqrt(12))
    norm = normalize.Normalize((0.5, 0.2), (0.25, 0.5))
    exact = top_singular_value(dense_matrix(lambda x: norm(x) - norm(jnp.zeros_like(x)), (1, 2, 2, 2)))
    assert exact <= norm.lipschitz_bound() and exact == pytest.approx(4.0, rel=1e-6)
    with pytest.raises(ValueError, match="std must be positive"):
        normalize.Normalize((0.0,), (0.0,))


def test_group_sort_is_a_1_lipschitz_permutation():
    x = jax.random.normal(jax.random.key(0), (3, 5, 8))
    # MaxMin = GroupSort(2) with each pair in descending order.
    flipped = activations.group_sort(x, 2).reshape(3, 5, 4, 2)[..., ::-1].reshape(x.shape)
    np.testing.assert_array_equal(activations.max_min(x), flipped)
    np.testing.assert_allclose(jnp.sort(activations.group_sort(x, 4), -1), jnp.sort(x, -1))
    y = x + 0.1 * jax.random.normal(jax.random.key(1), x.shape)
    for fn in (activations.max_min, lambda v: activations.group_sort(v, 4)):
        assert float(jnp.linalg.norm(fn(x) - fn(y))) <= float(jnp.linalg.norm(x - y)) + 1e-6
    # Gradient norm preserving: the Jacobian is a permutation matrix.
    jac = jax.jacobian(activations.max_min)(x[0, 0])
    np.testing.assert_array_equal(np.sort(np.asarray(jac).sum(0)), np.ones(8))
    with pytest.raises(ValueError, match="divisible"):
        activations.group_sort(jnp.ones((2, 3)), 2)
    with pytest.raises(ValueError, match="even channel count"):
        activations.max_min(jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="unknown activation"):
        activations.get_activation("swish")


def test_max_min_gradient_is_the_elementwise_forms():
    # The forward runs as windowed reductions, the derivative as selects; both
    # must equal the plain slice form's, ties (split evenly) included.
    x = jax.random.normal(jax.random.key(0), (2, 3, 3, 8))
    x = x.at[0, 0, 0, 1].set(x[0, 0, 0, 0])
    weights = jnp.arange(8.0)
    slices = activations._max_min_slices
    np.testing.assert_array_equal(activations.max_min(x), slices(x))
    for loss in (lambda f: (lambda v: jnp.sum(f(v) * weights)),
                 lambda f: (lambda v: jnp.sum(jax.vmap(f)(v) ** 2))):
        np.testing.assert_array_equal(jax.jit(jax.grad(loss(activations.max_min)))(x),
                                      jax.grad(loss(slices))(x))
    tangent = jax.random.normal(jax.random.key(1), x.shape)
    np.testing.assert_array_equal(jax.jvp(activations.max_min, (x,), (tangent,))[1],
                                  jax.jvp(slices, (x,), (tangent,))[1])


def test_snc_is_normalized_by_its_power_iteration_state_and_bounded():
    conv = SNConv(2, 3, 3, input_hw=(6, 6), stride=2, rngs=nnx.Rngs(0))
    fn = lambda x: conv(x) - conv(jnp.zeros_like(x))
    exact = top_singular_value(dense_matrix(fn, (1, 6, 6, 2)))
    assert exact <= conv.lipschitz_bound()
    assert conv.lipschitz_bound() < 1.1  # 20 init iterations: close to norm 1
    before = np.asarray(conv.v[...])
    conv.power_iterate()
    assert not np.array_equal(before, np.asarray(conv.v[...]))  # state advances


@pytest.mark.parametrize("scale", [0.0, 0.01, 0.1, 0.5, 3.0])
def test_expm_skew_matches_a_float64_exponential(scale):
    import scipy.linalg

    from hycas_jax.nn.orthogonal import expm_skew
    a = scale * jax.random.normal(jax.random.key(0), (48, 48))
    s = a - a.T
    q = np.asarray(expm_skew(s), np.float64)
    np.testing.assert_allclose(q, scipy.linalg.expm(np.asarray(s, np.float64)), atol=5e-6)
    np.testing.assert_allclose(q.T @ q, np.eye(48), atol=1e-5)
    # Differentiable, with the derivative of the exponential (checked against jax's).
    w = jax.random.normal(jax.random.key(1), s.shape)
    grad = jax.grad(lambda a: jnp.sum(expm_skew(a - a.T) * w))(a)
    expected = jax.grad(lambda a: jnp.sum(jax.scipy.linalg.expm(a - a.T) * w))(a)
    np.testing.assert_allclose(grad, expected, rtol=1e-3, atol=1e-4 * (1 + float(jnp.abs(expected).max())))

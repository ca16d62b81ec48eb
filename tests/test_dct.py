import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hycas_jax import dct


@pytest.mark.parametrize("n", [1, 4, 7, 28])
def test_dct_matrix_is_orthonormal(n):
    d = dct.dct_matrix(n)
    np.testing.assert_allclose(d @ d.T, np.eye(n), atol=1e-12)


def test_dct2_roundtrip_and_dc_term():
    x = jax.random.uniform(jax.random.key(0), (2, 6, 5, 3))
    np.testing.assert_allclose(dct.idct2(dct.dct2(x)), x, atol=1e-5)
    const = jnp.full((1, 4, 4, 1), 2.0)
    c = np.array(dct.dct2(const))[0, :, :, 0]
    assert c[0, 0] == pytest.approx(2.0 * 4)  # orthonormal: DC = mean * sqrt(H * W)
    c[0, 0] = 0
    np.testing.assert_allclose(c, 0, atol=1e-5)
    # Energy is preserved (Parseval) because the transform is orthonormal.
    assert float(jnp.sum(dct.dct2(x) ** 2)) == pytest.approx(float(jnp.sum(x**2)), rel=1e-5)


def test_lowpass_keeps_the_corner_at_zero_frequency():
    m = dct.lowpass_mask_1d(8, 0.5)
    np.testing.assert_array_equal(m, [1, 1, 1, 1, 0, 0, 0, 0])
    p = dct.lowpass_projection(8, 0.5)
    np.testing.assert_allclose(p @ p, p, atol=1e-12)  # a projection
    np.testing.assert_allclose(p, p.T, atol=1e-12)
    assert np.linalg.norm(p, 2) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="keep"):
        dct.lowpass_mask_1d(8, 0.0)

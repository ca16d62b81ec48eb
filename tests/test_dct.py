import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hycas_jax.nn import dct


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


@pytest.mark.parametrize("form", dct.LOWPASS_FORMS)
@pytest.mark.parametrize("shape", [(3, 28, 28, 1), (2, 7, 5, 4), (2, 14, 14, 16)])
def test_lowpass_forms_apply_the_same_projection(form, shape):
    x = jax.random.normal(jax.random.key(1), shape)
    ph, pw = dct.lowpass_projection(shape[1], 0.5), dct.lowpass_projection(shape[2], 0.5)
    want = np.einsum("gh,bhwc,vw->bgvc", ph, np.asarray(x, np.float64), pw)
    # The same map as masking the 2-D DCT coefficients.
    np.testing.assert_allclose(
        want, dct.idct2(dct.dct2(x) * np.outer(dct.lowpass_mask_1d(shape[1], 0.5),
                                                dct.lowpass_mask_1d(shape[2], 0.5))[:, :, None]),
        atol=1e-5)
    got = jax.jit(lambda x: dct.lowpass(x, ph, pw, form))(x)
    assert got.shape == shape and got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, atol=2e-6, rtol=1e-5)
    # The projections are symmetric; general matrices also catch a transposed factor.
    rng = np.random.default_rng(0)
    ah, aw = rng.normal(size=(shape[1],) * 2), rng.normal(size=(shape[2],) * 2)
    np.testing.assert_allclose(dct.lowpass(x, ah, aw, form),
                               np.einsum("gh,bhwc,vw->bgvc", ah, np.asarray(x, np.float64), aw),
                               atol=1e-4, rtol=1e-4)


def test_unknown_lowpass_form_is_a_clear_error():
    p = dct.lowpass_projection(4, 0.5)
    with pytest.raises(ValueError, match="unknown low-pass form 'fft'"):
        dct.lowpass(jnp.zeros((1, 4, 4, 1)), p, p, "fft")

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import dense_matrix, top_singular_value

from hycas_jax.nn import spectral

CASES = [  # (kernel, c_in, c_out, stride, padding, (H, W))
    (1, 3, 5, 1, "SAME", (5, 5)),
    (3, 1, 1, 1, "SAME", (6, 6)),
    (3, 2, 4, 2, "SAME", (7, 6)),
    (3, 4, 2, 1, "VALID", (6, 6)),
    (5, 2, 3, 1, "SAME", (6, 5)),
    (5, 3, 3, 2, ((2, 0), (1, 3)), (8, 8)),
    (2, 3, 2, 1, "SAME", (5, 7)),
]


@pytest.mark.parametrize("k,cin,cout,stride,padding,hw", CASES)
def test_conv_bound_is_never_below_the_dense_norm(k, cin, cout, stride, padding, hw, rng):
    kernel = rng.normal(size=(k, k, cin, cout)).astype(np.float32)
    dense = dense_matrix(lambda x: spectral.conv2d(x, kernel, stride, padding), (1, *hw, cin))
    exact = top_singular_value(dense)
    bound = spectral.conv_operator_bound(kernel, hw)
    assert bound >= exact
    if stride == 1 and padding == "SAME":  # not absurdly loose where it should be near-tight
        assert bound <= 1.6 * exact


def test_conv_bound_is_exact_for_a_1x1_conv(rng):
    kernel = rng.normal(size=(1, 1, 4, 3))
    assert spectral.conv_operator_bound(kernel, (5, 5)) == pytest.approx(
        np.linalg.svd(kernel[0, 0], compute_uv=False)[0] * spectral.SAFETY)


def test_power_iteration_is_a_lower_bound_that_converges(rng):
    kernel = jnp.asarray(rng.normal(size=(3, 3, 2, 3)), jnp.float32)
    exact = top_singular_value(dense_matrix(lambda x: spectral.conv2d(x, kernel), (1, 6, 6, 2)))
    v = jax.random.normal(jax.random.key(0), (1, 6, 6, 2))
    few = float(spectral.conv_norm_estimate(spectral.conv_power_iteration(v, kernel, 2), kernel, 1, "SAME"))
    many = float(spectral.conv_norm_estimate(spectral.conv_power_iteration(v, kernel, 300), kernel, 1, "SAME"))
    assert few <= exact * (1 + 1e-5) and many <= exact * (1 + 1e-5)
    assert many == pytest.approx(exact, rel=1e-3)
    assert many >= few - 1e-6


def test_matrix_bound_and_bad_input(rng):
    m = rng.normal(size=(4, 7))
    assert spectral.matrix_bound(m) >= np.linalg.norm(m, 2)
    with pytest.raises(ValueError, match="NaN"):
        spectral.matrix_bound(np.full((2, 2), np.nan))
    with pytest.raises(ValueError, match="HWIO"):
        spectral.conv_operator_bound(np.ones((3, 3, 2)), (4, 4))


LAYERS = [  # (kernel, c_in, c_out, stride, (H, W)): the SAME convs the library builds
    (3, 2, 3, 1, (5, 5)),
    (3, 2, 3, 2, (6, 5)),
    (3, 4, 5, 1, (2, 2)),
    (2, 3, 2, 1, (5, 7)),
    (5, 1, 2, 2, (8, 8)),
    (3, 1, 2, 3, (7, 4)),
    (1, 3, 4, 2, (3, 3)),
]


@pytest.mark.parametrize("k,cin,cout,stride,hw", LAYERS)
def test_dense_matrix_is_the_layer_and_its_bound_is_tight(k, cin, cout, stride, hw, rng):
    kernel = rng.normal(size=(k, k, cin, cout)).astype(np.float32)
    dense = dense_matrix(lambda x: spectral.conv2d(x, kernel, stride), (1, *hw, cin))
    np.testing.assert_allclose(spectral.conv_dense_matrix(kernel, hw, stride), dense, atol=1e-6)
    exact = top_singular_value(dense)
    bound = spectral.conv_layer_bound(kernel, hw, stride)
    assert exact <= bound <= exact * spectral.SAFETY * (1 + 1e-9)
    assert bound <= spectral.conv_operator_bound(kernel, hw)


def test_layer_bound_falls_back_to_the_fft_bound_above_the_dense_limit(rng, monkeypatch):
    kernel = rng.normal(size=(3, 3, 2, 2))
    monkeypatch.setattr(spectral, "DENSE_LIMIT", 10)
    assert spectral.conv_layer_bound(kernel, (4, 4), 2) == spectral.conv_operator_bound(kernel, (4, 4))


def test_layer_bound_is_much_tighter_than_the_fft_bound_on_a_2x2_map(rng):
    """The case that made the budgeted 8x8-digits model report L = 4 instead of about 1.2."""
    kernel = rng.normal(size=(3, 3, 8, 8))
    assert spectral.conv_layer_bound(kernel, (2, 2)) < 0.8 * spectral.conv_operator_bound(kernel, (2, 2))

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hycas_jax.models.rani import RANI


def test_rani_matches_the_formula_and_ignores_the_input():
    rani = RANI(3, "residual", rngs=nnx.Rngs(0))
    rani.scale[...] = jnp.array([1.0, 2.0, 0.5])
    rani.shift[...] = jnp.array([0.0, -1.0, 1.0])
    key = jax.random.key(7)
    h = jax.random.normal(jax.random.key(1), (2, 4, 4, 3))
    omega = jax.random.normal(key, h.shape)
    mask = jax.nn.sigmoid(rani.scale[...] * omega + rani.shift[...])
    np.testing.assert_allclose(rani(h, key), h + h * mask, rtol=1e-6)
    # The mask does not depend on h: the gain out / h is the same for another input.
    h2 = h + 3.0
    np.testing.assert_allclose(rani(h2, key) / h2, rani(h, key) / h, rtol=1e-4)
    assert float(mask.min()) >= 0 and float(mask.max()) <= 1


def test_rani_is_redrawn_per_key_and_averaged_form_halves():
    rani = RANI(2, "residual", rngs=nnx.Rngs(0))
    half = RANI(2, "averaged", rngs=nnx.Rngs(0))
    h = jnp.ones((1, 3, 3, 2))
    a, b = rani(h, jax.random.key(0)), rani(h, jax.random.key(1))
    assert not np.allclose(a, b)
    np.testing.assert_allclose(half(h, jax.random.key(0)), a / 2, rtol=1e-6)
    assert (rani.lipschitz_bound(), half.lipschitz_bound()) == (2.0, 1.0)
    with pytest.raises(ValueError, match="unknown RANI form"):
        RANI(2, "bogus", rngs=nnx.Rngs(0))


def test_rani_gain_never_exceeds_its_bound_even_for_extreme_masks():
    rani = RANI(4, "residual", rngs=nnx.Rngs(0))
    rani.shift[...] = jnp.full((4,), 50.0)  # mask ~ 1 everywhere: the worst case
    x, y = jax.random.normal(jax.random.key(2), (2, 1, 5, 5, 4))
    key = jax.random.key(3)
    ratio = jnp.linalg.norm(rani(x, key) - rani(y, key)) / jnp.linalg.norm(x - y)
    assert 1.9 < float(ratio) <= rani.lipschitz_bound()

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hycas_jax.models import rani as rani_lib
from hycas_jax.models.rani import RANI


def test_rani_matches_the_formula_and_ignores_the_input():
    rani = RANI(3, "residual", spread="free", rngs=nnx.Rngs(0))
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
    rani = RANI(4, "residual", spread="free", rngs=nnx.Rngs(0))
    rani.shift[...] = jnp.full((4,), 50.0)  # mask ~ 1 everywhere: the worst case
    x, y = jax.random.normal(jax.random.key(2), (2, 1, 5, 5, 4))
    key = jax.random.key(3)
    ratio = jnp.linalg.norm(rani(x, key) - rani(y, key)) / jnp.linalg.norm(x - y)
    assert 1.9 < float(ratio) <= rani.lipschitz_bound()


def test_floored_mask_uses_the_floored_scale_and_bounded_shift():
    rani = RANI(2, "residual", rngs=nnx.Rngs(0))
    assert rani.spread == "floored"
    scale, shift = rani.mask_parameters()  # the initialization of the free form
    np.testing.assert_allclose(scale, 1.0, rtol=1e-6)
    np.testing.assert_array_equal(shift, 0.0)
    rani.scale[...] = jnp.array([-30.0, 2.0])
    rani.shift[...] = jnp.array([30.0, -0.5])
    key, h = jax.random.key(3), jnp.ones((1, 2, 2, 2))
    omega = jax.random.normal(key, h.shape)
    a = rani_lib.SCALE_FLOOR + jnp.log1p(jnp.exp(jnp.array([-30.0, 2.0])))
    b = rani_lib.SHIFT_LIMIT * jnp.tanh(jnp.array([30.0, -0.5]))
    np.testing.assert_allclose(rani(h, key), h + h * jax.nn.sigmoid(a * omega + b), rtol=1e-6)


def test_mask_sd_is_the_spread_over_omega():
    rani = RANI(3, "residual", spread="free", rngs=nnx.Rngs(0))
    rani.scale[...] = jnp.array([1.0, 0.2, 3.0])
    rani.shift[...] = jnp.array([0.0, 1.0, -2.0])
    omega = jax.random.normal(jax.random.key(0), (200_000, 1))
    sampled = jnp.std(jax.nn.sigmoid(rani.scale[...] * omega + rani.shift[...]), axis=0)
    np.testing.assert_allclose(rani.mask_sd(), sampled, rtol=1e-2)


def test_the_floor_holds_whatever_the_parameters_and_the_free_form_can_collapse():
    grid = jnp.linspace(-40.0, 40.0, 81)
    u, v = (a.reshape(-1) for a in jnp.meshgrid(grid, grid))
    rani = RANI(u.size, "residual", rngs=nnx.Rngs(0))
    rani.scale[...], rani.shift[...] = u, v
    sd = rani.mask_sd()
    assert float(sd.min()) >= rani_lib.MIN_MASK_SD
    assert float(sd.min()) == pytest.approx(rani_lib.MIN_MASK_SD, abs=1e-3)  # reached at the edge
    free = RANI(2, "residual", spread="free", rngs=nnx.Rngs(0))
    free.scale[...], free.shift[...] = jnp.array([0.0, 1.0]), jnp.array([0.0, 12.0])
    assert float(free.mask_sd().max()) < 1e-3  # what cross-entropy training can reach


def test_min_mask_sd_reads_every_rani_of_a_model():
    from hycas_jax import models
    cfg = models.default_config("small_cnn")
    cfg.image_shape, cfg.mean, cfg.std = (8, 8, 1), (0.5,), (0.25,)
    cfg.widths, cfg.strides, cfg.streams = (4,), (2,), (("sncan", "rpfan"),)
    model = models.build(cfg, key=jax.random.key(0))
    assert rani_lib.min_mask_sd(model) == pytest.approx(0.2083, abs=1e-4)
    # One stream's RANI at the floor scale (0.75, shift 0): sd 0.167.
    model.units[0].streams[1].rani.scale[...] = jnp.full((4,), -50.0)
    assert rani_lib.min_mask_sd(model) == pytest.approx(0.167, abs=2e-3)
    cfg.kind, cfg.rani = "lipschitz", "off"
    assert np.isnan(rani_lib.min_mask_sd(models.build(cfg, key=jax.random.key(0))))


def test_the_noise_form_is_a_model_config_choice():
    """New configs draw omega from 16 bits; a saved config that names no form keeps the
    exact normals it was trained with; the choice reaches every RANI of the model."""
    from hycas_jax import models, rng
    cfg = models.default_config()
    cfg.widths, cfg.strides = (4, 4, 4), (2, 2, 1)
    assert rani_lib.config_noise(cfg) == "quantile16"
    old = cfg.copy_and_resolve_references()
    del old["rani_noise"]
    assert rani_lib.config_noise(old) == "normal"
    for c, form in ((cfg, "quantile16"), (old, "normal")):
        model = models.build(c, key=jax.random.key(0))
        ranis = [m for _, m in nnx.iter_graph(model) if isinstance(m, RANI)]
        assert ranis and {r.noise for r in ranis} == {form}
    h = jnp.ones((1, 3, 3, 2))
    r = RANI(2, "residual", spread="free", noise="quantile16", rngs=nnx.Rngs(0))
    omega = rng.quantile16(jax.random.key(4), h.shape)
    np.testing.assert_allclose(r(h, jax.random.key(4)), h + h * jax.nn.sigmoid(omega), rtol=1e-6)
    cfg.rani_noise = "uniform"
    with pytest.raises(ValueError, match="unknown internal noise 'uniform'"):
        models.build(cfg, key=jax.random.key(0))

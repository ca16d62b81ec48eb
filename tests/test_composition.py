"""The model's logits_fn composes with every JAX transformation a researcher uses,
with the input passed or closed over: no input check may force a traced value."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hycas_jax
from hycas_jax import models
from hycas_jax.certification import smoothing


def _tiny_model():
    cfg = models.default_config("small_cnn")
    cfg.image_shape, cfg.mean, cfg.std = (8, 8, 1), (0.5,), (0.25,)
    cfg.widths, cfg.strides = (4,), (2,)  # one unit with every stream: quick to compile
    cfg.streams = (("sncan", "fdpan", "rpfan"),)
    return hycas_jax.functional(models.build(cfg, key=jax.random.key(0))), cfg


@pytest.fixture(scope="module")
def setup():
    (logits_fn, params), cfg = _tiny_model()
    x = jax.random.uniform(jax.random.key(1), (2, *cfg.image_shape))
    keys = jax.random.split(jax.random.key(2), 3)
    eager = jnp.stack([logits_fn(params, x, k) for k in keys])  # (3, B, classes)
    return logits_fn, params, x, keys, eager


def _close(a, b):
    chex.assert_trees_all_close(a, b, rtol=1e-5, atol=1e-5)


def test_jit_with_x_closed_over_and_passed(setup):
    logits_fn, params, x, keys, eager = setup
    _close(jax.jit(lambda k: logits_fn(params, x, k))(keys[0]), eager[0])
    _close(jax.jit(lambda xx, k: logits_fn(params, xx, k))(x, keys[0]), eager[0])
    _close(jax.jit(lambda p, k: logits_fn(p, x, k))(params, keys[0]), eager[0])


def test_vmap_scan_map_and_fori_loop_over_keys(setup):
    logits_fn, params, x, keys, eager = setup
    one = lambda k: logits_fn(params, x, k)
    _close(jax.vmap(one)(keys), eager)
    _close(jax.lax.map(one, keys), eager)
    _, scanned = jax.lax.scan(lambda c, k: (c, one(k)), 0, keys)
    _close(scanned, eager)
    total = jax.lax.fori_loop(0, 3, lambda i, acc: acc + one(keys[i]), jnp.zeros_like(eager[0]))
    _close(total, eager.sum(0))


def test_grad_wrt_x_and_params_and_checkpoint(setup):
    logits_fn, params, x, keys, _ = setup
    loss = lambda p, xx: logits_fn(p, xx, keys[0])[:, 0].sum()
    gx = jax.grad(loss, argnums=1)(params, x)
    assert gx.shape == x.shape and bool(jnp.isfinite(gx).all())
    gp = jax.grad(loss)(params, x)
    chex.assert_trees_all_equal_structs(gp, params)
    # x closed over, gradient w.r.t. params only; and under rematerialization.
    gp_closed = jax.grad(lambda p: loss(p, x))(params)
    chex.assert_trees_all_close(gp_closed, gp, rtol=1e-5, atol=1e-6)
    gx_remat = jax.grad(lambda xx: jax.checkpoint(loss)(params, xx))(x)
    _close(gx_remat, gx)


def test_a_jitted_closure_is_traced_once_for_new_keys(setup):
    logits_fn, params, x, keys, eager = setup
    chex.clear_trace_counter()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def run(k):
        return logits_fn(params, x, k)

    for i, k in enumerate(keys):
        _close(run(k), eager[i])


def test_concrete_nan_is_still_refused_eagerly_and_under_jit():
    (logits_fn, params), cfg = _tiny_model()
    x = jnp.full((1, *cfg.image_shape), jnp.nan)
    with pytest.raises(ValueError, match="NaN"):
        logits_fn(params, x, jax.random.key(0))
    with pytest.raises(ValueError, match="NaN"):  # closed over: concrete at trace time
        jax.jit(lambda k: logits_fn(params, x, k))(jax.random.key(0))


def test_smoothing_entry_point_accepts_jax_and_numpy_inputs():
    (logits_fn, params), cfg = _tiny_model()
    x = np.full((1, *cfg.image_shape), 0.5, np.float32)
    a = smoothing.predict(logits_fn, params, x, jax.random.key(3), num_classes=10, sigma=0.25,
                          n=40, alpha=0.01, batch_size=20)
    b = smoothing.predict(logits_fn, params, jnp.asarray(x), jax.random.key(3), num_classes=10,
                          sigma=0.25, n=40, alpha=0.01, batch_size=20)
    np.testing.assert_array_equal(a.counts, b.counts)

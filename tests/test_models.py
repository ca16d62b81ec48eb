import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hycas_jax
from hycas_jax import models
from hycas_jax.evaluation.tightness import largest_gain
from hycas_jax.nn import lipschitz


def tiny(kind="hycas", rani="per_block", backbone="small_cnn", **overrides):
    cfg = models.default_config(backbone)
    cfg.kind, cfg.rani = kind, rani
    if backbone == "resnet18":
        cfg.image_shape, cfg.widths, cfg.blocks_per_stage = (8, 8, 3), (4, 6, 6, 8), 1
    else:
        cfg.image_shape, cfg.mean, cfg.std = (8, 8, 1), (0.5,), (0.25,)
        cfg.widths, cfg.strides = (4, 6), (1, 2)
        cfg.streams = (("sncan", "fdpan", "rpfan"),) * 2
    cfg.update(overrides)
    return cfg


def _x(cfg, b=3):
    return jax.random.uniform(jax.random.key(0), (b, *cfg.image_shape))


@pytest.mark.parametrize("backbone", ["small_cnn", "resnet18"])
@pytest.mark.parametrize("kind", ["hycas", "lipschitz", "plain"])
def test_build_forward_and_functional_api(backbone, kind):
    cfg = tiny(kind, backbone=backbone)
    model = models.build(cfg, key=jax.random.key(0))
    logits_fn, params = hycas_jax.functional(model)
    x, key = _x(cfg), jax.random.key(4)
    out = jax.jit(logits_fn)(params, x, key)
    assert out.shape == (3, 10) and out.dtype == jnp.float32
    np.testing.assert_array_equal(out, jax.jit(logits_fn)(params, x, key))
    other = jax.jit(logits_fn)(params, x, jax.random.key(5))
    assert (not np.allclose(out, other)) == (kind == "hycas")
    np.testing.assert_allclose(model(x, key), out, rtol=1e-4, atol=1e-5)
    assert np.isfinite(lipschitz.network_bound(model))


def test_legacy_prng_keys_work():
    cfg = tiny()
    model = models.build(cfg, key=jax.random.PRNGKey(0))
    logits_fn, params = hycas_jax.functional(model)
    assert logits_fn(params, _x(cfg), jax.random.PRNGKey(1)).shape == (3, 10)


@pytest.mark.parametrize("kind,rani", [("hycas", "per_block"), ("hycas", "budgeted"),
                                       ("hycas", "final"), ("lipschitz", "off"), ("plain", "off")])
def test_network_bound_dominates_the_gain_found_by_gradient_ascent(kind, rani):
    cfg = tiny(kind, rani)
    model = models.build(cfg, key=jax.random.key(1))
    logits_fn, params = hycas_jax.functional(model)
    x = jax.random.uniform(jax.random.key(2), (3, *cfg.image_shape))
    found = largest_gain(logits_fn, params, x, [jax.random.key(2), jax.random.key(3)],
                         steps=150)
    bound = lipschitz.network_bound(model)
    assert 0 < found <= bound


def test_largest_gain_finds_the_norm_of_a_linear_map():
    w = jnp.asarray(np.random.default_rng(0).normal(size=(12, 5)), jnp.float32)
    fn = lambda params, x, key: x.reshape(x.shape[0], -1) @ params  # noqa: E731
    found = largest_gain(fn, w, jnp.zeros((2, 3, 4, 1)), [jax.random.key(0)], steps=300)
    exact = float(np.linalg.svd(np.asarray(w), compute_uv=False)[0])
    assert 0.98 * exact <= found <= exact * (1 + 1e-5)


def test_the_two_rani_placements_give_the_bounds_the_spec_says():
    paper = models.build(tiny(rani="per_block"), key=jax.random.key(3))
    budget = models.build(tiny(rani="budgeted", std=(1.0,)), key=jax.random.key(3))
    det = models.build(tiny(kind="lipschitz", std=(1.0,)), key=jax.random.key(3))
    k = len(paper.units)
    # Budgeted: no factor inside blocks, one factor 2 at the end.
    budget_core = budget.lipschitz_bound() / 2.0
    assert budget_core <= 1.1  # every other layer is (up to power-iteration slack) 1-Lipschitz
    assert budget.lipschitz_bound() <= 2.0 * 1.1
    # Paper placement: 2 (stream RANI) x 2 (post-fusion RANI) per block, times normalization.
    per_block = paper.lipschitz_bound() * paper.normalize.std[0]
    assert per_block == pytest.approx(4.0**k * budget_core, rel=1e-6)
    assert det.lipschitz_bound() <= 1.1


def test_bad_inputs_get_clear_errors():
    cfg = tiny()
    model = models.build(cfg, key=jax.random.key(0))
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="NHWC"):
        model(jnp.zeros((8, 8, 1)), key)
    with pytest.raises(ValueError, match="image shape"):
        model(jnp.zeros((1, 8, 8, 3)), key)
    with pytest.raises(ValueError, match="float"):
        model(jnp.zeros((1, 8, 8, 1), jnp.int32), key)
    with pytest.raises(ValueError, match="NaN"):
        model(jnp.full((1, 8, 8, 1), jnp.nan), key)
    with pytest.raises(ValueError, match="PRNG key"):
        model(jnp.zeros((1, 8, 8, 1)))
    for field, value, msg in [("streams", (("sncan", "bogus"),) * 2, "unknown stream"),
                              ("backbone", "vgg", "unknown backbone"),
                              ("kind", "magic", "unknown model kind"),
                              ("rani", "sometimes", "RANI placement"),
                              ("std", (0.0,), "std")]:
        bad = tiny()
        bad[field] = value
        with pytest.raises(ValueError, match=msg):
            models.build(bad, key=key)


@pytest.mark.slow
def test_full_size_resnet18_builds_and_runs():
    cfg = models.default_config("resnet18")
    model = models.build(cfg, key=jax.random.key(0))
    logits_fn, params = hycas_jax.functional(model)
    out = jax.jit(logits_fn)(params, jnp.zeros((2, 32, 32, 3)), jax.random.key(1))
    assert out.shape == (2, 10)
    assert np.isfinite(lipschitz.network_bound(model))


def test_build_takes_the_model_config_only():
    from hycas_jax.config import experiment
    config = experiment("digits8x8")
    with pytest.raises(ValueError, match="pass config.model"):
        models.build(config, key=jax.random.key(0))
    assert models.build(config.model, key=jax.random.key(0)).image_shape == (8, 8, 1)

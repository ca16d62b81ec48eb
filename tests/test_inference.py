"""hycas_jax.nn.frozen.freeze: derived weights computed once, same function, sound bounds."""
import jax
import numpy as np
import pytest
from flax import nnx
from test_models import _x, tiny

import hycas_jax
from hycas_jax import models
from hycas_jax.certification import montecarlo
from hycas_jax.evaluation.tightness import largest_gain
from hycas_jax.models.fdpan import FDPAN
from hycas_jax.nn import conv, lipschitz
from hycas_jax.nn import frozen as frozen_lib


def _jaxpr_text(fn, *args) -> str:
    return str(jax.make_jaxpr(fn)(*args))  # nested jaxprs (jit(norm), ...) included


@pytest.mark.parametrize("backbone,kind,rani", [
    ("small_cnn", "hycas", "per_block"), ("small_cnn", "hycas", "budgeted"),
    ("small_cnn", "lipschitz", "off"), ("small_cnn", "plain", "off"),
    pytest.param("resnet18", "hycas", "per_block", marks=pytest.mark.slow),
    pytest.param("resnet18", "lipschitz", "off", marks=pytest.mark.slow),  # skip SNCs, block mix
    ("resnet18", "plain", "off")])
def test_frozen_model_computes_the_same_logits_and_bound(backbone, kind, rani):
    model = models.build(tiny(kind, rani, backbone=backbone), key=jax.random.key(0))
    frozen = hycas_jax.freeze(model)
    assert frozen is not model and not frozen_lib.is_frozen(model)
    assert frozen_lib.is_frozen(frozen) == (kind != "plain")  # a plain CNN derives nothing
    x, key = _x(tiny(backbone=backbone)), jax.random.key(4)
    ours, theirs = (jax.jit(f)(p, x, key) for f, p in (hycas_jax.functional(model),
                                                       hycas_jax.functional(frozen)))
    np.testing.assert_allclose(theirs, ours, rtol=1e-5, atol=1e-6)
    # Same bound up to rounding: FDPAN's folded kernel is bounded directly.
    assert lipschitz.network_bound(frozen) == pytest.approx(lipschitz.network_bound(model), rel=1e-3)


def test_frozen_forward_pass_does_no_parameter_work():
    # Exact normals for omega: quantile16's map is key work (a sqrt and a polynomial per
    # draw), which would blur the count of parameter work below.
    cfg = tiny()
    cfg.rani_noise = "normal"
    model = models.build(cfg, key=jax.random.key(1))
    x, key = _x(tiny()), jax.random.key(2)
    before = _jaxpr_text(*hycas_jax.functional(model), x, key)
    after = _jaxpr_text(*hycas_jax.functional(hycas_jax.freeze(model)), x, key)
    # The head's SVD norm and the SNCs' norm estimates (a sqrt each) are gone, and so are
    # most equations (the mixes' matrix exponentials); the streams' own work remains,
    # RPFAN's per-draw projection bound (key work, not parameter work) included.
    assert "svd" in before and "svd" not in after
    assert after.count("sqrt") < before.count("sqrt")
    assert len(after) < 0.7 * len(before)
    assert "conv_general_dilated" in after and "dot_general" in after
    # Without RPFAN nothing takes a square root any more.
    cfg = tiny(streams=(("sncan", "fdpan"),) * 2)
    cfg.rani_noise = "normal"
    model = models.build(cfg, key=jax.random.key(1))
    before = _jaxpr_text(*hycas_jax.functional(model), x, key)
    after = _jaxpr_text(*hycas_jax.functional(hycas_jax.freeze(model)), x, key)
    assert "sqrt" in before and "sqrt" not in after


def test_freeze_is_idempotent_and_leaves_the_original_trainable():
    model = models.build(tiny(), key=jax.random.key(1))
    frozen = hycas_jax.freeze(model)
    assert hycas_jax.freeze(frozen) is frozen
    conv.power_iterate_all(model)  # the original still trains
    with pytest.raises(RuntimeError, match="frozen for inference"):
        conv.power_iterate_all(frozen)


def test_frozen_bound_dominates_the_gain_found_by_gradient_ascent():
    cfg = tiny()
    frozen = hycas_jax.freeze(models.build(cfg, key=jax.random.key(1)))
    logits_fn, params = hycas_jax.functional(frozen)
    x = jax.random.uniform(jax.random.key(2), (3, *cfg.image_shape))
    found = largest_gain(logits_fn, params, x, [jax.random.key(2), jax.random.key(3)], steps=150)
    assert 0 < found <= lipschitz.network_bound(frozen)


def test_frozen_and_original_certify_alike():
    cfg = tiny()
    model = models.build(cfg, key=jax.random.key(5))
    x = _x(cfg, 2)
    results = [montecarlo.sample_stats(*hycas_jax.functional(m), x, jax.random.key(6), num_classes=10,
                                      sigma=0.25, num=512, chunk_size=128)
               for m in (model, hycas_jax.freeze(model))]
    # Same keys, same function up to float rounding: the votes can differ only where
    # two logits tie to rounding, which these random-weight logits do not.
    np.testing.assert_array_equal(results[0].counts, results[1].counts)
    np.testing.assert_allclose(results[0].logit_sum, results[1].logit_sum, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("form", ["matmul", "kron"])
def test_freeze_sets_every_fdpan_low_pass_form_and_keeps_the_function(form):
    model = models.build(tiny(), key=jax.random.key(1))
    default = hycas_jax.freeze(model)
    other = hycas_jax.freeze(model, lowpass_form=form)
    forms = lambda m: [s.lowpass_form for _, s in nnx.iter_modules(m) if isinstance(s, FDPAN)]
    assert forms(model) and set(forms(other)) == {form} and set(forms(default)) == {"einsum"}
    assert set(forms(model)) == {"einsum"}  # the argument is not changed
    # From a frozen copy too: a new copy with the form, the frozen weights reused.
    again = hycas_jax.freeze(default, lowpass_form=form)
    assert again is not default and set(forms(again)) == {form} and set(forms(default)) == {"einsum"}
    x, key = _x(tiny()), jax.random.key(4)
    ours, theirs = (jax.jit(f)(p, x, key) for f, p in (hycas_jax.functional(default),
                                                       hycas_jax.functional(other)))
    # The forward pass computes it the new way: a different program, the same numbers.
    assert _jaxpr_text(*hycas_jax.functional(other), x, key) != _jaxpr_text(
        *hycas_jax.functional(default), x, key)
    np.testing.assert_allclose(theirs, ours, rtol=1e-5, atol=1e-6)
    assert lipschitz.network_bound(other) == pytest.approx(lipschitz.network_bound(default), rel=1e-9)


def test_freeze_rejects_an_unknown_low_pass_form():
    with pytest.raises(ValueError, match="unknown low-pass form 'fft'"):
        hycas_jax.freeze(models.build(tiny(), key=jax.random.key(1)), lowpass_form="fft")

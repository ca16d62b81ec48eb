"""Unit checks of the pieces APGD is built from: losses, EOT and fresh keys,
the checkpoint schedule and step-size rule, and the scoring statistics."""

import math
import sys

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from hycas_jax.attacks import apgd, autoattack, eot, losses, result
from hycas_jax.certification import stats as hstats

apgd_module = sys.modules["hycas_jax.attacks.apgd"]


def test_dlr_matches_definition_and_is_shift_and_scale_invariant():
    logits = jnp.array([[3.0, 1.0, 0.0, -2.0], [0.5, 4.0, 2.0, 1.0]])
    y = jnp.array([0, 0])
    # Row 0: y is top; -(3 - 1) / (3 - 0). Row 1: y is 2nd; -(0.5 - 4) / (4 - 1).
    np.testing.assert_allclose(losses.dlr(logits, y), [-2 / 3, 3.5 / 3], rtol=1e-6)
    np.testing.assert_allclose(losses.dlr(5 * logits + 7, y), losses.dlr(logits, y), rtol=1e-5)
    target = jnp.array([3, 2])
    # -(z_y - z_t) / (z_1 - (z_3 + z_4) / 2).
    expected = [-(3 + 2) / (3 - (0 - 2) / 2), -(0.5 - 2) / (4 - (1 + 0.5) / 2)]
    np.testing.assert_allclose(losses.dlr_targeted(logits, y, target), expected, rtol=1e-6)
    np.testing.assert_allclose(losses.dlr_targeted(2 * logits - 1, y, target), expected,
                               rtol=1e-5)


def test_margin_sign_is_misclassification_and_ce_variants():
    logits = jax.random.normal(jax.random.key(0), (50, 6))
    y = jax.random.randint(jax.random.key(1), (50,), 0, 6)
    np.testing.assert_array_equal(losses.margin(logits, y) < 0, jnp.argmax(logits, 1) != y)
    log_p = jax.nn.log_softmax(logits)
    np.testing.assert_allclose(losses.cross_entropy(logits, y), -log_p[jnp.arange(50), y],
                               rtol=1e-6)
    t = (y + 1) % 6
    np.testing.assert_allclose(losses.cross_entropy_targeted(logits, y, t),
                               log_p[jnp.arange(50), t], rtol=1e-6)


def _paper_checkpoints(n_iter):
    """w_j = ceil(p_j N) with p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)."""
    p_prev, p, points = 0.0, 0.22, []
    while p <= 1.0:
        points.append(math.ceil(round(p * n_iter, 6)))
        p_prev, p = p, p + max(p - p_prev - 0.03, 0.06)
    return points


def _integer_checkpoints(n_iter):
    first, decrement, minimum = apgd_module.checkpoint_windows(n_iter)
    points, window = [first], first
    while True:
        window = max(window - decrement, minimum)
        if points[-1] + window > n_iter:
            return points
        points.append(points[-1] + window)


def test_checkpoint_schedule_matches_the_paper():
    assert _integer_checkpoints(100) == _paper_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert _integer_checkpoints(1000) == _paper_checkpoints(1000)


def _state(n_increase, reduced_last, loss_best, loss_at_check):
    batch = len(n_increase)
    image = lambda v: jnp.full((batch, 2, 2, 1), v)
    return apgd_module._State(
        x_cur=image(0.1), x_prev=image(0.0), grad=image(1.0), loss_cur=jnp.zeros(batch),
        step=jnp.full((batch,), 0.4),
        progress=result.Progress(x_adv=image(0.0), success=jnp.zeros(batch, bool),
                                 x_best=image(0.9), loss_best=jnp.asarray(loss_best)),
        grad_best=image(-1.0), n_increase=jnp.asarray(n_increase),
        since_check=jnp.asarray(10), window=jnp.asarray(10),
        loss_at_check=jnp.asarray(loss_at_check), reduced_last=jnp.asarray(reduced_last),
        key=jax.random.key(0))


def test_checkpoint_halves_on_oscillation_or_stall_and_restarts_from_best():
    # 0: rose in 7 of 10 steps < 0.75 (oscillating); 1: rose in 8, improved;
    # 2: rose in 8, no improvement, not halved last time (stalled);
    # 3: the same but halved at the last checkpoint (condition 2 does not apply).
    state = _state([7, 8, 8, 8], [False, False, False, True], [1.0, 2.0, 1.0, 1.0],
                   [1.0, 1.0, 1.0, 1.0])
    out = apgd_module._checkpoint(state, rho=0.75, decrement=3, min_window=6)
    halved = np.array([True, False, True, False])
    np.testing.assert_allclose(out.step, np.where(halved, 0.2, 0.4))
    np.testing.assert_array_equal(out.reduced_last, halved)
    np.testing.assert_allclose(out.x_cur[:, 0, 0, 0], np.where(halved, 0.9, 0.1))
    np.testing.assert_allclose(out.grad[:, 0, 0, 0], np.where(halved, -1.0, 1.0))
    assert int(out.window) == 7 and int(out.since_check) == 0
    np.testing.assert_array_equal(out.n_increase, 0)
    np.testing.assert_allclose(out.loss_at_check, [1.0, 2.0, 1.0, 1.0])


def test_clopper_pearson_matches_beta_quantiles_and_edges():
    low, high = hstats.clopper_pearson(30, 100, 0.95)
    assert math.isclose(low, stats.beta.ppf(0.025, 30, 71))
    assert math.isclose(high, stats.beta.ppf(0.975, 31, 70))
    assert hstats.clopper_pearson(0, 10, 0.95)[0] == 0.0
    assert hstats.clopper_pearson(10, 10, 0.95)[1] == 1.0


def test_vote_decision_uses_a_two_sided_binomial_test():
    counts = np.array([[60, 40, 0], [90, 10, 0], [50, 50, 0], [0, 3, 97]])
    np.testing.assert_array_equal(hstats.vote_pvalue(counts) <= 0.001, [False, True, False, True])
    p_value = stats.binomtest(60, 100, 0.5).pvalue
    assert hstats.vote_pvalue(counts[:1])[0] <= p_value * 1.001


def _keyed_linear(record):
    """A linear classifier plus key-drawn logit noise that reports each key it sees."""
    def logits_fn(params, x, key):
        jax.debug.callback(record, jax.random.key_data(key))
        noise = 0.1 * jax.random.normal(key, (x.shape[0], params.shape[1]))
        return x.reshape(x.shape[0], -1) @ params + noise
    return logits_fn


def test_eot_averages_loss_and_gradient_over_split_keys():
    logits_fn = _keyed_linear(lambda _: None)
    params = jax.random.normal(jax.random.key(0), (16, 5))
    x = jax.random.uniform(jax.random.key(1), (4, 4, 4, 1))
    y = jnp.array([0, 1, 2, 3])
    key = jax.random.key(2)
    value, grad, _ = eot.loss_and_grad(logits_fn, "ce", 3, params, x, y, y, key)
    per_draw = [jax.value_and_grad(lambda v: losses.cross_entropy(logits_fn(params, v, k), y).sum())(x)
                for k in jax.random.split(key, 3)]
    np.testing.assert_allclose(grad, sum(g for _, g in per_draw) / 3, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(value.sum(), sum(v for v, _ in per_draw) / 3, rtol=1e-5)


def test_every_forward_pass_draws_a_fresh_key():
    seen = []
    logits_fn = _keyed_linear(lambda k: seen.append(np.asarray(k).reshape(-1, k.shape[-1])))
    params = jax.random.normal(jax.random.key(0), (16, 5))
    x = jax.random.uniform(jax.random.key(1), (8, 4, 4, 1))
    y = jnp.argmax(x.reshape(8, -1) @ params, axis=1)
    for key in (jax.random.key(3), jax.random.PRNGKey(3)):  # typed and legacy keys
        seen.clear()
        # A small eps leaves points robust, so restarts and both attacks run.
        apgd(logits_fn, params, x, y, key, eps=0.01, n_iter=5, eot_iter=3, n_restarts=2)
        autoattack(logits_fn, params, x, y, key, eps=0.01, n_iter=3, eot_iter=2)
        keys = np.concatenate(seen)
        assert len(keys) >= 2 * 6 * 3 + 2 * 4 * 2
        assert len({tuple(row) for row in keys}) == len(keys)

"""Sanity suite (SPEC section 5) on a tiny MLP with multiplicative noise drawn
from the key: accuracy falls to chance at large eps, more iterations or EOT
draws do not raise accuracy, fixing the randomness makes the attack at least
as strong, and every output stays in the threat model."""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hycas_jax.attacks import apgd, autoattack, pgd, score_single, score_vote, square_linf

N_CLASSES, HIDDEN, NOISE = 10, 32, 0.5
SHAPE = (64, 8, 8, 1)
# Statistical slack for comparing two attack runs scored with 20 passes each.
TOLERANCE = 0.03


def _init(key):
    k1, k2 = jax.random.split(key)
    w1 = 3 * jax.random.normal(k1, (64, HIDDEN)) / 8.0
    w2 = jax.random.normal(k2, (HIDDEN, N_CLASSES)) / np.sqrt(HIDDEN)
    # Centre the first layer on mid-grey inputs so all classes occur.
    return w1, -0.5 * w1.sum(axis=0), w2


def noisy_mlp(params, x, key):
    """(B, 8, 8, 1) -> (B, 10); hidden units scaled by 1 + NOISE * N(0, 1)."""
    w1, b1, w2 = params
    hidden = jax.nn.relu(x.reshape(x.shape[0], -1) @ w1 + b1)
    return (hidden * (1 + NOISE * jax.random.normal(key, hidden.shape))) @ w2


FIXED_NOISE = jax.random.normal(jax.random.key(123), (HIDDEN,))


def fixed_mlp(params, x, key):
    """The same network with its randomness frozen to one draw, shared by all
    examples so that a point's output does not depend on its batch."""
    del key
    w1, b1, w2 = params
    hidden = jax.nn.relu(x.reshape(x.shape[0], -1) @ w1 + b1)
    return (hidden * (1 + NOISE * FIXED_NOISE)) @ w2


@pytest.fixture(scope="module")
def problem():
    params = _init(jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), SHAPE)
    # Labels: the prediction averaged over many draws, so most are learnable.
    mean_logits = jax.vmap(lambda k: noisy_mlp(params, x, k))(jax.random.split(jax.random.key(2), 64))
    return params, x, jnp.argmax(mean_logits.mean(axis=0), axis=1)


def _robust_accuracy(logits_fn, params, x_adv, y, seed=7):
    return score_single(logits_fn, params, x_adv, y, jax.random.key(seed), repeats=20)["accuracy"]


def _apgd_accuracy(params, x, y, *, seed=3, logits_fn=noisy_mlp, **options):
    options = {"eps": 0.03, "n_iter": 10, "eot_iter": 2, **options}
    out = apgd(logits_fn, params, x, y, jax.random.key(seed), **options)
    return _robust_accuracy(logits_fn, params, out.x_best, y)


@pytest.mark.parametrize("norm,eps", [("linf", 0.5), ("l2", 4.0)])
def test_accuracy_falls_to_chance_at_large_eps(problem, norm, eps):
    params, x, y = problem
    assert _robust_accuracy(noisy_mlp, params, x, y) > 0.5
    assert _apgd_accuracy(params, x, y, norm=norm, eps=eps) <= 1.0 / N_CLASSES


def test_more_iterations_do_not_raise_accuracy(problem):
    params, x, y = problem
    short = _apgd_accuracy(params, x, y, n_iter=10)
    assert _apgd_accuracy(params, x, y, n_iter=20, seed=4) <= short + TOLERANCE
    assert 0.2 < short < 0.8  # mid-range, so the comparison means something


def test_more_eot_draws_do_not_raise_accuracy(problem):
    params, x, y = problem
    few = _apgd_accuracy(params, x, y, eot_iter=2)
    assert _apgd_accuracy(params, x, y, eot_iter=4, seed=4) <= few + TOLERANCE


def test_fixing_randomness_makes_attack_at_least_as_strong(problem):
    params, x, y = problem
    stochastic = _apgd_accuracy(params, x, y)
    fixed = apgd(fixed_mlp, params, x, y, jax.random.key(3), eps=0.03, n_iter=10)
    assert _robust_accuracy(fixed_mlp, params, fixed.x_adv, y) <= stochastic + TOLERANCE


def _assert_in_threat_model(x_adv, x, norm, eps):
    delta = np.asarray(x_adv, np.float64) - np.asarray(x, np.float64)
    assert np.asarray(x_adv).min() >= 0.0 and np.asarray(x_adv).max() <= 1.0
    if norm == "linf":
        assert np.abs(delta).max() <= eps + 1e-6
    else:
        assert np.sqrt((delta ** 2).sum(axis=(1, 2, 3))).max() <= eps * (1 + 1e-5)


@pytest.mark.parametrize("norm,eps", [("linf", 0.05), ("l2", 0.5)])
def test_outputs_stay_in_ball_and_box(problem, norm, eps):
    params, x, y = problem
    key = jax.random.key(5)
    results = [
        apgd(noisy_mlp, params, x, y, key, norm=norm, eps=eps, n_iter=10, eot_iter=2,
             n_restarts=2),
        pgd(noisy_mlp, params, x, y, key, norm=norm, eps=eps, step_size=eps / 2, n_iter=5),
    ]
    if norm == "linf":
        results += [
            apgd(noisy_mlp, params, x, y, key, eps=eps, n_iter=10, eot_iter=2,
                 loss="dlr-targeted", n_target_classes=2),
            square_linf(noisy_mlp, params, x, y, key, eps=eps, n_queries=20),
            autoattack(noisy_mlp, params, x, y, key, eps=eps, n_iter=10, eot_iter=2),
        ]
    for out in results:
        _assert_in_threat_model(out.x_adv, x, norm, eps)
        if hasattr(out, "x_best"):  # AutoAttackResult has only x_adv
            _assert_in_threat_model(out.x_best, x, norm, eps)


def test_same_key_same_output_and_no_recompile_across_eps(problem):
    params, x, y = problem
    run = lambda eps: apgd(noisy_mlp, params, x, y, jax.random.key(9), eps=eps, n_iter=5)
    first, again = run(0.02), run(0.02)
    np.testing.assert_array_equal(first.x_adv, again.x_adv)
    np.testing.assert_array_equal(first.x_best, again.x_best)
    compiled = sys.modules["hycas_jax.attacks.apgd"]._run._cache_size()
    run(0.04)
    assert sys.modules["hycas_jax.attacks.apgd"]._run._cache_size() == compiled


def test_autoattack_standard_flags_match_a_deterministic_model(problem):
    params, x, y = problem
    out = autoattack(fixed_mlp, params, x, y, jax.random.key(4), eps=0.03,
                     version="standard", n_iter=10, n_target_classes=3, square_queries=50)
    wrong = np.asarray(jnp.argmax(fixed_mlp(params, out.x_adv, None), axis=1) != y)
    np.testing.assert_array_equal(wrong, out.broken_by != -1)
    clean_wrong = np.asarray(jnp.argmax(fixed_mlp(params, x, None), axis=1) != y)
    np.testing.assert_array_equal(clean_wrong, out.broken_by == 0)
    assert out.attacks == ("clean", "apgd-ce", "apgd-t", "square")


def test_vote_rule_denoises_and_names_itself(problem):
    params, x, y = problem
    key = jax.random.key(6)
    single = score_single(noisy_mlp, params, x, y, key, repeats=20)
    vote = score_vote(noisy_mlp, params, x, y, key, m=64)
    assert (single["rule"], vote["rule"]) == ("single", "vote")
    assert vote["accuracy_lower"] <= vote["accuracy"] <= vote["accuracy_upper"]
    # Labels are the mean prediction, so the majority recovers more of them.
    assert vote["accuracy"] > single["accuracy"] + 0.1
    deterministic = score_vote(fixed_mlp, params, x, y, key, m=16)
    assert deterministic["abstain"] == 0.0
    assert deterministic["accuracy"] == score_single(fixed_mlp, params, x, y, key)["accuracy"]


def test_autoattack_rand_attacks_every_point(problem):
    # A clean pass that happens to misclassify must not leave the point
    # unattacked: scored again with fresh randomness it would count as robust.
    params, x, y = problem
    out = autoattack(noisy_mlp, params, x, y, jax.random.key(5), eps=0.1, version="rand",
                     n_iter=5, eot_iter=2)
    moved = np.asarray(jnp.abs(out.x_adv - x).reshape(x.shape[0], -1).max(axis=1)) > 0
    assert moved.all()
    assert not (out.broken_by == 0).any()  # no point is credited to the clean check


def _members_called(monkeypatch):
    """Patches the APGD AutoAttack runs; returns the list of losses it is called with."""
    module, calls = sys.modules["hycas_jax.attacks.autoattack"], []
    real = module.apgd

    def counting(*args, **kwargs):
        calls.append(kwargs["loss"])
        return real(*args, **kwargs)
    monkeypatch.setattr(module, "apgd", counting)
    return calls


def test_autoattack_takes_precomputed_members_instead_of_running_them(problem, monkeypatch):
    params, x, y = problem
    settings = dict(eps=0.05, n_iter=5, eot_iter=2)
    ce = apgd(noisy_mlp, params, x, y, jax.random.key(11), loss="ce", **settings).x_best
    dlr = apgd(noisy_mlp, params, x, y, jax.random.key(12), loss="dlr", **settings).x_best
    calls = _members_called(monkeypatch)
    both = autoattack(noisy_mlp, params, x, y, jax.random.key(5), version="rand",
                      precomputed={"apgd-ce": ce, "apgd-dlr": dlr}, **settings)
    assert calls == []  # nothing attacked again
    # Each point carries the output of the member whose check broke it, else DLR's.
    for index, out in ((1, ce), (2, dlr), (-1, dlr)):
        rows = both.broken_by == index
        np.testing.assert_array_equal(both.x_adv[rows], out[rows])
    assert (both.broken_by == 1).any() and (both.broken_by != 1).any()
    only_ce = autoattack(noisy_mlp, params, x, y, jax.random.key(5), version="rand",
                         precomputed={"apgd-ce": ce}, **settings)
    assert calls == ["dlr"]  # the remaining member runs, on the points CE left robust
    rows = only_ce.broken_by == 1
    np.testing.assert_array_equal(only_ce.x_adv[rows], ce[rows])
    _assert_in_threat_model(only_ce.x_adv, x, "linf", 0.05)


def test_autoattack_with_a_precomputed_member_is_as_strong(problem):
    # The reused APGD-CE is the same attack with other draws: robust accuracy agrees with
    # the ensemble run whole, within the scoring's Monte Carlo slack.
    params, x, y = problem
    settings = dict(eps=0.05, n_iter=10, eot_iter=2)
    ce = apgd(noisy_mlp, params, x, y, jax.random.key(11), loss="ce", **settings).x_best
    whole = autoattack(noisy_mlp, params, x, y, jax.random.key(5), **settings)
    reused = autoattack(noisy_mlp, params, x, y, jax.random.key(5),
                        precomputed={"apgd-ce": ce}, **settings)
    assert abs(_robust_accuracy(noisy_mlp, params, reused.x_adv, y)
               - _robust_accuracy(noisy_mlp, params, whole.x_adv, y)) <= 2 * TOLERANCE


def test_autoattack_refuses_a_member_it_cannot_take(problem):
    params, x, y = problem
    with pytest.raises(ValueError, match="autoattack-standard cannot take a precomputed 'apgd-dlr'"):
        autoattack(fixed_mlp, params, x, y, jax.random.key(5), eps=0.05, version="standard",
                   precomputed={"apgd-dlr": x})
    with pytest.raises(ValueError, match="precomputed 'apgd-ce' has shape"):
        autoattack(noisy_mlp, params, x, y, jax.random.key(5), eps=0.05,
                   precomputed={"apgd-ce": x[:3]})
    outside = jnp.clip(x + 0.1, 0.0, 1.0)  # an output at eps 0.1, given for eps 0.05
    with pytest.raises(ValueError, match="precomputed 'apgd-ce' leaves the linf ball of radius 0.05"):
        autoattack(noisy_mlp, params, x, y, jax.random.key(5), eps=0.05,
                   precomputed={"apgd-ce": outside})

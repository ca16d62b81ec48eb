"""APGD against linear classifiers, whose exact robustness inside the [0, 1]
box has a closed form (l_inf) or a one-dimensional exact solver (l_2)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hycas_jax.attacks import apgd, autoattack

SHAPE = (4, 4, 1)
DIM = 16


def _linear(params, x, key):
    """Deterministic linear classifier; the key is ignored."""
    del key
    w, b = params
    return x.reshape(x.shape[0], -1) @ w + b


def _box_offsets(x, eps):
    """Per-coordinate bounds of delta: |delta| <= eps (l_inf) and x + delta in [0, 1]."""
    return np.maximum(-eps, -x), np.minimum(eps, 1.0 - x)


def _min_linf(v, x, eps):
    """min over the box-clipped l_inf ball of v . delta: each coordinate at an end."""
    lo, hi = _box_offsets(x, eps)
    return np.minimum(v * lo, v * hi).sum(axis=-1)


def _min_l2(v, x, eps, n_bisect=200):
    """min of v . delta over ||delta||_2 <= eps, x + delta in [0, 1].

    KKT: delta(t) = clip(-t v, -x, 1 - x) for a multiplier t >= 0; ||delta(t)||
    grows with t, so bisect t until the norm reaches eps (or the box binds all).
    """
    lo, hi = -x, 1.0 - x
    delta = lambda t: np.clip(-t[:, None] * v, lo, hi)
    norm = lambda t: np.linalg.norm(delta(t), axis=1)
    t_lo, t_hi = np.zeros(len(x)), np.full(len(x), 1e6)
    for _ in range(n_bisect):
        mid = (t_lo + t_hi) / 2
        too_far = norm(mid) > eps
        t_hi, t_lo = np.where(too_far, mid, t_hi), np.where(too_far, t_lo, mid)
    return (v * delta(t_lo)).sum(axis=1)


def _binary_problem(n=400, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(DIM,)).astype(np.float32)
    # Pixels piled near 0 and 1, so the box constraint binds often.
    x = rng.beta(0.3, 0.3, size=(n, DIM)).astype(np.float32)
    b = -float(np.median(x @ w))
    # Logits (0, f): class 1 iff f = w.x + b > 0; the labels are the clean predictions.
    params = (jnp.stack([jnp.zeros(DIM), w], axis=1), jnp.array([0.0, b]))
    y = (x @ w + b > 0).astype(np.int32)
    return params, w, b, x, y


def _binary_exact_robust(w, b, x, y, min_fn, eps):
    """(n,) bool: no delta in the threat model flips the sign of y's margin."""
    sign = np.where(y == 1, 1.0, -1.0)
    margin = sign * (x @ w + b)
    return margin + min_fn(sign[:, None] * w, x, eps) > 0


def _min_unboxed(order):
    """min of v . delta over the ball alone: -eps ||v||_dual."""
    return lambda v, x, eps: -eps * np.linalg.norm(v, ord=order, axis=-1)


@pytest.mark.parametrize("norm,eps,min_fn,dual", [("linf", 0.1, _min_linf, 1),
                                                  ("l2", 0.3, _min_l2, 2)])
def test_apgd_matches_exact_binary_robustness(norm, eps, min_fn, dual):
    params, w, b, x, y = _binary_problem()
    exact_for = lambda fn: _binary_exact_robust(w.astype(np.float64), b, x.astype(np.float64),
                                                y, fn, eps)
    exact = exact_for(min_fn)
    # The check is informative: robust accuracy is mid-range, and ignoring
    # the [0, 1] box would be off by more than the tolerance.
    assert 0.2 < exact.mean() < 0.8
    assert exact.mean() - exact_for(_min_unboxed(dual)).mean() > 0.02
    out = apgd(_linear, params, x.reshape((-1,) + SHAPE), y, jax.random.key(0),
               norm=norm, eps=eps, n_iter=50, loss="ce")
    broken = np.asarray(out.success)
    # Sound: never breaks a point that is exactly robust...
    assert not (broken & exact).any()
    # ...and complete to within 1 point of robust accuracy.
    assert abs((~broken).mean() - exact.mean()) <= 0.01


def test_autoattack_standard_matches_exact_multiclass_linf():
    """10-class linear: a point is robust iff no pairwise margin can be flipped;
    APGD-T aims at every other class, so the ensemble should find all flips."""
    rng = np.random.default_rng(1)
    n_classes, eps = 10, 0.05
    w = rng.normal(size=(DIM, n_classes))
    x = rng.uniform(size=(300, DIM))
    y = np.argmax(x @ w, axis=1)
    margins = (x @ w)[np.arange(len(x)), y][:, None] - x @ w              # (n, K)
    directions = w[:, y].T[:, :, None] - w[None]                           # (n, D, K)
    worst = np.stack([_min_linf(directions[:, :, j], x, eps) for j in range(n_classes)], 1)
    others = np.arange(n_classes)[None] != y[:, None]
    exact = ((margins + worst > 0) | ~others).all(axis=1)
    assert 0.2 < exact.mean() < 0.9
    params = (jnp.asarray(w, jnp.float32), jnp.zeros(n_classes))
    out = autoattack(_linear, params, x.reshape((-1,) + SHAPE).astype(np.float32), y,
                     jax.random.key(0), norm="linf", eps=eps, version="standard",
                     n_iter=20, square_queries=20)
    robust = out.broken_by == -1
    assert not (~robust & exact).any()
    assert abs(robust.mean() - exact.mean()) <= 0.01

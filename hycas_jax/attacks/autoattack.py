"""AutoAttack (Croce & Hein, 2020): a fixed ensemble of attacks, each run only
on the points that every earlier attack left robust.

Versions:
  'rand': APGD-CE and APGD-DLR, 20 EOT draws each, no restarts, for
    classifiers with internal randomness.
  'standard': APGD-CE, APGD-T (targeted DLR, 9 target classes) and, for
    l_inf, the black-box Square Attack, for deterministic classifiers.

A point counts as broken when one fresh stochastic forward pass on the
attack's output misclassifies it (AutoAttack's own rule). In 'rand' that
output is each run's highest-EOT-loss point, not the first iterate one lucky
draw misclassified: the latter is a much weaker attack on a stochastic model.
For the same reason 'rand' skips the clean pre-check: one stochastic pass that
happens to misclassify the clean image would leave that point unattacked, and
re-scoring it with fresh randomness would count it robust. Final scoring, with
its Monte Carlo uncertainty, is separate: see ``scoring``.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from hycas_jax.attacks import result, square, validation
from hycas_jax.attacks.apgd import apgd

VERSIONS = ("rand", "standard")
# Members whose stand-alone run (`apgd` with loss 'ce' / 'dlr', one restart) is the
# ensemble's member itself, so a caller that ran it already can pass its output.
REUSABLE = {"rand": ("apgd-ce", "apgd-dlr"), "standard": ("apgd-ce",)}


class AutoAttackResult(NamedTuple):
    """``x_adv`` (B, H, W, C); ``broken_by`` (B,) int32: index into ``attacks``
    of the attack that broke the point ('clean' = misclassified before any
    attack), -1 where no attack did; ``attacks``: the names in run order.

    Points never broken carry the last attack's highest-loss point rather than
    the clean image, so re-scoring under fresh randomness tests the attack's
    best effort.
    """
    x_adv: jax.Array
    broken_by: np.ndarray
    attacks: tuple


@functools.partial(jax.jit, static_argnames=("logits_fn",))
def _correct(params, x, y, key, *, logits_fn):
    """(B,) bool: one stochastic forward pass classifies ``x`` as ``y``."""
    return jnp.argmax(logits_fn(params, x, key), axis=1) == y


def _check_in_threat_model(name, out, x, norm, eps):
    """A precomputed member's output must lie in [0, 1] and within eps of x (float32
    rounding allowed): one at another eps or norm would silently change the attack."""
    delta = (out - x).reshape(x.shape[0], -1)
    size = np.abs(delta).max(axis=1) if norm == "linf" else np.sqrt((delta ** 2).sum(axis=1))
    worst = float(size.max(initial=0.0))
    if worst > eps * (1 + 1e-5) + 1e-6 or out.min(initial=0.0) < 0 or out.max(initial=1.0) > 1:
        raise ValueError(f"precomputed {name!r} leaves the {norm} ball of radius {eps} "
                         f"around x or the [0, 1] box (largest {norm} distance {worst:.6g})")


def _ensemble(version, norm, eps, n_iter, eot_iter, n_target_classes, square_queries):
    """[(name, attack(logits_fn, params, x, y, key) -> AttackResult)] in run order."""
    run_apgd = functools.partial(apgd, norm=norm, eps=eps, n_iter=n_iter,
                                 eot_iter=eot_iter, n_restarts=1)
    if version == "rand":
        return [("apgd-ce", functools.partial(run_apgd, loss="ce")),
                ("apgd-dlr", functools.partial(run_apgd, loss="dlr"))]
    attacks = [("apgd-ce", functools.partial(run_apgd, loss="ce")),
               ("apgd-t", functools.partial(run_apgd, loss="dlr-targeted",
                                            n_target_classes=n_target_classes))]
    if norm == "linf":
        attacks.append(("square", functools.partial(square.square_linf, eps=eps,
                                                    n_queries=square_queries)))
    return attacks


def autoattack(logits_fn, params, x, y, key, *, norm="linf", eps, version="rand",
               n_iter=100, eot_iter=None, n_target_classes=9, square_queries=5000,
               precomputed=None):
    """Runs the AutoAttack ensemble against ``logits_fn(params, x, key) -> (B, K)``.

    Args:
      x: (B, H, W, C) float in [0, 1]; y: (B,) int; key: PRNG key.
      norm: 'linf' or 'l2'; eps: radius >= 0; version: 'rand' or 'standard'.
      n_iter: APGD iterations; eot_iter: EOT draws (default 20 for 'rand',
        1 for 'standard'); n_target_classes: targets of APGD-T;
      square_queries: Square Attack queries ('standard', l_inf only).
      precomputed: {member name: (B, H, W, C) output} of ensemble members already
        run on every point of ``x`` against this ``logits_fn`` with these settings
        (one restart; the output is APGD's ``x_best`` in 'rand', ``x_adv`` in
        'standard'). Only 'apgd-ce', and 'apgd-dlr' in 'rand', may be given. The
        ensemble takes such a member's output on the points still robust instead
        of running it again: the same attack with other random draws, so the
        ensemble is unchanged and that member's cost is saved.

    Returns:
      AutoAttackResult.
    """
    if version not in VERSIONS:
        raise ValueError(f"unknown version {version!r}; expected one of {VERSIONS}")
    validation.check_attack_inputs(logits_fn, params, x, y, key, norm=norm, eps=eps)
    eot_iter = (20 if version == "rand" else 1) if eot_iter is None else eot_iter
    # Checked up front: an attack that never runs (all points broken) would not.
    for name, value in (("n_iter", n_iter), ("eot_iter", eot_iter),
                        ("n_target_classes", n_target_classes), ("square_queries", square_queries)):
        validation.check_positive_int(name, value)
    x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32)
    attacks = _ensemble(version, norm, eps, n_iter, eot_iter, n_target_classes, square_queries)
    precomputed = dict(precomputed or {})
    reusable = REUSABLE[version]
    for name, out in precomputed.items():
        if name not in reusable:
            raise ValueError(f"autoattack-{version} cannot take a precomputed {name!r}; "
                             f"it can take {list(reusable)}")
        if np.shape(out) != x.shape:
            raise ValueError(f"precomputed {name!r} has shape {np.shape(out)}, x has {x.shape}")
        _check_in_threat_model(name, np.asarray(out, np.float64), np.asarray(x, np.float64),
                               norm, eps)
    key, clean_key = jax.random.split(key)
    if version == "rand":
        robust = np.ones(x.shape[0], bool)
    else:
        robust = np.array(_correct(params, x, y, clean_key, logits_fn=logits_fn))
    broken_by = np.where(robust, -1, 0).astype(np.int32)
    x_adv = x
    for index, (name, attack) in enumerate(attacks, start=1):
        key, attack_key, check_key = jax.random.split(key, 3)
        if not robust.any():
            break
        if name in precomputed:
            idx = np.flatnonzero(robust)
            candidate = jnp.asarray(precomputed[name], jnp.float32)[idx]
        else:
            ran = result.run_on(lambda xs, ys, k: attack(logits_fn, params, xs, ys, k),
                                robust, attack_key, x, y)
            idx, out = ran
            candidate = out.x_best if version == "rand" else out.x_adv
        still = np.asarray(_correct(params, candidate, y[idx], check_key, logits_fn=logits_fn))
        x_adv = x_adv.at[idx].set(candidate)
        broken_by[idx[~still]] = index
        robust[idx[~still]] = False
    return AutoAttackResult(x_adv=x_adv, broken_by=broken_by,
                            attacks=("clean",) + tuple(name for name, _ in attacks))

"""Scoring adversarial examples against a stochastic classifier, under a named
decision rule, with the Monte Carlo uncertainty of the score.

Rules:
  'single': the deployed classifier answers with one stochastic forward pass
    (AutoAttack's rule). Each point is scored over ``repeats`` fresh passes.
  'vote': the classifier answers with the majority vote of ``m`` passes, each
    on the input plus N(0, sigma^2) noise (sigma = 0: votes over internal
    randomness only; sigma > 0: a randomized-smoothing classifier).

Every report is a plain dict whose 'rule' key names the rule scored.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from hycas_jax import checks
from hycas_jax.attacks import validation
from hycas_jax.certification import montecarlo, stats

RULES = ("single", "vote")
_VOTE_PASSES_PER_CHUNK = 1000  # images x votes vmapped at once (memory)


@functools.partial(jax.jit, static_argnames=("logits_fn", "repeats"))
def _correct_per_pass(params, x, y, key, *, logits_fn, repeats):
    """(repeats, B) bool: each fresh forward pass classifies x as y."""
    def one_pass(_, k):
        return None, jnp.argmax(logits_fn(params, x, k), axis=1) == y
    return jax.lax.scan(one_pass, None, jax.random.split(key, repeats))[1]


def score_single(logits_fn, params, x_adv, y, key, *, repeats=10, confidence=0.95):
    """Robust accuracy under the 'single' rule.

    Args:
      x_adv: (B, H, W, C) float in [0, 1]; y: (B,) int; key: PRNG key.
      repeats: fresh forward passes per point (R).

    Returns:
      dict: rule='single'; accuracy, the mean over the R passes; stderr, the
      standard error across passes (nan when R = 1); ci, the Clopper-Pearson
      interval on the pooled B * R passes (conservative: the passes are
      independent Bernoulli trials with unequal means, whose sum varies less
      than a binomial); per_example (B,), the fraction of passes correct.
    """
    _check(logits_fn, params, x_adv, y, key, repeats=repeats, confidence=confidence)
    correct = np.asarray(_correct_per_pass(
        params, jnp.asarray(x_adv, jnp.float32), jnp.asarray(y, jnp.int32), key,
        logits_fn=logits_fn, repeats=repeats))
    per_pass = correct.mean(axis=1)
    stderr = float(per_pass.std(ddof=1) / np.sqrt(repeats)) if repeats > 1 else float("nan")
    return {
        "rule": "single", "repeats": repeats, "n": int(correct.shape[1]),
        "accuracy": float(per_pass.mean()), "stderr": stderr,
        "ci": stats.clopper_pearson(int(correct.sum()), correct.size, confidence),
        "confidence": confidence, "per_example": correct.mean(axis=0),
    }


def score_vote(logits_fn, params, x_adv, y, key, *, m=100, sigma=0.0, alpha=0.001):
    """Robust accuracy under the 'vote' rule.

    Args:
      x_adv: (B, H, W, C) float in [0, 1]; y: (B,) int; key: PRNG key.
      m: passes per point; sigma: std of the input Gaussian noise (>= 0);
      alpha: level of the per-point test that the vote is decided.

    Returns:
      dict: rule='vote'; accuracy, the fraction whose majority is y;
      accuracy_lower / accuracy_upper, counting undecided votes as wrong /
      right (each decided vote is wrong with probability <= alpha);
      abstain, the fraction undecided; prediction and decided, (B,) arrays.
    """
    n_classes = _check(logits_fn, params, x_adv, y, key, m=m, alpha=alpha)
    validation.check_eps(sigma, "sigma")
    # The smoothed classifier's own Monte Carlo pass (`montecarlo.sample_counts`): vote j
    # draws its noise and the model's randomness from fold_in(key, j).
    chunk = max(1, min(m, _VOTE_PASSES_PER_CHUNK // max(1, np.shape(x_adv)[0])))
    counts = montecarlo.sample_counts(logits_fn, params, x_adv, key, num_classes=n_classes,
                                     sigma=sigma, num=m, chunk_size=chunk)
    prediction = counts.argmax(axis=1)
    decided = stats.vote_pvalue(counts) <= alpha
    right = prediction == np.asarray(y)
    return {
        "rule": "vote", "m": m, "sigma": float(sigma), "alpha": alpha,
        "n": int(counts.shape[0]), "accuracy": float(right.mean()),
        "accuracy_lower": float((right & decided).mean()),
        "accuracy_upper": float((right | ~decided).mean()),
        "abstain": float((~decided).mean()), "prediction": prediction, "decided": decided,
    }


def score(logits_fn, params, x_adv, y, key, *, rule, **options):
    """Dispatches to ``score_single`` or ``score_vote`` by ``rule``."""
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; expected one of {RULES}")
    scorer = score_single if rule == "single" else score_vote
    return scorer(logits_fn, params, x_adv, y, key, **options)


def describe(report):
    """One line naming the rule, e.g. for logs and tables."""
    acc = 100 * report["accuracy"]
    if report["rule"] == "single":
        low, high = (100 * v for v in report["ci"])
        return (f"robust accuracy {acc:.2f}% (rule=single, {report['repeats']} passes, "
                f"stderr {100 * report['stderr']:.2f}, {100 * report['confidence']:.0f}% CI "
                f"[{low:.2f}, {high:.2f}], n={report['n']})")
    return (f"robust accuracy {acc:.2f}% (rule=vote, m={report['m']}, sigma={report['sigma']}, "
            f"bounds [{100 * report['accuracy_lower']:.2f}, {100 * report['accuracy_upper']:.2f}]"
            f" at alpha={report['alpha']}, abstain {100 * report['abstain']:.2f}%, "
            f"n={report['n']})")


def _check(logits_fn, params, x_adv, y, key, *, repeats=1, m=1, confidence=0.5, alpha=0.5):
    """Checks a scoring call's inputs; returns the number of classes."""
    checks.check_images(x_adv)
    n_classes = validation.num_classes(logits_fn, params, x_adv, key)
    validation.check_labels(y, np.shape(x_adv)[0], n_classes)
    validation.check_positive_int("repeats", repeats)
    validation.check_positive_int("m", m)
    for name, value in (("confidence", confidence), ("alpha", alpha)):
        if not 0.0 < value < 1.0:
            raise ValueError(f"{name} must lie in (0, 1), got {value}")
    return n_classes

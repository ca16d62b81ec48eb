"""Binomial statistics of Monte Carlo votes, shared by certification and attack scoring,
and the concentration bounds (Hoeffding, empirical Bernstein) of the margin certificate."""
from __future__ import annotations

import math

import numpy as np
from scipy import stats


def clopper_pearson_lower(k, n: int, alpha: float) -> np.ndarray:
    """One-sided (1 - alpha) Clopper-Pearson lower bound on a binomial p.

    k: int array of successes out of n trials. Returns float64, same shape;
    0 where k = 0 (the beta quantile is undefined there).
    """
    k = np.asarray(k, np.float64)
    with np.errstate(invalid="ignore"):
        lower = stats.beta.ppf(alpha, k, n - k + 1)
    return np.where(k > 0, lower, 0.0)


def clopper_pearson(successes: int, trials: int, confidence: float) -> tuple[float, float]:
    """Exact two-sided binomial confidence interval for a proportion."""
    tail = (1.0 - confidence) / 2.0
    low = stats.beta.ppf(tail, successes, trials - successes + 1) if successes > 0 else 0.0
    high = stats.beta.ppf(1 - tail, successes + 1, trials - successes) if successes < trials else 1.0
    return float(low), float(high)


def binomial_pvalue(top, runner_up) -> np.ndarray:
    """Two-sided binomial test p-values of top ~ Binomial(top + runner_up, 1/2)."""
    return np.array([stats.binomtest(int(a), int(a + b), 0.5).pvalue
                     for a, b in zip(np.ravel(top), np.ravel(runner_up))], np.float64)


def top_two(counts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(top class, its count, the runner-up's count) per row of vote counts (B, K);
    ties go to the lower class index, as argmax does."""
    counts = np.asarray(counts)
    order = np.argsort(-counts, axis=1, kind="stable")
    rows = np.arange(len(counts))
    return order[:, 0], counts[rows, order[:, 0]], counts[rows, order[:, 1]]


def vote_pvalue(counts) -> np.ndarray:
    """PREDICT's test (Cohen et al.): the two-sided binomial p-value of the top two
    vote counts of each row (B, K); the vote is decided at level alpha when p <= alpha."""
    _, n_a, n_b = top_two(counts)
    return binomial_pvalue(n_a, n_b)


def hoeffding_deviation(num: int, value_range: float, delta: float) -> float:
    """t with P[sample mean - mean >= t] <= delta (Hoeffding).

    For `num` iid values in an interval of length `value_range`.
    """
    return value_range * math.sqrt(math.log(1.0 / delta) / (2.0 * num))


def bernstein_deviation(num: int, value_range: float, variance, delta: float):
    """t with P[sample mean - mean >= t] <= delta: the empirical Bernstein bound
    (Maurer and Pontil 2009, Theorem 4) for `num` >= 2 iid values in an interval
    of length `value_range` whose unbiased sample variance is at most `variance`:
    sqrt(2 V ln(2/delta) / n) + 7 R ln(2/delta) / (3 (n - 1)). Larger V only
    loosens it, so an upper bound on the sample variance is enough."""
    log_term = math.log(2.0 / delta)
    return (np.sqrt(2.0 * np.maximum(variance, 0.0) * log_term / num)
            + 7.0 * value_range * log_term / (3.0 * (num - 1)))


BOUNDS = ("bernstein", "hoeffding", "both")


def check_bound(bound: str) -> None:
    if bound not in BOUNDS:
        raise ValueError(f"unknown margin bound {bound!r}; known: {list(BOUNDS)}")


def alpha_split(bound: str, alpha: float, num_classes: int) -> str:
    """How a margin certificate spends its failure probability, in words."""
    pairs = num_classes - 1
    if bound == "both":
        return (f"alpha = {alpha:g}: {pairs} one-sided bounds (one per runner-up class), each "
                f"Hoeffding and empirical Bernstein at alpha / {2 * pairs} = "
                f"{alpha / (2 * pairs):.3g}, the better kept")
    name = "empirical Bernstein" if bound == "bernstein" else "Hoeffding"
    return (f"alpha = {alpha:g}: {pairs} one-sided {name} bounds (one per runner-up class) "
            f"at alpha / {pairs} = {alpha / pairs:.3g}")

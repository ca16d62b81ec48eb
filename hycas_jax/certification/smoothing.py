"""Randomized smoothing (Cohen et al. 2019) for any stochastic JAX classifier.

A classifier is `logits_fn(params, x, key) -> logits (B, K)`: pure, jittable,
`x` float32 NHWC raw pixels in [0, 1], `key` a PRNG key (typed or legacy) from
which it draws all of its internal randomness Omega. The classifier certified
here is the smoothed majority vote

    g(x) = argmax_c P_{eps, Omega}[argmax f(x + eps; Omega) = c],
    eps ~ N(0, sigma^2 I) in raw pixel space, noisy inputs NOT clipped.

The samples are drawn and counted by `montecarlo` (keys, chunks and devices
are described there); the statistics run in float64 on the host. Both entry
points take an optional `mesh`: the same samples are drawn on any number of
devices, so predictions and radii equal the one-device results exactly.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np
from scipy.stats import norm

from hycas_jax import checks
from hycas_jax.certification import montecarlo, stats
from hycas_jax.certification.montecarlo import LogitsFn


class CertifyResult(NamedTuple):
    """Per-image output of `certify` for B images (host numpy, float64 stats).

    prediction: int64 (B,), the certified class, -1 on abstain.
    radius: float64 (B,), certified l2 radius of g, 0 on abstain.
    counts_selection: int64 (B, K), counts of the n0 selection samples.
    counts: int64 (B, K), counts of the n estimation samples.
    pA_lower: float64 (B,), one-sided Clopper-Pearson lower bound on pA.
    """

    prediction: np.ndarray
    radius: np.ndarray
    counts_selection: np.ndarray
    counts: np.ndarray
    pA_lower: np.ndarray


class PredictResult(NamedTuple):
    """Per-image output of `predict` for B images (host numpy).

    prediction: int64 (B,), the predicted class, -1 on abstain.
    counts: int64 (B, K), counts of the n samples.
    pvalue: float64 (B,), two-sided binomial test of the top two counts.
    """

    prediction: np.ndarray
    counts: np.ndarray
    pvalue: np.ndarray


def _validate_run(x, num_classes, sigma, alpha, batch_size):
    checks.validate_count(num_classes, "num_classes", 2)
    checks.validate_count(batch_size, "batch_size")
    return checks.validate_images(x), checks.validate_sigma(sigma), checks.validate_alpha(alpha)


def certify(logits_fn: LogitsFn, params, x, key, *, num_classes: int, sigma: float,
            n0: int = 100, n: int = 100_000, alpha: float = 1e-3,
            batch_size: int, mesh=None) -> CertifyResult:
    """Cohen et al.'s CERTIFY for each image of x (B, H, W, C) in raw pixels.

    n0 selection samples pick cA; n fresh samples (an independent key) count
    it; pA_lower is the one-sided Clopper-Pearson bound at level alpha; abstain
    if pA_lower < 1/2, else radius sigma * Phi^-1(pA_lower) in float64. With
    probability >= 1 - alpha per image, g predicts cA within that l2 radius.
    `batch_size` is the number of Monte Carlo samples per vmapped chunk;
    `mesh` spreads the chunks over devices with identical results (see
    `sample_stats`).
    """
    x, sigma, alpha = _validate_run(x, num_classes, sigma, alpha, batch_size)
    n0, n = checks.validate_count(n0, "n0"), checks.validate_count(n, "n")
    # Selection (n0) and estimation (n) samples from the halves of split(key),
    # drawn in one jitted call.
    selection, estimation = montecarlo.run_passes(
        logits_fn, params, x, jax.random.split(key), (n0, n), num_classes=num_classes,
        sigma=sigma, chunk_size=batch_size, mesh=mesh)
    counts_selection, counts = selection.counts, estimation.counts
    top = counts_selection.argmax(axis=1)
    p_lower = stats.clopper_pearson_lower(counts[np.arange(len(top)), top], n, alpha)
    certified = p_lower >= 0.5
    with np.errstate(divide="ignore"):
        radius = np.where(certified, sigma * norm.ppf(p_lower), 0.0)
    return CertifyResult(np.where(certified, top, -1), radius, counts_selection, counts,
                         p_lower)


def predict(logits_fn: LogitsFn, params, x, key, *, num_classes: int, sigma: float,
            n: int = 100_000, alpha: float = 1e-3, batch_size: int,
            mesh=None) -> PredictResult:
    """Cohen et al.'s PREDICT for each image of x (B, H, W, C) in raw pixels.

    n samples; the top two counts nA, nB; abstain (-1) when the two-sided
    binomial test of nA ~ Binomial(nA + nB, 1/2) has p-value > alpha. A
    non-abstaining answer differs from g(x) with probability <= alpha.
    `mesh`: as in `certify`.
    """
    x, sigma, alpha = _validate_run(x, num_classes, sigma, alpha, batch_size)
    counts = montecarlo.run_passes(
        logits_fn, params, x, key[None], (checks.validate_count(n, "n"),), num_classes=num_classes,
        sigma=sigma, chunk_size=batch_size, mesh=mesh)[0].counts
    top, n_a, n_b = stats.top_two(counts)
    pvalue = stats.binomial_pvalue(n_a, n_b)
    return PredictResult(np.where(pvalue > alpha, -1, top), counts, pvalue)

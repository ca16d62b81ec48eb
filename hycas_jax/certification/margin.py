"""Lipschitz margin certificate of the expected-logit classifier, and hybrid reports.

`margin_certify` certifies, with no input noise, the classifier

    argmax_c Z_b(x)_c,   Z_b(x) = E_Omega[clip(f(x; Omega), -b, b)],

b = `logit_bound` (rounded to float32). When the model's logits provably lie
in [-b, b] the clip does nothing and Z_b = E_Omega[f]; otherwise the number
certifies the clipped classifier, NOT E_Omega[f]. The clip is coordinatewise
1-Lipschitz, so if every f(.; Omega) is L-Lipschitz in l2 so is Z_b, and each
pairwise margin Z_A - Z_c is sqrt(2) L-Lipschitz: a margin Delta certifies
radius Delta / (sqrt(2) L). Z_b is only estimated, so each margin
Z_A - Z_j gets a lower confidence bound at level alpha / (K - 1) (a union
bound over the K - 1 runner-up classes; `alpha_split` says it in words), from
the samples of D_j = clip(f_A) - clip(f_j), which lie in [-2b, 2b]: by default
the empirical Bernstein bound (Maurer and Pontil 2009), whose main term scales
with the sample standard deviation of D_j and whose range term falls as 1/n,
or Hoeffding's, which pays the whole range 4b at 1/sqrt(n). The variance
enters from above (a guaranteed bound on the float32 sums of squares).

Per-pair radius. With a linear head z = W p + c, the margin z_A - z_j is
||w_A - w_j|| L_body-Lipschitz (`pair_lipschitz`); for a deterministic
network (nothing clipped, nothing estimated) the radius is min_j (z_A - z_j)
/ min(sqrt(2) L, ||w_A - w_j|| L_body). A clip breaks that argument (each
clipped logit moves on its own), so stochastic networks use sqrt(2) L.

Precision. A certificate holds for the arithmetic that ran. JAX's default matmul and
convolution precision is TF32 on recent NVIDIA GPUs (bf16 passes on TPUs), which
moves weights and logits by far more than the bounds' float32 safety factor
covers; so the margin certificate's Monte Carlo passes always run at
`MARGIN_PRECISION` (full float32), on every backend, and its classifier says so.
Randomized smoothing certifies whatever classifier ran, at any precision.

Hybrid numbers: `combine_same_classifier` merges certificates of
one classifier; `certify_report.hybrid_report` lists certificates of several
classifiers, each row naming its classifier, with the failure probabilities added.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import jax
import numpy as np

from hycas_jax import checks
from hycas_jax.certification import montecarlo, smoothing
from hycas_jax.certification.stats import (
    bernstein_deviation,
    check_bound,
    hoeffding_deviation,
)

MARGIN_PRECISION = "float32"  # jax.default_matmul_precision of the margin certificate's passes


class MarginResult(NamedTuple):
    """Per-image output of `margin_certify` for B images (host numpy, float64).

    prediction: int64 (B,), certified argmax of Z_b, -1 on abstain.
    radius: float64 (B,), margin_lower / (sqrt(2) L), 0 on abstain.
    paper_radius: float64 (B,), "paper Delta/4" = margin_lower / 4 (0 on
        abstain); all NaN unless L <= 2 (see `paper_note`).
    margin_lower: float64 (B,), lower confidence bound on Z_A - max_{c!=A} Z_c.
    logit_mean: float64 (B, K), Monte Carlo mean of the clipped logits.
    classifier: str, the classifier the numbers certify.
    paper_note: str, why the paper form is or is not reported.
    alpha: float, per-image failure probability.
    """

    prediction: np.ndarray
    radius: np.ndarray
    paper_radius: np.ndarray
    margin_lower: np.ndarray
    logit_mean: np.ndarray
    classifier: str
    paper_note: str
    alpha: float


class Certificate(NamedTuple):
    """One certificate of one named classifier, for B images.

    classifier: the classifier whose robustness the numbers state.
    method: how it was certified (e.g. "randomized smoothing").
    prediction: int64 (B,), -1 on abstain. radius: float64 (B,).
    alpha: per-image probability that the certificate is wrong.
    """

    classifier: str
    method: str
    prediction: np.ndarray
    radius: np.ndarray
    alpha: float


def smoothed_classifier(sigma: float) -> str:
    """The name of the classifier randomized smoothing certifies (every table uses it)."""
    return f"smoothed classifier g = majority vote of f(x + N(0, sigma^2)), sigma = {sigma!r}"


def margin_classifier(logit_bound: float, *, stochastic: bool = True) -> str:
    """The name of the classifier the margin certificate certifies (every table uses it);
    `logit_bound` as rounded to float32, the clip really applied. A deterministic
    network's certificate clips nothing: its classifier is argmax f(x)."""
    if not stochastic:
        return f"deterministic classifier argmax f(x), no input noise, {MARGIN_PRECISION} matmuls"
    b = float(np.float32(logit_bound))
    return (f"expected-logit classifier argmax E_Omega[clip(f(x; Omega), -{b!r}, {b!r})], "
            f"no input noise, {MARGIN_PRECISION} matmuls")


def _validate_positive(value, name: str) -> float:
    value = float(value)
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError(f"{name} must be finite and > 0, got {value}")
    return value


def _pair_constants(lipschitz: float, pair_lipschitz, num_classes: int) -> np.ndarray:
    """(K, K) Lipschitz constants of the margins Z_i - Z_j: sqrt(2) L, or the smaller
    per-pair bounds where given (valid only for unclipped logits; the caller checks)."""
    constants = np.full((num_classes, num_classes), math.sqrt(2.0) * lipschitz)
    if pair_lipschitz is not None:
        pair = np.asarray(pair_lipschitz, np.float64)
        if pair.shape != (num_classes, num_classes) or not np.all(np.isfinite(pair)):
            raise ValueError(f"pair_lipschitz must be a finite ({num_classes}, {num_classes}) "
                             f"array, got shape {pair.shape}")
        constants = np.minimum(constants, pair)
    np.fill_diagonal(constants, 1.0)  # the class against itself is never a runner-up
    return constants


def _paper_form(margin_lower, certified, lipschitz) -> tuple[np.ndarray, str]:
    if lipschitz <= 2.0:
        return (np.where(certified, margin_lower / 4.0, 0.0),
                f"paper Delta/4: valid since L = {lipschitz!r} <= 2 (Delta/4 <= Delta/(2L))")
    return (np.full(margin_lower.shape, np.nan),
            f"paper Delta/4 not reported: L = {lipschitz!r} > 2, so the paper's "
            "Delta/(2L) = Delta/4 step does not hold")


def margin_certify(logits_fn: montecarlo.LogitsFn, params, x, key, *, num_classes: int,
                   lipschitz: float, logit_bound: float, n0: int = 100,
                   num_samples: int = 100_000, alpha: float = 1e-3,
                   batch_size: int, mesh=None, stochastic: bool = True,
                   bound: str = "bernstein", pair_lipschitz=None) -> MarginResult:
    """Lipschitz margin certificate of argmax Z_b (module docstring) for x (B, H, W, C).

    lipschitz: the model's guaranteed l2 Lipschitz bound w.r.t. raw pixels, for
    every draw of Omega. n0 samples (an independent key) pick the class A;
    `num_samples` fresh samples estimate Z_b. With probability >= 1 - alpha per
    image, A is Z_b's argmax everywhere within `radius`. `mesh`: spread the
    Monte Carlo samples over its devices (see `montecarlo.sample_stats`).
    bound: how each of the K - 1 margins Z_A - Z_j is bounded below from the
    samples: "bernstein" (empirical Bernstein, variance-adaptive), "hoeffding",
    or "both" (each at half the level, the better kept); see `alpha_split`.

    `stochastic=False` declares that logits_fn ignores its key (a deterministic
    network, e.g. the Lipschitz baseline): one pass gives the logits exactly, so
    no deviation term is paid, nothing is clipped (the classifier is argmax f),
    and the certificate holds with probability 1. Only pass it for a model that
    really draws no randomness. `pair_lipschitz` (K, K): bounds on the Lipschitz
    constants of the unclipped margins f_i - f_j (a linear head's per-pair norms,
    `Classifier.pair_bounds`); used only with `stochastic=False`, where no clip
    acts. The radius is then min_j (f_A - f_j) / min(sqrt(2) L, pair[A, j]).
    """
    num_classes = checks.validate_count(num_classes, "num_classes", 2)
    lipschitz = _validate_positive(lipschitz, "lipschitz")
    clip = float(np.float32(_validate_positive(logit_bound, "logit_bound")))
    alpha = checks.validate_alpha(alpha)
    num_samples = checks.validate_count(num_samples, "num_samples", 2)
    n0 = checks.validate_count(n0, "n0")
    chunk_size = checks.validate_count(batch_size, "batch_size")
    check_bound(bound)
    constants = _pair_constants(lipschitz, pair_lipschitz if not stochastic else None,
                                num_classes)
    with jax.default_matmul_precision(MARGIN_PRECISION):
        top, mean, lower = _estimate(
            logits_fn, params, x, key, num_classes=num_classes, clip=clip, alpha=alpha,
            num_samples=num_samples, n0=n0, chunk_size=chunk_size, mesh=mesh,
            stochastic=stochastic, bound=bound)
    rows = np.arange(len(top))
    lower[rows, top] = np.inf  # (B, K): lower bounds on Z_A - Z_j, j != A
    margin_lower = lower.min(axis=1)
    certified = margin_lower > 0.0
    radius = np.min(lower / constants[top], axis=1)
    paper_radius, paper_note = _paper_form(margin_lower, certified, lipschitz)
    return MarginResult(
        prediction=np.where(certified, top, -1),
        radius=np.where(certified, radius, 0.0),
        paper_radius=paper_radius, margin_lower=margin_lower, logit_mean=mean,
        classifier=margin_classifier(clip, stochastic=stochastic),
        paper_note=paper_note, alpha=alpha)


def _estimate(logits_fn, params, x, key, *, num_classes, clip, alpha, num_samples, n0,
              chunk_size, mesh, stochastic, bound):
    """-> (selected class A (B,), mean clipped logits (B, K), lower confidence bounds
    on Z_A - Z_j (B, K))."""
    if not stochastic:
        estimate = montecarlo.sample_stats(
            logits_fn, params, x, jax.random.split(key)[1], num_classes=num_classes, sigma=0.0,
            num=1, chunk_size=chunk_size, mesh=mesh)
        logits = estimate.logit_sum  # one sample, unclipped, summed exactly
        top = logits.argmax(axis=1)
        return top, logits, logits[np.arange(len(top)), top][:, None] - logits
    # n0 selection and num_samples estimation samples from the halves of
    # split(key), in one jitted call.
    selection, estimate = montecarlo.two_pass_stats(
        logits_fn, params, x, key, num_classes=num_classes, sigma=0.0, num_first=n0,
        num_second=num_samples, chunk_size=chunk_size, logit_bound=clip, mesh=mesh,
        pair_moments=bound != "hoeffding")
    top = selection.logit_sum.argmax(axis=1)
    rows, n = np.arange(len(top)), num_samples
    mean = estimate.logit_sum / n
    gap = mean[rows, top][:, None] - mean  # (B, K) estimates of Z_A - Z_j
    # Rounding of both float32 sums, and the differences' range [-2b, 2b].
    rounding, value_range = 2.0 * estimate.logit_sum_error / n, 4.0 * clip
    pairs = num_classes - 1
    delta = alpha / pairs if bound != "both" else alpha / (2 * pairs)
    hoeffding = np.full(gap.shape, hoeffding_deviation(n, value_range, delta))
    if bound == "hoeffding":
        return top, mean, gap - hoeffding - rounding
    # Unbiased sample variance of D_j = clip(z_A) - clip(z_j), from above: the exact
    # sum of squares is at most factor * the float32 one, and n * mean^2 at least
    # n * (|gap| - rounding)^2.
    squares = estimate.pair_square_sum[rows, top] * estimate.pair_square_factor
    mean_floor = np.maximum(np.abs(gap) - rounding, 0.0)
    variance = np.maximum(squares - n * mean_floor ** 2, 0.0) / (n - 1)
    bernstein = bernstein_deviation(n, value_range, variance, delta)
    slack = bernstein if bound == "bernstein" else np.minimum(bernstein, hoeffding)
    return top, mean, gap - slack - rounding


def smoothing_certificate(result: smoothing.CertifyResult, *, sigma: float,
                          alpha: float) -> Certificate:
    """Names the classifier a `smoothing.certify` result certifies."""
    return Certificate(smoothed_classifier(sigma), "randomized smoothing",
                       result.prediction, result.radius, alpha)


def margin_certificate(result: MarginResult) -> Certificate:
    """The sqrt(2) L margin certificate of a `margin_certify` result."""
    return Certificate(result.classifier, "Lipschitz margin", result.prediction,
                       result.radius, result.alpha)


def combine_same_classifier(certificates: Sequence[Certificate]) -> Certificate:
    """Per image, the largest radius among certificates of ONE classifier.

    All must name the same classifier (else ValueError). They hold together
    with probability >= 1 - sum(alpha). Non-abstaining certificates that
    disagree on the class cannot all hold, so that image abstains.
    """
    names = {c.classifier for c in certificates}
    if len(names) != 1:
        raise ValueError(f"certificates name different classifiers {sorted(names)}; "
                         "use certify_report.hybrid_report to list them side by side")
    predictions = np.stack([c.prediction for c in certificates])
    valid = predictions >= 0
    # Abstainers take the class of some non-abstainer, so they never cause a disagreement.
    claimed = np.where(valid, predictions, predictions.max(axis=0))
    ok = valid.any(axis=0) & (claimed == claimed[0]).all(axis=0)
    radius = np.where(valid, np.stack([c.radius for c in certificates]), 0.0).max(axis=0)
    return Certificate(names.pop(), " + ".join(c.method for c in certificates),
                       np.where(ok, claimed[0], -1), np.where(ok, radius, 0.0),
                       sum(c.alpha for c in certificates))

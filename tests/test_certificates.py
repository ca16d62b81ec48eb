"""Tests for hycas_jax.certification.margin: the Lipschitz margin certificate and hybrid reports."""
import math
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from scipy import stats as scipy_stats  # noqa: E402

from hycas_jax.certification import (  # noqa: E402
    margin,
    smoothing,
    stats,
)
from hycas_jax.reporting import certify_report

SHAPE = (4, 4, 1)
NUM_CLASSES = 3
BOUND = 1.0
NOISE = 0.3  # half-width of the toy's zero-mean uniform logit noise
NUM_SAMPLES = 20_000


def orthogonal_logits(params, x, key):
    """Logits W (x - x0) + uniform noise; W = L * (orthonormal rows), so exactly L-Lipschitz.

    Rows are orthogonal with norm L, so ||w_A - w_c|| = sqrt(2) L: the sqrt(2) L
    margin certificate is tight and the true distance to Z's boundary is
    min_c (Z_A - Z_c) / (sqrt(2) L).
    """
    flat = x.reshape(x.shape[0], -1) - 0.5
    noise = jax.random.uniform(key, (x.shape[0], NUM_CLASSES), minval=-NOISE, maxval=NOISE)
    return flat @ params["w"].T + noise


def make_problem(lipschitz, offsets):
    """Weights with Lipschitz constant exactly L and images at given logit offsets."""
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(int(np.prod(SHAPE)), NUM_CLASSES)))
    w = lipschitz * q.T  # (K, D), orthonormal rows times L
    # x - x0 = W^T z / L^2 gives the noiseless logits W (x - x0) = z.
    x = 0.5 + (np.asarray(offsets) @ w / lipschitz ** 2).reshape((len(offsets),) + SHAPE)
    z = (x.reshape(len(x), -1) - 0.5) @ w.T
    return {"w": jnp.asarray(w, jnp.float32)}, jnp.asarray(x, jnp.float32), z


def true_distance(z, lipschitz):
    """l2 distance to the argmax boundary of the exact linear Z (float64 (B,))."""
    top = np.sort(z, axis=1)
    return (top[:, -1] - top[:, -2]) / (math.sqrt(2) * lipschitz)


@pytest.mark.parametrize("lipschitz", [1.5, 3.0])
def test_margin_radius_is_sound_and_tight(lipschitz):
    offsets = np.array([[0.5, 0.0, -0.2], [0.0, 0.35, 0.1], [0.1, -0.3, 0.6], [0.0, 0.0, 0.0]])
    params, x, z = make_problem(lipschitz, offsets)
    alpha = 1e-3
    result = margin.margin_certify(
        orthogonal_logits, params, x, jax.random.key(0), num_classes=NUM_CLASSES,
        lipschitz=lipschitz, logit_bound=BOUND, num_samples=NUM_SAMPLES, alpha=alpha,
        batch_size=5000, bound="hoeffding")
    distance = true_distance(z, lipschitz)
    true_margin = distance * math.sqrt(2) * lipschitz
    np.testing.assert_array_equal(result.prediction, [0, 1, 2, -1])
    assert np.all(result.radius <= distance)
    assert np.all(result.margin_lower <= true_margin)
    # Only the Hoeffding term (8b sqrt(log((K-1)/alpha) / 2n) ~ 0.11) separates them.
    hoeffding = stats.hoeffding_deviation(NUM_SAMPLES, 4 * BOUND, alpha / 2)
    assert np.all(result.margin_lower[:3] >= true_margin[:3] - 1.5 * hoeffding)
    # Exactly that term (clipped-logit differences span 4b) plus float32 rounding (< 1e-3).
    mean = np.sort(result.logit_mean[:3], axis=1)
    np.testing.assert_allclose(result.margin_lower[:3], mean[:, -1] - mean[:, -2] - hoeffding,
                               atol=1e-3)
    assert result.radius[3] == 0.0
    if lipschitz <= 2:
        np.testing.assert_array_equal(result.paper_radius, result.margin_lower.clip(0) / 4)
        assert "valid" in result.paper_note
    else:
        assert np.all(np.isnan(result.paper_radius)) and "not reported" in result.paper_note


@pytest.mark.parametrize("lipschitz", [1.5, 3.0])
def test_bernstein_margin_is_sound_and_sharper_than_hoeffding(lipschitz):
    offsets = np.array([[0.5, 0.0, -0.2], [0.0, 0.35, 0.1], [0.1, -0.3, 0.6], [0.0, 0.0, 0.0]])
    params, x, z = make_problem(lipschitz, offsets)
    kwargs = dict(num_classes=NUM_CLASSES, lipschitz=lipschitz, logit_bound=BOUND,
                  num_samples=NUM_SAMPLES, alpha=1e-3, batch_size=5000)
    results = {b: margin.margin_certify(orthogonal_logits, params, x, jax.random.key(0),
                                        bound=b, **kwargs) for b in stats.BOUNDS}
    distance = true_distance(z, lipschitz)
    true_margin = distance * math.sqrt(2) * lipschitz
    for result in results.values():
        np.testing.assert_array_equal(result.prediction, [0, 1, 2, -1])
        assert np.all(result.radius <= distance) and np.all(result.margin_lower <= true_margin)
    b, h, both = (results[k].margin_lower[:3] for k in ("bernstein", "hoeffding", "both"))
    # The logit noise (uniform, sd 0.17 per logit) is far narrower than the clip range
    # 4b = 4: the variance-adaptive bound pays about a third of Hoeffding's slack.
    gap = np.sort(results["bernstein"].logit_mean[:3], axis=1)
    slack_b, slack_h = gap[:, -1] - gap[:, -2] - b, gap[:, -1] - gap[:, -2] - h
    assert np.all(slack_b < 0.5 * slack_h) and np.all(slack_b > 0)
    assert np.all(both <= np.maximum(b, h) + 1e-9)  # each at alpha / 2: never better than both


@pytest.mark.parametrize("delta", [0.05, 0.2])
@pytest.mark.parametrize("p", [0.3, 0.02])
def test_bernstein_overconfidence_rate_at_most_delta(delta, p):
    # Two-point variables on {-b, b}, the worst case of the range term; p = 0.02 has a
    # small variance, where the variance-adaptive term is what is tested.
    n, trials = 200, 20_000
    draws = np.random.default_rng(3).random((trials, n)) < p
    values = BOUND * (2.0 * draws - 1.0)
    means, variances = values.mean(axis=1), values.var(axis=1, ddof=1)
    t = stats.bernstein_deviation(n, 2 * BOUND, variances, delta)
    failures = int(np.sum(means - t > BOUND * (2 * p - 1)))
    assert scipy_stats.binomtest(failures, trials, delta, alternative="greater").pvalue > 1e-3


def test_pair_square_sums_bound_the_exact_sums():
    # The float32 sums of squared differences, times their factor, never fall below the
    # float64 sums of the same clipped logits.
    from hycas_jax.certification import montecarlo

    def noisy(params, x, key):
        return 3.0 + jax.random.normal(key, (x.shape[0], 4)) * jnp.array([0.01, 1.0, 5.0, 0.3])

    x = jnp.full((2,) + SHAPE, 0.5)
    stats_ = montecarlo.sample_stats(noisy, {}, x, jax.random.key(0), num_classes=4, sigma=0.0,
                                     num=3000, chunk_size=512, logit_bound=4.0)
    assert stats_.pair_square_sum is None  # only when asked for
    _, est = montecarlo.two_pass_stats(noisy, {}, x, jax.random.key(0), num_classes=4, sigma=0.0,
                                       num_first=10, num_second=3000, chunk_size=512,
                                       logit_bound=4.0, pair_moments=True)
    keys = jax.random.split(jax.random.key(0))[1]
    logits = np.stack([np.asarray(noisy({}, x, jax.random.split(jax.random.fold_in(keys, j))[1]),
                                  np.float64) for j in range(3000)])
    clipped = np.clip(logits, -4.0, 4.0)
    exact = ((clipped[..., :, None] - clipped[..., None, :]) ** 2).sum(axis=0)
    np.testing.assert_allclose(est.pair_square_sum, exact, rtol=1e-4, atol=1e-3)
    assert np.all(est.pair_square_factor * est.pair_square_sum >= exact)


def test_margin_certifies_the_clipped_classifier():
    def spiky_logits(params, x, key):
        # Class 0 gets +5 w.p. 0.6 and -5 w.p. 0.4: raw mean 1, clipped-at-1 mean 0.2.
        del params
        spike = jnp.where(jax.random.uniform(key) < 0.6, 5.0, -5.0)
        return jnp.zeros((x.shape[0], 2)).at[:, 0].set(spike)

    result = margin.margin_certify(
        spiky_logits, {}, jnp.full((1,) + SHAPE, 0.5), jax.random.key(1), num_classes=2,
        lipschitz=1.0, logit_bound=BOUND, num_samples=NUM_SAMPLES, alpha=1e-3, batch_size=5000)
    assert result.logit_mean[0, 0] == pytest.approx(0.2, abs=0.03)
    assert result.margin_lower[0] <= 0.2 and result.prediction[0] == 0
    assert "clip" in result.classifier and "1.0" in result.classifier


@pytest.mark.parametrize("delta", [0.05, 0.2])
def test_hoeffding_overconfidence_rate_at_most_delta(delta):
    # Two-point variables on {-b, b}: the worst case for Hoeffding's range term.
    n, trials, p = 40, 20_000, 0.3
    hits = np.random.default_rng(2).binomial(n, p, size=trials)
    means = BOUND * (2 * hits / n - 1)
    true_mean = BOUND * (2 * p - 1)
    t = stats.hoeffding_deviation(n, 2 * BOUND, delta)
    failures = int(np.sum(means - t > true_mean))
    assert scipy_stats.binomtest(failures, trials, delta, alternative="greater").pvalue > 1e-3


GOOD = dict(num_classes=NUM_CLASSES, lipschitz=1.0, logit_bound=BOUND, n0=4,
            num_samples=8, alpha=1e-3, batch_size=4)


@pytest.mark.parametrize("override, name", [
    (dict(lipschitz=0.0), "lipschitz"), (dict(lipschitz=-1.0), "lipschitz"),
    (dict(lipschitz=np.inf), "lipschitz"), (dict(lipschitz=np.nan), "lipschitz"),
    (dict(logit_bound=0.0), "logit_bound"), (dict(logit_bound=np.inf), "logit_bound"),
    (dict(alpha=0.0), "alpha"), (dict(alpha=1.0), "alpha"), (dict(n0=0), "n0"),
    (dict(num_samples=0), "num_samples"), (dict(batch_size=0), "batch_size"),
    (dict(num_classes=1), "num_classes"), (dict(num_classes=4), "num_classes"),
])
def test_margin_certify_rejects_bad_arguments(override, name):
    params, x, _ = make_problem(1.0, np.array([[0.3, 0.0, 0.0]]))
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        margin.margin_certify(orthogonal_logits, params, x, jax.random.key(0),
                                    **{**GOOD, **override})


def test_margin_certify_rejects_bad_images():
    params, _, _ = make_problem(1.0, np.array([[0.3, 0.0, 0.0]]))
    with pytest.raises(ValueError, match=r"\bx\b"):
        margin.margin_certify(orthogonal_logits, params, jnp.full((1,) + SHAPE, 2.0),
                                    jax.random.key(0), **GOOD)


def cert(classifier, prediction, radius, alpha=5e-4, method="m"):
    return margin.Certificate(classifier, method, np.array(prediction),
                                    np.array(radius, np.float64), alpha)


def test_combine_same_classifier_takes_max_and_adds_alpha():
    a = cert("g", [1, 2, -1, 0, -1], [0.5, 0.1, 0.0, 0.3, 0.0], method="rs")
    b = cert("g", [1, 2, 3, 1, -1], [0.2, 0.4, 0.7, 0.9, 0.0], method="margin")
    combined = margin.combine_same_classifier([a, b])
    np.testing.assert_array_equal(combined.prediction, [1, 2, 3, -1, -1])  # 0 vs 1 conflict
    np.testing.assert_array_equal(combined.radius, [0.5, 0.4, 0.7, 0.0, 0.0])
    assert combined.alpha == pytest.approx(1e-3) and combined.method == "rs + margin"
    with pytest.raises(ValueError, match="different classifiers"):
        margin.combine_same_classifier([a, cert("Z", [1] * 5, [1.0] * 5)])


def test_hybrid_report_names_classifiers_and_splits_alpha():
    labels = np.array([1, 1])
    rows = [cert("smoothed g", [1, 1], [0.5, 0.0], method="randomized smoothing"),
            cert("expected logits Z", [1, -1], [0.3, 0.0], method="Lipschitz margin")]
    text = certify_report.hybrid_report(rows, labels, radii=(0.0, 0.25), alpha_budget=1e-3)
    assert "randomized smoothing of [smoothed g], alpha = 0.0005 | 100.0 | 50.0 |" in text
    assert "Lipschitz margin of [expected logits Z]" in text
    assert "1 - 0.001" in text and "2 different classifiers" in text
    with pytest.raises(ValueError, match="alpha_budget"):
        certify_report.hybrid_report(rows, labels, alpha_budget=5e-4)


def test_smoothing_and_margin_certificates_name_their_classifier():
    result = smoothing.CertifyResult(np.array([1]), np.array([0.4]), None, None, None)
    rs = margin.smoothing_certificate(result, sigma=0.25, alpha=1e-3)
    assert "sigma = 0.25" in rs.classifier and rs.method == "randomized smoothing"


def test_deterministic_margin_certificate_is_exact():
    # A noise-free linear Z: one pass, no Hoeffding term, radius = true distance
    # (up to float32 rounding), and never above it.
    lipschitz = 1.5
    offsets = np.array([[0.5, 0.0, -0.2], [0.0, 0.35, 0.1], [0.1, -0.3, 0.6]])
    params, x, z = make_problem(lipschitz, offsets)

    def exact_logits(params, x, key):
        del key
        return (x.reshape(x.shape[0], -1) - 0.5) @ params["w"].T

    result = margin.margin_certify(
        exact_logits, params, x, jax.random.key(0), num_classes=NUM_CLASSES,
        lipschitz=lipschitz, logit_bound=BOUND, alpha=1e-3, batch_size=10, stochastic=False)
    distance = true_distance(z, lipschitz)
    np.testing.assert_array_equal(result.prediction, [0, 1, 2])
    # The toy passes its exact L, without the SAFETY factor real bounds carry for the
    # float32 rounding of the logits; that rounding (~1e-7 relative) is all that may exceed.
    assert np.all(result.radius <= distance * (1 + 1e-6))
    np.testing.assert_allclose(result.radius, distance, rtol=1e-4)


def test_deterministic_per_pair_radius_is_the_exact_distance():
    # Rows of unequal norms: min_j (z_A - z_j) / ||w_A - w_j|| is the exact distance to
    # the decision boundary, larger than the sqrt(2) L form.
    w = np.array([[1.0, 0, 0, 0], [0, 0.3, 0, 0], [0, 0, 0.2, 0.1]] + [[0.0] * 4] * 0)
    w = np.concatenate([w, np.zeros((3, int(np.prod(SHAPE)) - 4))], axis=1)
    params = {"w": jnp.asarray(w, jnp.float32)}
    x = jnp.asarray(0.5 + np.array([0.4, 0.1, 0.0] + [0.0] * 13).reshape((1,) + SHAPE),
                    jnp.float32)

    def exact_logits(params, x, key):
        del key
        return (x.reshape(x.shape[0], -1) - 0.5) @ params["w"].T

    z = np.asarray(exact_logits(params, x, None), np.float64)[0]
    norms = np.linalg.norm(w[:, None] - w[None], axis=-1)
    lipschitz = float(np.linalg.svd(w, compute_uv=False)[0])
    kwargs = dict(num_classes=3, lipschitz=lipschitz, logit_bound=BOUND, batch_size=4,
                  stochastic=False)
    plain = margin.margin_certify(exact_logits, params, x, jax.random.key(0), **kwargs)
    pair = margin.margin_certify(exact_logits, params, x, jax.random.key(0),
                                 pair_lipschitz=norms, **kwargs)
    distance = min((z[0] - z[j]) / norms[0, j] for j in (1, 2))
    assert pair.prediction[0] == 0
    np.testing.assert_allclose(pair.radius[0], distance, rtol=1e-5)
    assert plain.radius[0] < 0.9 * pair.radius[0]
    assert "deterministic" in pair.classifier and "clip" not in pair.classifier


@pytest.mark.parametrize("stochastic", [True, False])
def test_margin_passes_run_at_full_float32_precision_and_say_so(stochastic):
    # TF32 (the GPU default) would round weights and logits by far more than the bounds'
    # safety factor: every traced pass of the margin certificate sees float32 precision.
    seen = []
    params, x, _ = make_problem(1.5, np.array([[0.5, 0.0, -0.2]]))

    def recording_logits(params, x, key):
        seen.append(jax.config.jax_default_matmul_precision)
        return orthogonal_logits(params, x, key)

    result = margin.margin_certify(
        recording_logits, params, x, jax.random.key(0), num_classes=NUM_CLASSES, lipschitz=1.5,
        logit_bound=BOUND, n0=8, num_samples=16, batch_size=8, stochastic=stochastic)
    assert seen and set(seen) == {margin.MARGIN_PRECISION} == {"float32"}
    assert "float32 matmuls" in result.classifier
    assert jax.config.jax_default_matmul_precision is None  # restored afterwards

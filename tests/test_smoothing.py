"""Tests for hycas_jax.certification.smoothing: CERTIFY/PREDICT against exactly known smoothed classifiers."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from scipy import stats  # noqa: E402

from hycas_jax.certification import montecarlo, smoothing  # noqa: E402
from hycas_jax.certification import stats as hstats  # noqa: E402

SHAPE = (4, 4, 1)
SIGMA = 0.25


def linear_logits(params, x, key):
    """Binary linear classifier [0, w.x + b]; ignores its key."""
    del key
    z = x.reshape(x.shape[0], -1) @ params["w"] + params["b"]
    return jnp.stack([jnp.zeros_like(z), z], axis=-1)


def random_class_logits(params, x, key):
    """Stochastic toy: every image's class is uniform over 4, drawn from the key."""
    del params
    return jax.random.normal(key, (x.shape[0], 4))


def noisy_linear_logits(params, x, key):
    """Linear classifier plus key-dependent logit noise (a stochastic classifier)."""
    return linear_logits(params, x, None) + 0.5 * jax.random.normal(key, (x.shape[0], 2))


def linear_problem(distances):
    """Images at signed l2 distances from the boundary of a unit-norm linear model."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=int(np.prod(SHAPE)))
    w /= np.linalg.norm(w)
    x = np.full((len(distances),) + SHAPE, 0.5, np.float32)
    b = -float(x[0].ravel() @ w)  # the grey image sits on the boundary
    x += (np.asarray(distances)[:, None] * w).reshape(x.shape).astype(np.float32)
    params = {"w": jnp.asarray(w, jnp.float32), "b": jnp.float32(b)}
    signed = (x.reshape(len(x), -1).astype(np.float64) @ w + b)  # ||w|| = 1
    return params, jnp.asarray(x), signed


def test_certified_radius_matches_exact_linear_distance():
    distances = np.array([0.12, 0.2, 0.35, -0.25, -0.4, 0.0])
    params, x, signed = linear_problem(distances)
    result = smoothing.certify(linear_logits, params, x, jax.random.key(0), num_classes=2,
                               sigma=SIGMA, n0=100, n=100_000, alpha=1e-3, batch_size=20_000)
    clear = slice(0, 5)
    np.testing.assert_array_equal(result.prediction[clear], (signed[clear] > 0).astype(int))
    true_distance = np.abs(signed)
    assert np.all(result.radius <= true_distance)
    # Every distance is well below sigma * Phi^-1(alpha^(1/n)) ~ 0.93.
    assert np.all(result.radius[clear] >= 0.9 * true_distance[clear])
    # pA_lower sits below the exact smoothed probability, by a few standard errors.
    exact = stats.norm.cdf(true_distance / SIGMA)
    assert np.all(result.pA_lower <= exact)
    assert np.all(exact - result.pA_lower < 5 * np.sqrt(exact * (1 - exact) / 100_000))
    # The image on the boundary abstains.
    assert result.prediction[5] == -1 and result.radius[5] == 0.0
    assert result.radius.dtype == np.float64 and result.pA_lower.dtype == np.float64
    np.testing.assert_array_equal(result.counts.sum(axis=1), 100_000)
    np.testing.assert_array_equal(result.counts_selection.sum(axis=1), 100)


# The invariance tests share (logits_fn, shapes, num, chunk) so jit compiles each once.
NUM = 1003


def noisy_pair():
    params, x, _ = linear_problem(np.array([0.05, -0.1]))
    return params, x


def test_counts_do_not_depend_on_chunk_size_and_tail_is_masked():
    params, x = noisy_pair()
    runs = [montecarlo.sample_counts(noisy_linear_logits, params, x, jax.random.key(3),
                                    num_classes=2, sigma=SIGMA, num=NUM, chunk_size=chunk)
            for chunk in (NUM, 100, 7, 5000)]
    for counts in runs:
        np.testing.assert_array_equal(counts, runs[0])
        np.testing.assert_array_equal(counts.sum(axis=1), [NUM, NUM])


def test_certify_does_not_depend_on_batch_size():
    params, x = noisy_pair()
    results = [smoothing.certify(noisy_linear_logits, params, x, jax.random.key(4),
                                 num_classes=2, sigma=SIGMA, n0=100, n=NUM, batch_size=batch)
               for batch in (100, NUM)]
    for field_a, field_b in zip(*results):
        np.testing.assert_array_equal(field_a, field_b)


def counting(logits_fn, traces: list):
    """logits_fn that appends to `traces` each time JAX traces it."""
    def counted(params, x, key):
        traces.append(1)  # runs only while JAX traces
        return logits_fn(params, x, key)
    return counted


def test_selection_and_estimation_in_one_executable_equal_two_passes():
    traces = []
    counting_logits = counting(noisy_linear_logits, traces)
    params, x = noisy_pair()
    key = jax.random.key(11)
    first, second = montecarlo.two_pass_stats(
        counting_logits, params, x, key, num_classes=2, sigma=SIGMA, num_first=100,
        num_second=NUM, chunk_size=64)
    assert len(traces) == 1  # one executable for both passes
    k1, k2 = jax.random.split(key)
    for stats_, k, num in ((first, k1, 100), (second, k2, NUM)):
        alone = montecarlo.sample_stats(noisy_linear_logits, params, x, k, num_classes=2,
                                       sigma=SIGMA, num=num, chunk_size=64)
        np.testing.assert_array_equal(stats_.counts, alone.counts)
        np.testing.assert_array_equal(stats_.counts.sum(axis=1), [num, num])
        assert stats_.num == num
    # certify draws exactly these samples: its counts are the two passes' counts.
    result = smoothing.certify(noisy_linear_logits, params, x, key, num_classes=2, sigma=SIGMA,
                               n0=100, n=NUM, batch_size=64)
    np.testing.assert_array_equal(result.counts_selection, first.counts)
    np.testing.assert_array_equal(result.counts, second.counts)


def test_same_key_same_result_and_keys_matter():
    params, x = noisy_pair()
    run = lambda key: montecarlo.sample_counts(  # noqa: E731
        noisy_linear_logits, params, x, key, num_classes=2, sigma=SIGMA, num=NUM,
        chunk_size=100)
    np.testing.assert_array_equal(run(jax.random.key(5)), run(jax.random.key(5)))
    # Legacy uint32 keys are accepted and hold the same bits as typed keys.
    np.testing.assert_array_equal(run(jax.random.PRNGKey(5)), run(jax.random.key(5)))
    assert not np.array_equal(run(jax.random.key(5)), run(jax.random.key(6)))


def test_stochastic_classifier_lanes_draw_independently():
    num_classes, num = 4, 4000
    x = jnp.full((2,) + SHAPE, 0.5)
    counts = montecarlo.sample_counts(random_class_logits, {}, x,
                                     jax.random.key(7), num_classes=num_classes, sigma=SIGMA,
                                     num=num, chunk_size=256)
    # Lanes sharing a key would pile every sample on one class per chunk.
    for row in counts:
        assert stats.chisquare(row).pvalue > 1e-4
    assert not np.array_equal(counts[0], counts[1])  # images get different draws too


def test_no_recompilation_between_images():
    traces = []
    counting_logits = counting(linear_logits, traces)
    params, x = noisy_pair()
    for shift in (0.0, 0.01, -0.02):
        montecarlo.sample_counts(counting_logits, params, x + shift, jax.random.key(8),
                                num_classes=2, sigma=SIGMA + shift, num=300, chunk_size=100)
    assert len(traces) == 1


def test_predict_clear_point_and_abstain_on_boundary():
    params, x, _ = linear_problem(np.array([0.5, -0.5, 0.0]))
    result = smoothing.predict(linear_logits, params, x, jax.random.key(9), num_classes=2,
                               sigma=SIGMA, n=2_000, alpha=1e-3, batch_size=500)
    np.testing.assert_array_equal(result.prediction, [1, 0, -1])
    assert result.pvalue[0] < 1e-3 and result.pvalue[2] > 1e-3
    expected = stats.binomtest(int(result.counts[0].max()), 2000, 0.5).pvalue
    assert result.pvalue[0] == pytest.approx(expected)


def test_clopper_pearson_solves_its_defining_equation():
    n, alpha = 200, 0.01
    k = np.array([1, 50, 150, 200])
    lower = hstats.clopper_pearson_lower(k, n, alpha)
    # P[Binomial(n, lower) >= k] = alpha exactly at the bound.
    np.testing.assert_allclose(stats.binom.sf(k - 1, n, lower), alpha, rtol=1e-8)
    assert hstats.clopper_pearson_lower(np.array([0]), n, alpha)[0] == 0.0


@pytest.mark.parametrize("p_true", [0.5, 0.8, 0.97])
def test_clopper_pearson_overconfidence_rate_at_most_alpha(p_true):
    n, alpha, trials = 60, 0.1, 20_000
    k = np.random.default_rng(11).binomial(n, p_true, size=trials)
    failures = int(np.sum(hstats.clopper_pearson_lower(k, n, alpha) > p_true))
    # A one-sided binomial test that the failure rate exceeds alpha must not reject.
    assert stats.binomtest(failures, trials, alpha, alternative="greater").pvalue > 1e-3


def test_binomial_pvalue_matches_scipy():
    p = hstats.binomial_pvalue(np.array([60, 10]), np.array([40, 10]))
    np.testing.assert_allclose(p, [stats.binomtest(60, 100).pvalue, 1.0])


GOOD = dict(num_classes=2, sigma=SIGMA, n0=10, n=20, alpha=1e-3, batch_size=8)


@pytest.mark.parametrize("override, name", [
    (dict(sigma=0.0), "sigma"), (dict(sigma=-1.0), "sigma"), (dict(sigma=np.nan), "sigma"),
    (dict(alpha=0.0), "alpha"), (dict(alpha=1.0), "alpha"), (dict(alpha=1.5), "alpha"),
    (dict(n0=0), "n0"), (dict(n=0), "n"), (dict(batch_size=0), "batch_size"),
    (dict(num_classes=1), "num_classes"), (dict(num_classes=3), "num_classes"),
])
def test_certify_rejects_bad_arguments(override, name):
    params, x, _ = linear_problem(np.array([0.1]))
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        smoothing.certify(linear_logits, params, x, jax.random.key(0), **{**GOOD, **override})


@pytest.mark.parametrize("x", [
    np.full((1,) + SHAPE, 1.5, np.float32), np.full((1,) + SHAPE, -0.1, np.float32),
    np.full((1,) + SHAPE, np.nan, np.float32), np.full(SHAPE, 0.5, np.float32),
    np.ones((1,) + SHAPE, np.int32),
])
def test_certify_rejects_bad_images(x):
    params, _, _ = linear_problem(np.array([0.1]))
    with pytest.raises(ValueError, match=r"\bx\b"):
        smoothing.certify(linear_logits, params, x, jax.random.key(0), **GOOD)


def test_predict_and_sample_counts_reject_bad_arguments():
    params, x, _ = linear_problem(np.array([0.1]))
    with pytest.raises(ValueError, match="sigma"):
        smoothing.predict(linear_logits, params, x, jax.random.key(0), num_classes=2,
                          sigma=-0.5, n=10, batch_size=4)
    with pytest.raises(ValueError, match="chunk_size"):
        montecarlo.sample_counts(linear_logits, params, x, jax.random.key(0), num_classes=2,
                                sigma=SIGMA, num=10, chunk_size=0)


def test_clipped_logit_sums_stay_within_their_rounding_bound():
    def constant_logits(params, x, key):
        del params, key  # 0.1 and 1/3 are not float32-representable: every add rounds
        return jnp.broadcast_to(jnp.array([0.1, 1 / 3, 5.0]), (x.shape[0], 3))

    num, bound = 100_000, 0.4
    result = montecarlo.sample_stats(constant_logits, {}, jnp.full((1,) + SHAPE, 0.5),
                                    jax.random.key(10), num_classes=3, sigma=0.0, num=num,
                                    chunk_size=997, logit_bound=bound)
    exact = num * np.array([np.float32(0.1), np.float32(1 / 3), np.float32(bound)], np.float64)
    assert np.all(np.abs(result.logit_sum[0] - exact) <= result.logit_sum_error)
    assert result.logit_sum_error < 1e-3 * num * bound  # and the bound is not vacuous
    np.testing.assert_array_equal(result.counts, [[0, 0, num]])

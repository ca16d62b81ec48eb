"""Certification of any `logits_fn(params, x, key)`: Monte Carlo counting,
randomized smoothing (Cohen et al.), the Lipschitz margin certificate, and the
binomial statistics both rest on."""
from hycas_jax.certification.margin import (
                                            Certificate,
                                            MarginResult,
                                            combine_same_classifier,
                                            margin_certificate,
                                            margin_certify,
                                            margin_classifier,
                                            smoothed_classifier,
                                            smoothing_certificate,
)
from hycas_jax.certification.montecarlo import (
                                            MonteCarloStats,
                                            sample_counts,
                                            sample_stats,
                                            two_pass_stats,
)
from hycas_jax.certification.smoothing import CertifyResult, PredictResult, certify, predict
from hycas_jax.certification.stats import (
                                            bernstein_deviation,
                                            binomial_pvalue,
                                            clopper_pearson,
                                            clopper_pearson_lower,
                                            hoeffding_deviation,
)

__all__ = ["Certificate", "CertifyResult", "MarginResult", "MonteCarloStats", "PredictResult",
           "bernstein_deviation", "binomial_pvalue",
           "certify", "clopper_pearson", "clopper_pearson_lower", "combine_same_classifier",
           "hoeffding_deviation", "margin_certificate", "margin_certify", "margin_classifier",
           "predict", "sample_counts", "sample_stats", "smoothed_classifier", "smoothing_certificate",
           "two_pass_stats"]

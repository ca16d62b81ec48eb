"""The certification evaluator: built from a `logits_fn`, it certifies images one at a
time and yields a record per image; `metrics` summarizes the records.

Image `idx` uses the key `fold_in(key(seed), idx)` and is certified alone, so its
record does not depend on which other images were certified, or when.
"""
from __future__ import annotations

import time
from typing import Iterable, Iterator

import jax
import numpy as np

from hycas_jax import rng
from hycas_jax.certification import margin, smoothing, stats
from hycas_jax.evaluation.settings import CertifySettings
from hycas_jax.reporting import certify_report
from hycas_jax.runtime import distributed

RS_COLUMNS = ("pA", "count")
MARGIN_COLUMNS = ("margin_predict", "margin_radius", "margin_lower", "margin_time")


class Certifier:
    """Randomized smoothing and, with `settings.margin`, the Lipschitz margin certificate
    of `logits_fn(params, x, key)` (whose network bound is `lipschitz`).

    stochastic: False for a deterministic network, whose margin certificate needs one
    exact pass. mesh: each image's Monte Carlo samples are spread over all its devices
    (of every process); the counts, and so every record, equal the one-device run's.
    """

    def __init__(self, logits_fn, params, settings: CertifySettings, *, num_classes: int,
                 lipschitz: float, stochastic: bool = True, mesh=None, pair_lipschitz=None):
        self.logits_fn, self.settings, self.num_classes = logits_fn, settings, num_classes
        self.params = params if mesh is None else distributed.replicate(params, mesh)
        self.lipschitz, self.stochastic, self.mesh = float(lipschitz), stochastic, mesh
        self.pair_lipschitz = None if pair_lipschitz is None else np.asarray(pair_lipschitz)
        self.root = rng.key(settings.seed, settings.prng_impl)

    @property
    def columns(self) -> tuple:
        """A record's fields beyond Cohen et al.'s six."""
        return RS_COLUMNS + (MARGIN_COLUMNS if self.settings.margin else ())

    def __call__(self, idx: int, x: np.ndarray, label: int) -> dict:
        """The record of image `idx` (x float32 (1, H, W, C))."""
        s = self.settings
        rs_key, margin_key = jax.random.split(jax.random.fold_in(self.root, idx))
        start = time.perf_counter()
        rs = smoothing.certify(self.logits_fn, self.params, x, rs_key,
                               num_classes=self.num_classes, sigma=s.sigma, n0=s.n0, n=s.n,
                               alpha=s.alpha, batch_size=s.batch_size, mesh=self.mesh)
        top = int(rs.counts_selection[0].argmax())
        row = dict(idx=idx, label=label, predict=int(rs.prediction[0]),
                   radius=float(rs.radius[0]), correct=int(rs.prediction[0] == label),
                   time=time.perf_counter() - start, pA=float(rs.pA_lower[0]),
                   count=int(rs.counts[0, top]))
        if s.margin:
            start = time.perf_counter()
            m = margin.margin_certify(
                self.logits_fn, self.params, x, margin_key, num_classes=self.num_classes,
                lipschitz=self.lipschitz, logit_bound=s.logit_bound, n0=s.n0,
                num_samples=s.margin_samples, alpha=s.alpha, batch_size=s.batch_size,
                mesh=self.mesh, stochastic=self.stochastic, bound=s.margin_bound,
                pair_lipschitz=self.pair_lipschitz)
            row.update(margin_predict=int(m.prediction[0]), margin_radius=float(m.radius[0]),
                       margin_lower=float(m.margin_lower[0]),
                       margin_time=time.perf_counter() - start)
        return row

    def margin_description(self) -> str:
        """The margin certificate's classifier, bound and budget, in words (every table)."""
        s = self.settings
        name = margin.margin_classifier(s.logit_bound, stochastic=self.stochastic)
        lip = f"L = {self.lipschitz:.6g}"
        if not self.stochastic:
            pairs = ", per-pair head bounds" if self.pair_lipschitz is not None else ""
            return f"{name}, {lip}{pairs}; exact logits (one pass), nothing estimated"
        return (f"{name}, {lip}; n = {s.margin_samples} samples (class chosen on n0 = {s.n0}), "
                f"{stats.alpha_split(s.margin_bound, s.alpha, self.num_classes)}")

    def run(self, images: Iterable) -> Iterator[dict]:
        """Records of `(idx, x, label)` images, one by one."""
        for idx, x, label in images:
            yield self(idx, x, label)

    def curves(self, rows: dict) -> dict[str, tuple[str, float, certify_report.Curve]]:
        """name -> (classifier it certifies, alpha, (prediction, label, radius)) of the
        records `rows` (columns, as `certify_report.read_log` gives them)."""
        s, label = self.settings, rows["label"]
        curves = {"RS": (margin.smoothed_classifier(s.sigma), s.alpha,
                         (rows["predict"], label, rows["radius"]))}
        if s.margin:
            classifier = self.margin_description()
            abstain = rows["margin_predict"] < 0
            curves["margin"] = (classifier, s.alpha,
                                (rows["margin_predict"], label, rows["margin_radius"]))
            if self.lipschitz <= 2.0:  # the paper's Delta / 4 is a real certificate only when L <= 2
                curves["margin, paper Delta/4"] = (
                    classifier, s.alpha, (rows["margin_predict"], label,
                                          np.where(abstain, 0.0, rows["margin_lower"] / 4.0)))
        return curves

    def metrics(self, rows: dict, radii=certify_report.DEFAULT_RADII) -> dict:
        """Per certificate: the classifier, alpha, certified accuracy at `radii`, ACR and
        abstention rate."""
        out = {}
        for name, (classifier, alpha, (prediction, label, radius)) in self.curves(rows).items():
            out[name] = {
                "classifier": classifier, "alpha": alpha,
                "certified_accuracy": certify_report.certified_accuracy(
                    prediction, label, radius, radii).tolist(),
                "acr": certify_report.average_certified_radius(prediction, label, radius),
                "abstain": float(np.mean(prediction < 0)) if len(prediction) else float("nan")}
        return out

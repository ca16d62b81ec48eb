"""Certify a trained workdir: per-image log, summary table, plot.

`certify_workdir` loads a checkpoint written by `hycas_jax.training.train`,
certifies every `skip`-th test image (the first `max_examples` of those) with
randomized smoothing and, optionally, the Lipschitz margin certificate, and
writes into `out_dir` (default: the workdir), with stem
`certify_sigma<sigma>`:

* `<stem>.tsv`: one row per image (`certify_report.CertifyLog`): Cohen et
  al.'s columns `idx label predict radius correct time`, then `pA count`
  (the Clopper-Pearson bound and the count of the selected class among the n
  samples) and, with the margin certificate, `margin_predict margin_radius
  margin_lower margin_time`;
* `<stem>_summary.json`: the settings, certified accuracy at the usual radii,
  ACR and abstention rate per certificate, and the markdown table;
* `<stem>.png`: certified accuracy vs radius.

Image `idx` uses the key `fold_in(key(seed), idx)` and is certified alone, so
its row does not depend on which other images were certified, or when: an
interrupted run, restarted with the same arguments, appends the missing rows
and ends with the same log as an uninterrupted one. Resuming with settings that
change the certified numbers (step, sigma, n0, n, alpha, ...) is refused.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import jax
import numpy as np
from tqdm.auto import tqdm

from hycas_jax import (certificates, certify_report, checkpointing, checks, data, dct, distributed,
                       functional, inference, lipschitz, runlock, smoothing, training)
from hycas_jax.config import data_kwargs

RS_COLUMNS = ("pA", "count")
MARGIN_COLUMNS = ("margin_predict", "margin_radius", "margin_lower", "margin_time")
# Settings that change a row's numbers: a log may only be resumed when they match.
_RESULT_SETTINGS = ("step", "dataset", "sigma", "n0", "n", "alpha", "skip", "margin",
                    "margin_samples", "logit_bound", "seed", "lowpass_form", "margin_precision")


def resolve_settings(certify_config, **overrides) -> dict:
    """config.certify with the non-None `overrides` applied, checked.

    Raises ValueError naming the first bad setting. `max_examples` None (or
    <= 0) means the whole split.
    """
    s = {k: certify_config[k] for k in ("sigma", "n0", "n", "alpha", "batch_size", "skip",
                                        "max_examples", "margin", "margin_samples",
                                        "logit_bound", "seed")}
    s.update({k: v for k, v in overrides.items() if v is not None})
    s["sigma"] = checks.validate_sigma(s["sigma"])
    s["alpha"] = checks.validate_alpha(s["alpha"])
    for name in ("n0", "n", "batch_size", "skip", "margin_samples"):
        s[name] = checks.validate_count(s[name], name)
    s["seed"] = checks.validate_count(s["seed"], "seed", 0)
    if s["max_examples"] is not None and s["max_examples"] <= 0:
        s["max_examples"] = None
    s["margin"] = bool(s["margin"])
    if s["margin"] and not (math.isfinite(s["logit_bound"]) and s["logit_bound"] > 0):
        raise ValueError(f"logit_bound must be finite and > 0, got {s['logit_bound']}")
    return s


def output_paths(out_dir, sigma: float) -> dict[str, Path]:
    """The log, summary and plot paths for one sigma."""
    stem = f"certify_sigma{float(sigma)!r}"
    return {"log": Path(out_dir) / f"{stem}.tsv", "plot": Path(out_dir) / f"{stem}.png",
            "summary": Path(out_dir) / f"{stem}_summary.json"}


def _check_resumable(paths: dict[str, Path], settings: dict) -> None:
    """Refuses to append to a log made with settings that change the numbers."""
    if not (paths["log"].exists() and paths["summary"].exists()):
        return
    old = json.loads(paths["summary"].read_text()).get("settings", {})
    changed = [f"{k}: {old.get(k)!r} -> {settings[k]!r}" for k in _RESULT_SETTINGS
               if old.get(k) != settings[k]]
    if changed:
        raise ValueError(f"{paths['log']} was made with other settings ({'; '.join(changed)}); "
                         "use another out_dir or delete the log to start over")


def planned_indices(num_examples: int, skip: int, max_examples: int | None) -> np.ndarray:
    """Cohen et al.'s selection: every `skip`-th index, the first `max_examples` of them."""
    return np.arange(0, num_examples, skip)[:max_examples]


def _images(config, planned: np.ndarray, todo: set[int]):
    """Yields (idx, image float32 (1, H, W, C), label) for the planned indices in `todo`."""
    if not todo:  # a finished log: no need to read the data
        return
    batches = data.eval_batches(config.dataset.name, "test", batch_size=64, skip=0,
                                max_examples=int(planned[-1]) + 1, process_index=0,
                                process_count=1, **data_kwargs(config))
    for batch in batches:
        for i, idx in enumerate(batch["index"]):
            if batch["mask"][i] and int(idx) in todo:
                yield int(idx), batch["image"][i:i + 1], int(batch["label"][i])


class _Certifier:
    """Certifies one image at a time with the key `fold_in(root, idx)`.

    With a mesh each image's Monte Carlo samples are spread over all its devices
    (of every process); the counts, and so every row, equal the one-device run's.
    """

    def __init__(self, model, settings: dict, num_classes: int, mesh=None):
        self.logits_fn, params = functional(model)  # shared per architecture: compiled once
        self.params = params if mesh is None else distributed.replicate(params, mesh)
        self.s, self.num_classes, self.mesh = settings, num_classes, mesh
        # A deterministic network's margin certificate needs one exact pass.
        self.stochastic = bool(getattr(model, "stochastic", True))
        self.root = jax.random.key(settings["seed"])

    def __call__(self, idx: int, x: np.ndarray, label: int) -> dict:
        s = self.s
        rs_key, margin_key = jax.random.split(jax.random.fold_in(self.root, idx))
        start = time.perf_counter()
        rs = smoothing.certify(self.logits_fn, self.params, x, rs_key,
                               num_classes=self.num_classes, sigma=s["sigma"], n0=s["n0"],
                               n=s["n"], alpha=s["alpha"], batch_size=s["batch_size"],
                               mesh=self.mesh)
        top = int(rs.counts_selection[0].argmax())
        row = dict(idx=idx, label=label, predict=int(rs.prediction[0]),
                   radius=float(rs.radius[0]), correct=int(rs.prediction[0] == label),
                   time=time.perf_counter() - start, pA=float(rs.pA_lower[0]),
                   count=int(rs.counts[0, top]))
        if s["margin"]:
            row.update(self._margin(x, margin_key))
        return row

    def _margin(self, x, key) -> dict:
        s = self.s
        start = time.perf_counter()
        m = certificates.margin_certify(
            self.logits_fn, self.params, x, key, num_classes=self.num_classes,
            lipschitz=s["lipschitz"], logit_bound=s["logit_bound"], n0=s["n0"],
            num_samples=s["margin_samples"], alpha=s["alpha"], batch_size=s["batch_size"],
            mesh=self.mesh, stochastic=self.stochastic)
        return dict(margin_predict=int(m.prediction[0]), margin_radius=float(m.radius[0]),
                    margin_lower=float(m.margin_lower[0]),
                    margin_time=time.perf_counter() - start)


def certify_workdir(workdir, *, out_dir=None, step: int | None = None,
                    sigma: float | None = None, n0: int | None = None, n: int | None = None,
                    alpha: float | None = None, batch_size: int | None = None,
                    skip: int | None = None, max_examples: int | None = None,
                    margin: bool | None = None, margin_samples: int | None = None,
                    logit_bound: float | None = None, seed: int | None = None,
                    lowpass_form: str | None = None, data_dir: str | None = None,
                    progress: bool = True) -> dict:
    """Certifies the test split for the checkpoint in `workdir` (module docstring).

    Arguments left as None take the workdir config's `certify` values; `step`
    None is the latest checkpoint. `lowpass_form` picks how FDPAN's DCT low-pass
    is computed (`inference.freeze`; the same map, so it changes speed, not the
    certificates); None keeps the model's ("einsum"). Returns the summary (also written as JSON).
    Raises `CheckpointError` for a missing/corrupt workdir or checkpoint and
    ValueError for bad settings or a data set that does not match the config;
    both before any file is written. Under jax.distributed every process runs it
    (each image's samples spread over all devices); process 0 alone writes and gets
    the summary, the others None.
    """
    # The config alone first, so bad settings fail before the slow checkpoint restore.
    settings = resolve_settings(
        checkpointing.restore_config(str(workdir)).certify, sigma=sigma, n0=n0, n=n,
        alpha=alpha, batch_size=batch_size, skip=skip, max_examples=max_examples,
        margin=margin, margin_samples=margin_samples, logit_bound=logit_bound, seed=seed)
    if lowpass_form is not None:  # before the slow restore
        dct.check_lowpass_form(lowpass_form)
    # Every device of every process shares each image's samples; host-side work (freeze,
    # bound) uses this process's own copy of the weights.
    mesh = distributed.make_mesh({"data": -1}) if jax.device_count() > 1 else None
    multi = jax.process_count() > 1
    model, config, settings["step"] = training.restore_model(str(workdir), step,
                                                             mesh=mesh if multi else None)
    if multi:
        model = distributed.local_model(model)
    if data_dir:
        config.dataset.data_dir = data_dir
    # Derived weights once (hycas_jax.inference); the bound is of the arrays certified.
    model = inference.freeze(model, lowpass_form=lowpass_form)
    settings["lowpass_form"] = lowpass_form or "einsum"
    # Margin certificates hold only for the arithmetic that ran: full float32 matmuls and
    # convolutions (GPUs default to TF32; randomized smoothing certifies what ran).
    settings["margin_precision"] = certificates.MARGIN_PRECISION if settings["margin"] else None
    settings["dataset"] = config.dataset.name
    settings["lipschitz"] = lipschitz.network_bound(model)
    source, _ = data.get_source(config.dataset.name, "test", **data_kwargs(config))
    planned = planned_indices(len(source), settings["skip"], settings["max_examples"])
    paths = output_paths(out_dir or workdir, settings["sigma"])
    _check_resumable(paths, settings)
    lock = paths["log"].parent / f".{paths['log'].name}.lock"
    with runlock.exclusive(str(lock), f"certification log {paths['log']}"):
        log, todo = _open_log(paths, settings, planned)
        _run(log, _Certifier(model, settings, config.model.num_classes, mesh),
             _images(config, planned, todo), total=len(planned),
             done=len(planned) - len(todo), progress=progress)
        return _summarize(paths, settings, planned, workdir) if log is not None else None


def _open_log(paths: dict, settings: dict, planned: np.ndarray):
    """-> (the log, or None off process 0; the planned indices not yet in it). Only
    process 0 writes; every process gets its list of images to certify."""
    log, todo = None, np.ones(len(planned), bool)
    if jax.process_index() == 0:
        paths["log"].parent.mkdir(parents=True, exist_ok=True)
        paths["summary"].write_text(json.dumps({"settings": settings}, indent=2))
        extra = RS_COLUMNS + (MARGIN_COLUMNS if settings["margin"] else ())
        log = certify_report.CertifyLog(paths["log"], extra)
        todo = ~np.isin(planned, np.array(sorted(log.finished), np.int64))
    todo = distributed.from_process_zero(todo)
    return log, set(planned[np.asarray(todo)].tolist())


def _run(log, certifier, images, *, total: int, done: int, progress: bool) -> None:
    """Certifies and logs each image; the bar shows the fraction certified correct."""
    correct = 0
    with tqdm(total=total, initial=done, desc="certify", unit="img", dynamic_ncols=True,
              disable=not progress or log is None) as bar:
        for count, (idx, x, label) in enumerate(images, start=1):
            row = certifier(idx, x, label)
            if log is not None:
                log.append(**row)
            correct += row["correct"]
            bar.set_postfix(idx=idx, certified_correct=f"{correct / count:.2f}")
            bar.update(1)


def _curves(rows: dict, settings: dict) -> dict[str, tuple[str, float, certify_report.Curve]]:
    """name -> (classifier it certifies, alpha, (prediction, label, radius))."""
    label, alpha = rows["label"], settings["alpha"]
    curves = {"RS": (certificates.smoothed_classifier(settings["sigma"]), alpha,
                     (rows["predict"], label, rows["radius"]))}
    if settings["margin"]:
        lip = settings["lipschitz"]
        classifier = f"{certificates.margin_classifier(settings['logit_bound'])}, L = {lip:.6g}"
        abstain = rows["margin_predict"] < 0
        curves["margin"] = (classifier, alpha,
                            (rows["margin_predict"], label, rows["margin_radius"]))
        if lip <= 2.0:  # the paper's Delta / 4 is a real certificate only when L <= 2
            curves["margin, paper Delta/4"] = (
                classifier, alpha, (rows["margin_predict"], label,
                                    np.where(abstain, 0.0, rows["margin_lower"] / 4.0)))
    return curves


def _summarize(paths: dict, settings: dict, planned: np.ndarray, workdir) -> dict:
    """Summary of the planned images' rows; writes the JSON and the plot."""
    rows = certify_report.read_log(paths["log"])
    keep = np.isin(rows["idx"], planned)
    rows = {k: v[keep] for k, v in rows.items()}
    curves = _curves(rows, settings)
    radii = certify_report.DEFAULT_RADII
    named = {f"{name}: {classifier}": curve for name, (classifier, _, curve) in curves.items()}
    table = certify_report.markdown_table(named, radii) + "\n\n" + _abstain_table(curves)
    summary = {
        "settings": settings, "workdir": str(workdir), "num_images": int(keep.sum()),
        # Median: the first image of each run also pays for compilation.
        "median_seconds_per_image": float(np.median(rows["time"] + rows.get("margin_time", 0.0)))
        if keep.any() else None,
        "radii": list(radii), "table": table,
        "certificates": {name: _metrics(classifier, alpha, curve, radii)
                         for name, (classifier, alpha, curve) in curves.items()},
        "files": {k: str(v) for k, v in paths.items()}}
    paths["summary"].write_text(json.dumps(summary, indent=2))
    certify_report.plot_certified_accuracy(
        {name: curve for name, (_, _, curve) in curves.items()}, paths["plot"],
        title=f"{settings['dataset']}, step {settings['step']}, sigma = {settings['sigma']!r}")
    return summary


def _metrics(classifier: str, alpha: float, curve, radii) -> dict:
    prediction, label, radius = curve
    return {"classifier": classifier, "alpha": alpha,
            "certified_accuracy": certify_report.certified_accuracy(
                prediction, label, radius, radii).tolist(),
            "acr": certify_report.average_certified_radius(prediction, label, radius),
            "abstain": float(np.mean(prediction < 0)) if len(prediction) else float("nan")}


def _abstain_table(curves) -> str:
    lines = ["| certificate | abstain (%) | alpha per image |", "|---|---|---|"]
    for name, (_, alpha, (prediction, _, _)) in curves.items():
        rate = 100 * np.mean(prediction < 0) if len(prediction) else float("nan")
        lines.append(f"| {name} | {rate:.1f} | {alpha:g} |")
    if len(curves) > 1:
        lines.append("\nRS and margin certify different classifiers; each row holds with "
                     "probability >= 1 - alpha per image, both together >= 1 - 2 alpha.")
    return "\n".join(lines)

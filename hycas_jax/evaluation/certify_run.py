"""Certify a trained workdir: per-image log, summary table, plot.

`certify_workdir` loads a checkpoint written by `hycas_jax.training.train`,
certifies every `skip`-th test image (the first `max_examples` of those) with
randomized smoothing and, optionally, the Lipschitz margin certificate, and
writes into `out_dir` (default: the workdir), with stem
`certify_sigma<sigma>`:

* `<stem>.tsv`: one row per image (`hycas_jax.runtime.records.certify_log`): Cohen et
  al.'s columns `idx label predict radius correct time`, then `pA count`
  (the Clopper-Pearson bound and the count of the selected class among the n
  samples) and, with the margin certificate, `margin_predict margin_radius
  margin_lower margin_time`;
* `<stem>_summary.json`: the settings, certified accuracy at the usual radii,
  ACR and abstention rate per certificate, and the markdown table;
* `<stem>.png`: certified accuracy vs radius.

Each image is certified alone (`Certifier`), so its row does not depend on
which other images were certified, or when: an interrupted run, restarted with
the same settings, appends the missing rows and ends with the same log as an
uninterrupted one. Resuming with settings that change the certified numbers
(step, sigma, n0, n, alpha, ...) is refused.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional

import jax
import numpy as np
from tqdm.auto import tqdm

from hycas_jax import data, rng, training
from hycas_jax.adapter import functional
from hycas_jax.certification import clip, margin
from hycas_jax.config import data_kwargs
from hycas_jax.evaluation.certifier import Certifier
from hycas_jax.evaluation.settings import CertifySettings
from hycas_jax.nn import frozen, lipschitz
from hycas_jax.reporting import certify_report
from hycas_jax.runtime import distributed, records, runlock

# Settings that change a row's numbers: a log may only be resumed when they match.
_RESULT_SETTINGS = ("step", "dataset", "sigma", "n0", "n", "alpha", "skip", "margin",
                    "margin_samples", "logit_bound", "margin_bound", "margin_clip", "seed",
                    "lowpass_form", "margin_precision", "prng_impl", "split")
# What a log's summary from before a setting existed was made with.
_BEFORE = {"prng_impl": rng.DEFAULT_IMPL, "split": "test"}


def certify_paths(out_dir, sigma: float) -> dict[str, Path]:
    """The log, summary and plot paths for one sigma."""
    stem = f"certify_sigma{float(sigma)!r}"
    return {"log": Path(out_dir) / f"{stem}.tsv", "plot": Path(out_dir) / f"{stem}.png",
            "summary": Path(out_dir) / f"{stem}_summary.json"}


def _check_resumable(paths: dict[str, Path], recorded: dict) -> None:
    """Refuses to append to a log made with settings that change the numbers."""
    if not (paths["log"].exists() and paths["summary"].exists()):
        return
    old = json.loads(paths["summary"].read_text()).get("settings", {})
    changed = [f"{k}: {old.get(k, _BEFORE.get(k))!r} -> {recorded[k]!r}" for k in _RESULT_SETTINGS
               if old.get(k, _BEFORE.get(k)) != recorded[k]]
    if changed:
        raise ValueError(f"{paths['log']} was made with other settings ({'; '.join(changed)}); "
                         "use another out_dir or delete the log to start over")


def planned_indices(num_examples: int, skip: int, max_examples: int | None) -> np.ndarray:
    """Cohen et al.'s selection: every `skip`-th index, the first `max_examples` of them."""
    return np.arange(0, num_examples, skip)[:max_examples]


def _images(config, planned: np.ndarray, todo: set[int], split: str = "test"):
    """Yields (idx, image float32 (1, H, W, C), label) for the planned indices in `todo`."""
    if not todo:  # a finished log: no need to read the data
        return
    batches = data.eval_batches(config.dataset.name, split, batch_size=64, skip=0,
                                max_examples=int(planned[-1]) + 1, process_index=0,
                                process_count=1, **data_kwargs(config))
    for batch in batches:
        for i, idx in enumerate(batch["index"]):
            if batch["mask"][i] and int(idx) in todo:
                yield int(idx), batch["image"][i:i + 1], int(batch["label"][i])


CALIBRATION_IMAGES = 50  # the first training images; the clip's draws use key(seed + 1)


def _calibrated_clip(config, logits_fn, params, settings: CertifySettings) -> float:
    """The margin certificate's clip from the model's logits on training images."""
    batch = next(iter(data.eval_batches(
        config.dataset.name, "train", batch_size=CALIBRATION_IMAGES, skip=0,
        max_examples=CALIBRATION_IMAGES, process_index=0, process_count=1,
        **data_kwargs(config))))
    x = batch["image"][np.asarray(batch["mask"], bool)]
    return clip.calibrated_clip(logits_fn, params, x, rng.key(settings.seed + 1, settings.prng_impl),
                                num=settings.n0, chunk_size=min(settings.n0, 100))


def certify_workdir(workdir, settings: Optional[CertifySettings] = None, *,
                    step: Optional[int] = None, out_dir=None, data_dir: Optional[str] = None,
                    progress: bool = True, split: str = "test") -> dict:
    """Certifies the test split for the checkpoint in `workdir` (module docstring).

    split: another split of the data set instead, e.g. 'holdout' (the validation examples
    a run configured with `dataset.holdout` kept out of training), for model selection.

    settings: None takes the workdir config's (`CertifySettings.from_config`). step:
    None is the latest checkpoint. data_dir: where the data lives on this machine
    (default: the config's). Returns the summary (also written as JSON). Raises
    `CheckpointError` for a missing/corrupt workdir or checkpoint and ValueError for
    a data set that does not match the config, both before any file is written.
    Under jax.distributed every process runs it (each image's samples spread over
    all devices); process 0 alone writes and gets the summary, the others None.
    """
    if settings is None:  # the config alone first: bad settings fail before the slow restore
        settings = CertifySettings.of_workdir(workdir)
    # Every device of every process shares each image's samples; host-side work (freeze,
    # bound) uses this process's own copy of the weights.
    mesh = distributed.make_mesh({"data": -1}) if jax.device_count() > 1 else None
    multi = jax.process_count() > 1
    model, config, step = training.restore_model(str(workdir), step, mesh=mesh if multi else None)
    if multi:
        model = distributed.local_model(model)
    if data_dir:
        config.dataset.data_dir = data_dir
    # Derived weights once (hycas_jax.nn.frozen); the bound is of the arrays certified.
    model = frozen.freeze(model, lowpass_form=settings.lowpass_form)
    logits_fn, params = functional(model)  # shared per architecture: compiled once
    stochastic = bool(getattr(model, "stochastic", True))
    if settings.margin and settings.margin_clip == "calibrated" and stochastic:
        settings = dataclasses.replace(settings, logit_bound=_calibrated_clip(
            config, logits_fn, params, settings))
    certifier = Certifier(logits_fn, params, settings, num_classes=config.model.num_classes,
                          lipschitz=lipschitz.network_bound(model),
                          stochastic=stochastic, mesh=mesh,
                          pair_lipschitz=model.pair_bounds() if hasattr(model, "pair_bounds")
                          else None)
    # Margin certificates hold only for the arithmetic that ran: full float32 matmuls and
    # convolutions (GPUs default to TF32; randomized smoothing certifies what ran).
    recorded = {**dataclasses.asdict(settings), "step": step,
                "margin_precision": margin.MARGIN_PRECISION if settings.margin else None,
                "margin_bound": settings.margin_bound if settings.margin else None,
                "margin_clip": settings.margin_clip if settings.margin else None,
                "dataset": config.dataset.name, "lipschitz": certifier.lipschitz,
                "split": split}
    source, _ = data.get_source(config.dataset.name, split, **data_kwargs(config))
    planned = planned_indices(len(source), settings.skip, settings.max_examples)
    paths = certify_paths(out_dir or workdir, settings.sigma)
    _check_resumable(paths, recorded)
    lock = paths["log"].parent / f".{paths['log'].name}.lock"
    with runlock.exclusive(str(lock), f"certification log {paths['log']}"):
        log, todo = _open_log(paths, recorded, planned, certifier.columns)
        _run(log, certifier, _images(config, planned, todo, split), total=len(planned),
             done=len(planned) - len(todo), progress=progress)
        return _summarize(paths, certifier, recorded, planned, workdir) if log else None


def _open_log(paths: dict, recorded: dict, planned: np.ndarray, columns):
    """-> (the log, or None off process 0; the planned indices not yet in it). Only
    process 0 writes; every process gets its list of images to certify."""
    log, todo = None, np.ones(len(planned), bool)
    if jax.process_index() == 0:
        paths["log"].parent.mkdir(parents=True, exist_ok=True)
        paths["summary"].write_text(json.dumps({"settings": recorded}, indent=2))
        log = records.certify_log(paths["log"], columns)
        todo = ~np.isin(planned, np.array(sorted(log.records), np.int64))
    todo = distributed.from_process_zero(todo)
    return log, set(planned[np.asarray(todo)].tolist())


def _run(log, certifier: Certifier, images, *, total: int, done: int, progress: bool) -> None:
    """Certifies and logs each image; the bar shows the fraction certified correct."""
    correct = 0
    with tqdm(total=total, initial=done, desc="certify", unit="img", dynamic_ncols=True,
              disable=not progress or log is None) as bar:
        for count, row in enumerate(certifier.run(images), start=1):
            if log is not None:
                log.append(row)
            correct += row["correct"]
            bar.set_postfix(idx=row["idx"], certified_correct=f"{correct / count:.2f}")
            bar.update(1)


def _summarize(paths: dict, certifier: Certifier, recorded: dict, planned: np.ndarray,
               workdir) -> dict:
    """Summary of the planned images' rows; writes the JSON and the plot."""
    rows = certify_report.read_log(paths["log"])
    keep = np.isin(rows["idx"], planned)
    rows = {k: v[keep] for k, v in rows.items()}
    curves = certifier.curves(rows)
    radii = certify_report.DEFAULT_RADII
    named = {f"{name}: {classifier}": curve for name, (classifier, _, curve) in curves.items()}
    table = certify_report.markdown_table(named, radii) + "\n\n" + certify_report.abstain_table(
        {name: (alpha, curve) for name, (_, alpha, curve) in curves.items()})
    summary = {
        "settings": recorded, "workdir": str(workdir), "num_images": int(keep.sum()),
        # Median: the first image of each run also pays for compilation.
        "median_seconds_per_image": float(np.median(rows["time"] + rows.get("margin_time", 0.0)))
        if keep.any() else None,
        "radii": list(radii), "table": table,
        "certificates": certifier.metrics(rows, radii),
        "files": {k: str(v) for k, v in paths.items()}}
    paths["summary"].write_text(json.dumps(summary, indent=2))
    certify_report.plot_certified_accuracy(
        {name: curve for name, (_, _, curve) in curves.items()}, paths["plot"],
        title=f"{recorded['dataset']}, step {recorded['step']}, sigma = {recorded['sigma']!r}")
    return summary

"""Attack a trained workdir: robust accuracy per attack, eps and decision rule.

`attack_workdir` loads a checkpoint written by `hycas_jax.training.train`,
attacks the first `max_examples` test images with each attack at each eps,
scores every decision rule of `hycas_jax.attacks.scoring`, and writes into
`out_dir` (default `<workdir>/attack`):

* `attacks.jsonl`: one line per finished (attack, eps, batch, rule) unit with
  the per-image scores. A rerun skips the units already there, so an
  interrupted run loses at most the unit in flight. Each line carries a digest
  of the settings that change its numbers (checkpoint step, norm, n_iter,
  seed, ...): a run with other settings computes fresh lines beside the old.
* `attack_summary.json`: settings, rules, clean and robust accuracy, table.
* `robust_accuracy.md` (the markdown table) and `robust_accuracy.png`.

What is attacked and how each rule is scored: `hycas_jax.evaluation.attacker`.
"""
from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Optional

import jax
from tqdm.auto import tqdm

from hycas_jax import data, rng, training
from hycas_jax.adapter import functional
from hycas_jax.config import data_kwargs
from hycas_jax.evaluation.attacker import Attacker, unit_key
from hycas_jax.evaluation.settings import AttackSettings
from hycas_jax.nn import frozen
from hycas_jax.reporting import attack_report
from hycas_jax.runtime import distributed, records, runlock

LOG_FILE = "attacks.jsonl"


def resolved_settings(settings: AttackSettings, config, step: int, num_test: int) -> dict:
    """The settings as run and recorded: the image selection resolved against the split
    (`num_test` images), the vote's sigma (default: the training sigma, the smoothed
    classifier a noise-trained model is for), the checkpoint step and data set, and the
    digest of the fields that change a unit's numbers."""
    vote_sigma = settings.vote_sigma
    s = {"step": step, "dataset": config.dataset.name, "norm": settings.norm,
         "eps": list(settings.eps), "n_iter": settings.n_iter, "eot_iter": settings.eot_iter,
         "max_examples": settings.max_examples, "vote_samples": settings.vote_samples,
         "seed": settings.seed, "repeats": settings.repeats, "batch_size": settings.batch_size,
         "alpha": settings.alpha,
         "vote_sigma": float(config.training.get("sigma", 0.0)) if vote_sigma is None
         else vote_sigma,
         "vote_sigma_source": "training sigma" if vote_sigma is None else "given"}
    s["stride"] = settings.stride or max(1, num_test // s["max_examples"])
    s["max_examples"] = min(s["max_examples"], -(-num_test // s["stride"]))
    s["batch_size"] = min(s["batch_size"], s["max_examples"])
    s["prng_impl"] = settings.prng_impl
    keep = {k: v for k, v in s.items() if k not in ("eps", "max_examples", "vote_sigma_source")}
    if settings.prng_impl == rng.DEFAULT_IMPL:  # the digest of runs from before the choice
        del keep["prng_impl"]
    s["digest"] = f"{zlib.crc32(json.dumps(keep, sort_keys=True).encode()):08x}"
    return s


def attack_workdir(workdir, settings: Optional[AttackSettings] = None, *,
                   step: Optional[int] = None, out_dir=None, data_dir: Optional[str] = None,
                   progress: bool = True, quiet: bool = False) -> dict:
    """Runs (or resumes) the attack evaluation of `workdir`; returns the summary.

    settings: None takes the workdir config's (`AttackSettings.from_config`). step:
    None is the latest checkpoint. data_dir: where the data lives on this machine
    (default: the config's). Raises ValueError for a data set that does not match
    the config and `hycas_jax.runtime.checkpointing.CheckpointError` for a missing or
    corrupt checkpoint. The summary's `units_run` counts the units this call computed.

    Under jax.distributed, process 0 does the work on its own devices and writes;
    the other processes wait for it and return None.
    """
    if settings is None:  # the config alone first: bad settings fail before the slow restore
        settings = AttackSettings.of_workdir(workdir)
    # Every process reads the checkpoint (orbax coordinates the processes' reads).
    mesh = distributed.make_mesh({"data": -1}) if jax.process_count() > 1 else None
    model, config, step = training.restore_model(workdir, step, mesh=mesh)
    try:
        if jax.process_index() != 0:
            return None
        model = model if mesh is None else distributed.local_model(model)
        return _attack_workdir(workdir, model, config, step, settings, out_dir=out_dir,
                               data_dir=data_dir, progress=progress, quiet=quiet)
    finally:
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices("hycas_jax attack_workdir done")


def _attack_workdir(workdir, model, config, step: int, settings: AttackSettings, *, out_dir,
                    data_dir, progress, quiet) -> dict:
    kwargs = data_kwargs(config, data_dir=data_dir)
    num_test = len(data.get_source(config.dataset.name, "test", **kwargs)[0])
    s = resolved_settings(settings, config, step, num_test)
    # Derived weights once; the model's fast reverse-mode gradients for the attacks.
    model_fn, params = functional(frozen.freeze(model), reverse_mode=True)
    attacker = Attacker(model_fn, params, settings, stochastic=model.stochastic,
                        vote_sigma=s["vote_sigma"], digest=s["digest"])
    out = Path(out_dir or Path(workdir) / "attack")
    out.mkdir(parents=True, exist_ok=True)
    with runlock.exclusive(str(out / f".{LOG_FILE}.lock"), f"attack log {out / LOG_FILE}"):
        log = records.RecordLog(out / LOG_FILE, key=unit_key)
        batches = data.eval_batches(config.dataset.name, "test", batch_size=s["batch_size"],
                                    max_examples=s["max_examples"], stride=s["stride"],
                                    process_index=0, process_count=1, **kwargs)
        n_batches = -(-s["max_examples"] // s["batch_size"])
        found, s["units_run"] = [], 0
        with tqdm(total=n_batches * len(attacker.units()), desc="attack",
                  disable=not progress, dynamic_ncols=True) as bar:
            for batch in batches:
                for record in attacker.run(batch, log.records):
                    if unit_key(record) not in log:
                        log.append(record)
                        s["units_run"] += 1
                    found.append(record)
                    bar.update(1)
    summary = attack_report.summarize(found, s, model_stochastic=model.stochastic,
                                      workdir=str(workdir))
    attack_report.write(out, summary)
    if not quiet:
        print(summary["table"])
    return summary

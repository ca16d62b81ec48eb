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

Targets. The 'single' rule attacks the model as deployed (one stochastic
pass). The 'vote' rule with sigma > 0 is a smoothed classifier, so its attacks
see the input noise inside EOT: an attack that never sees the noise would
overstate what the vote withstands. AutoAttack's version follows the target:
'rand' when it has randomness, 'standard' when it is deterministic; EOT
draws are 1 against a deterministic target.

Keys. Scoring draws depend only on the batch and the rule (common random
numbers): every attack and eps is scored with the same draws, so eps = 0
reproduces clean accuracy exactly and curves in eps carry little relative
Monte Carlo noise. Attack keys depend on (batch, attack, eps, target).
"""
from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Callable, NamedTuple

import jax
import numpy as np
from tqdm.auto import tqdm

from hycas_jax import data, distributed, files, functional, inference, rng, runlock, training
from hycas_jax.attacks import apgd, autoattack, scoring, validation
from hycas_jax.config import data_kwargs
from hycas_jax.evaluation import attack_report

ATTACKS = ("apgd-ce", "apgd-dlr", "apgd-t", "autoattack", "autoattack-rand", "autoattack-standard")
RULES = scoring.RULES
LOG_FILE = "attacks.jsonl"


class Target(NamedTuple):
    """The classifier an attack runs against: ``fn(params, x, key)``, the
    input-noise ``sigma`` folded into it, and whether it is random."""
    fn: Callable
    sigma: float
    stochastic: bool


def make_target(logits_fn, *, stochastic: bool, sigma: float = 0.0) -> Target:
    """``logits_fn`` itself (sigma = 0), or the same model on x + N(0, sigma^2),
    noise not clipped (as in `hycas_jax.smoothing`). Build it once per run:
    the function object is the attacks' jit cache key."""
    if sigma == 0.0:
        return Target(logits_fn, 0.0, stochastic)

    def noisy_fn(params, x, key):
        noise_key, model_key = jax.random.split(key)
        return logits_fn(params, x + sigma * rng.normal(noise_key, x.shape, x.dtype),
                         model_key)
    return Target(noisy_fn, float(sigma), True)


def attack_label(attack: str, target: Target) -> str:
    """The attack's name as reported, with AutoAttack's version resolved."""
    if attack == "autoattack":
        return "autoattack-rand" if target.stochastic else "autoattack-standard"
    return attack


def run_attack(attack, target, params, x, y, key, *, norm, eps, n_iter, eot_iter):
    """x_adv (B, H, W, C) from one named attack against ``target``.

    On a random target APGD's highest-EOT-loss point is returned (a single
    fooling draw is weak evidence); on a deterministic one, its first
    fooling point where it found one.
    """
    eot = eot_iter if target.stochastic else 1
    label = attack_label(attack, target)
    if label.startswith("autoattack"):
        return autoattack(target.fn, params, x, y, key, norm=norm, eps=eps,
                          version=label.split("-")[1], n_iter=n_iter, eot_iter=eot).x_adv
    loss = {"apgd-ce": {"loss": "ce"}, "apgd-dlr": {"loss": "dlr"}}.get(attack)
    if loss is None:  # apgd-t: AutoAttack's 9 targets, fewer when there are fewer classes
        n_classes = validation.num_classes(target.fn, params, x, key)
        loss = {"loss": "dlr", "targeted": True, "n_target_classes": min(9, n_classes - 1)}
    out = apgd(target.fn, params, x, y, key, norm=norm, eps=eps, n_iter=n_iter,
               eot_iter=eot, **loss)
    return out.x_best if target.stochastic else out.x_adv


def check_options(*, eps_list=None, norm=None, attacks=(), rules=()) -> None:
    """ValueError naming the first bad option; None means 'from the config'."""
    if norm is not None:
        validation.check_norm(norm)
    for eps in eps_list or ():
        validation.check_eps(eps)
    for name, value, known in (("attack", attacks, ATTACKS), ("rule", rules, RULES)):
        if not value:
            raise ValueError(f"no {name} given; choose from {known}")
        for item in value:
            if item not in known:
                raise ValueError(f"unknown {name} {item!r}; expected one of {known}")


def _fold(key, text: str):
    """A key for ``text`` (e.g. a rule name) derived from ``key``."""
    return jax.random.fold_in(key, zlib.crc32(text.encode()) & 0x7FFFFFFF)


def _score(rule, logits_fn, params, x_adv, y, key, s) -> dict:
    """Per-image scores of one rule, as JSON-ready lists."""
    if rule == "single":
        r = scoring.score_single(logits_fn, params, x_adv, y, key, repeats=s["repeats"])
        return {"correct": np.rint(r["per_example"] * s["repeats"]).astype(int).tolist()}
    r = scoring.score_vote(logits_fn, params, x_adv, y, key, m=s["vote_samples"],
                           sigma=s["vote_sigma"], alpha=s["alpha"])
    return {"right": (r["prediction"] == np.asarray(y)).tolist(), "decided": r["decided"].tolist()}


class _Log:
    """The JSONL of finished units (a `files.AppendLog`): read once, appended line by line."""

    def __init__(self, path: Path):
        self._log = files.AppendLog(path)
        self.done = {}
        for line in self._log.lines:
            record = json.loads(line)
            self.done[self.key(record)] = record

    @staticmethod
    def key(r) -> tuple:
        return (r["digest"], r["attack"], r["eps"], r["first"], r["last"], r["rule"])

    def append(self, record: dict) -> None:
        self._log.append(json.dumps(record))
        self.done[self.key(record)] = record


def _settings(config, step, **overrides) -> dict:
    """config.attack with the non-None overrides; the vote's sigma defaults to
    the training sigma (the smoothed classifier a noise-trained model is for)."""
    a = config.attack
    s = {"step": step, "dataset": config.dataset.name, "norm": a.norm, "eps": list(a.eps),
         "n_iter": a.n_iter, "eot_iter": a.eot_iter, "max_examples": a.max_examples,
         "vote_samples": a.vote_samples, "seed": a.seed, "repeats": 10, "batch_size": 100,
         "alpha": config.certify.alpha, "vote_sigma": float(config.training.get("sigma", 0.0))}
    s["vote_sigma_source"] = "training sigma" if overrides.get("vote_sigma") is None else "given"
    s.update({k: v for k, v in overrides.items() if v is not None})
    s["eps"] = [float(e) for e in s["eps"]]
    s["batch_size"] = min(s["batch_size"], s["max_examples"])
    for name in ("n_iter", "eot_iter", "max_examples", "vote_samples", "repeats", "batch_size"):
        validation.check_positive_int(name, s[name])
    validation.check_eps(s["vote_sigma"], "vote_sigma")
    return s


def _digest(s) -> str:
    """Hash of the settings that change a unit's numbers."""
    keep = {k: v for k, v in s.items() if k not in ("eps", "max_examples", "vote_sigma_source")}
    return f"{zlib.crc32(json.dumps(keep, sort_keys=True).encode()):08x}"


def _units(base, attacks, eps_list, rules):
    """The unit keys of one batch (``base``: digest, first, last), clean first."""
    return [(attack, eps, rule)
            for attack, eps in [("clean", None)] + [(a, e) for a in attacks for e in eps_list]
            for rule in rules]


def _batch_units(batch, model_fn, params, targets, log, bar, s, attacks) -> list:
    """Runs the missing units of one batch; returns all its records, and counts
    the units it ran in ``s['units_run']``."""
    real = np.asarray(batch["mask"])
    x, y = jax.numpy.asarray(batch["image"]), jax.numpy.asarray(batch["label"])
    index = np.asarray(batch["index"])[real]
    batch_key = jax.random.fold_in(jax.random.key(s["seed"]), int(index[0]))
    base = {"digest": s["digest"], "first": int(index[0]), "last": int(index[-1])}
    cache = {}  # (attack, eps, target sigma) -> x_adv, shared by rules with one target
    records = []
    for attack, eps, rule in _units(base, attacks, s["eps"], targets):
        unit = {**base, "attack": attack, "eps": eps, "rule": rule}
        if _Log.key(unit) not in log.done:
            target = targets[rule]
            slot = (attack, eps, target.sigma)
            if slot not in cache:
                cache[slot] = x if attack == "clean" else run_attack(
                    attack, target, params, x, y, _fold(batch_key, repr(slot)),
                    norm=s["norm"], eps=eps, n_iter=s["n_iter"], eot_iter=s["eot_iter"])
            label = "clean" if attack == "clean" else attack_label(attack, target)
            scores = _score(rule, model_fn, params, cache[slot][real], y[real],
                            _fold(batch_key, f"score|{rule}"), s)
            log.append({**unit, "label": label, "index": index.tolist(), **scores})
            s["units_run"] += 1
        records.append(log.done[_Log.key(unit)])
        bar.update(1)
    return records


def attack_workdir(workdir, *, eps_list=None, norm=None, n_iter=None, eot_iter=None,
                   attacks=("apgd-ce", "apgd-dlr", "autoattack"), rules=RULES,
                   max_examples=None, batch_size=None, vote_samples=None, vote_sigma=None,
                   repeats=None, seed=None, out_dir=None, step=None, progress=True,
                   quiet=False, stride=None, data_dir=None) -> dict:
    """Runs (or resumes) the attack evaluation of `workdir`; returns the summary.

    The images are every `stride`-th test image, the first `max_examples` of
    them; stride None spreads them evenly over the split (len // max_examples),
    so a split sorted by label still gives every class.
    None arguments come from the workdir's `config.attack` (batch_size 100,
    repeats 10 passes per image for the 'single' rule, vote_sigma the training
    sigma). 'autoattack' picks its version from the target (see the module
    docs). `data_dir` replaces the config's `dataset.data_dir` (the data's place on
    this machine). Raises ValueError for bad options and
    `hycas_jax.checkpointing.CheckpointError` for a missing or corrupt
    checkpoint. The summary's `units_run` counts the units this call computed.

    Under jax.distributed, process 0 does the work on its own devices and writes;
    the other processes check the same options, then wait for it and return None.
    """
    check_options(eps_list=eps_list, norm=norm, attacks=attacks, rules=rules)
    options = dict(eps_list=eps_list, norm=norm, n_iter=n_iter, eot_iter=eot_iter,
                   attacks=attacks, rules=rules, max_examples=max_examples,
                   batch_size=batch_size, vote_samples=vote_samples, vote_sigma=vote_sigma,
                   repeats=repeats, seed=seed, out_dir=out_dir, progress=progress,
                   quiet=quiet, stride=stride, data_dir=data_dir)
    # Every process reads the checkpoint (orbax coordinates the processes' reads).
    mesh = distributed.make_mesh({"data": -1}) if jax.process_count() > 1 else None
    model, config, step = training.restore_model(workdir, step, mesh=mesh)
    try:
        if jax.process_index() != 0:
            return None
        model = model if mesh is None else distributed.local_model(model)
        return _attack_workdir(workdir, model, config, step, **options)
    finally:
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices("hycas_jax attack_workdir done")


def _attack_workdir(workdir, model, config, step: int, *, eps_list, norm, n_iter, eot_iter,
                    attacks, rules, max_examples, batch_size, vote_samples, vote_sigma, repeats,
                    seed, out_dir, progress, quiet, stride, data_dir) -> dict:
    s = _settings(config, step, eps=eps_list, norm=norm, n_iter=n_iter, eot_iter=eot_iter,
                  max_examples=max_examples, batch_size=batch_size, vote_samples=vote_samples,
                  vote_sigma=vote_sigma, repeats=repeats, seed=seed)
    check_options(eps_list=s["eps"], norm=s["norm"], attacks=attacks, rules=rules)
    kwargs = data_kwargs(config, data_dir=data_dir)
    num_test = len(data.get_source(config.dataset.name, "test", **kwargs)[0])
    if stride is None:
        stride = max(1, num_test // s["max_examples"])
    validation.check_positive_int("stride", stride)
    s["stride"] = int(stride)
    s["max_examples"] = min(s["max_examples"], -(-num_test // s["stride"]))
    s["batch_size"] = min(s["batch_size"], s["max_examples"])
    s["digest"], s["units_run"] = _digest(s), 0
    # Derived weights once; the model's fast reverse-mode gradients for the attacks.
    model_fn, params = functional(inference.freeze(model), reverse_mode=True)
    base = make_target(model_fn, stochastic=model.stochastic)
    vote = make_target(model_fn, stochastic=model.stochastic, sigma=s["vote_sigma"])
    targets = {rule: base if rule == "single" else vote for rule in rules}
    out = Path(out_dir or Path(workdir) / "attack")
    out.mkdir(parents=True, exist_ok=True)
    with runlock.exclusive(str(out / f".{LOG_FILE}.lock"), f"attack log {out / LOG_FILE}"):
        log = _Log(out / LOG_FILE)
        records = _attack_batches(config, s, log, model_fn, params, targets, attacks, rules,
                                  kwargs, progress)
    summary = attack_report.summarize(records, s, model_stochastic=model.stochastic,
                                      workdir=str(workdir))
    attack_report.write(out, summary)
    if not quiet:
        print(summary["table"])
    return summary


def _attack_batches(config, s, log, model_fn, params, targets, attacks, rules, kwargs,
                    progress) -> list:
    """The records of every (batch, attack, eps, rule) unit, computed or read from the log."""
    batches = data.eval_batches(config.dataset.name, "test", batch_size=s["batch_size"],
                                max_examples=s["max_examples"], stride=s["stride"],
                                process_index=0, process_count=1, **kwargs)
    n_batches = -(-s["max_examples"] // s["batch_size"])
    records = []
    with tqdm(total=n_batches * len(_units({}, attacks, s["eps"], rules)), desc="attack",
              disable=not progress, dynamic_ncols=True) as bar:
        for batch in batches:
            records += _batch_units(batch, model_fn, params, targets, log, bar, s, attacks)
    return records

"""The attack evaluator: built from a `logits_fn`, it attacks a batch with every
(attack, eps) and scores each decision rule, yielding one record per unit.

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

import zlib
from types import MappingProxyType
from typing import Callable, Iterator, Mapping, NamedTuple

import jax
import numpy as np

from hycas_jax import rng
from hycas_jax.attacks import apgd, autoattack, scoring, validation
from hycas_jax.attacks.autoattack import REUSABLE
from hycas_jax.evaluation.settings import AttackSettings


class Target(NamedTuple):
    """The classifier an attack runs against: ``fn(params, x, key)``, the
    input-noise ``sigma`` folded into it, and whether it is random."""
    fn: Callable
    sigma: float
    stochastic: bool


def make_target(logits_fn, *, stochastic: bool, sigma: float = 0.0) -> Target:
    """``logits_fn`` itself (sigma = 0), or the same model on x + N(0, sigma^2),
    noise not clipped (as in `hycas_jax.certification.smoothing`). Build it once per run:
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


def reusable_members(attack: str, target: Target) -> tuple:
    """The stand-alone attacks (`run_attack` names) whose output against `target` is
    AutoAttack's member of that name: its version's reusable members when the version
    is the one the target takes (`run_attack` returns APGD's `x_best` on a random
    target, `x_adv` on a deterministic one, as the 'rand' / 'standard' ensembles
    use them); none otherwise, and none for an attack that is not AutoAttack."""
    label = attack_label(attack, target)
    if not label.startswith("autoattack"):
        return ()
    version = label.split("-")[1]
    return REUSABLE[version] if version == ("rand" if target.stochastic else "standard") else ()


def run_attack(attack, target, params, x, y, key, *, norm, eps, n_iter, eot_iter,
               done=MappingProxyType({})):
    """x_adv (B, H, W, C) from one named attack against ``target``.

    On a random target APGD's highest-EOT-loss point is returned (a single
    fooling draw is weak evidence); on a deterministic one, its first
    fooling point where it found one. done: {attack name: its output from this
    function} for the same target, x and settings; AutoAttack takes the outputs
    of its own members from it (`reusable_members`) rather than running them again.
    """
    eot = eot_iter if target.stochastic else 1
    label = attack_label(attack, target)
    # apgd-t (alone or in AutoAttack-standard): AutoAttack's 9 targets, fewer when there
    # are fewer classes.
    targets = lambda: min(9, validation.num_classes(target.fn, params, x, key) - 1)
    if label.startswith("autoattack"):
        version = label.split("-")[1]
        reuse = {name: done[name] for name in reusable_members(attack, target) if name in done}
        extra = {"n_target_classes": targets()} if version == "standard" else {}
        return autoattack(target.fn, params, x, y, key, norm=norm, eps=eps, version=version,
                          n_iter=n_iter, eot_iter=eot, precomputed=reuse, **extra).x_adv
    loss = {"apgd-ce": {"loss": "ce"}, "apgd-dlr": {"loss": "dlr"}}.get(attack)
    if loss is None:
        loss = {"loss": "dlr", "targeted": True, "n_target_classes": targets()}
    out = apgd(target.fn, params, x, y, key, norm=norm, eps=eps, n_iter=n_iter,
               eot_iter=eot, **loss)
    return out.x_best if target.stochastic else out.x_adv


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


def _units(attacks, eps_list, rules):
    """(attack, eps, rule) of one batch, clean first."""
    return [(attack, eps, rule)
            for attack, eps in [("clean", None)] + [(a, e) for a in attacks for e in eps_list]
            for rule in rules]


def unit_key(record: dict) -> tuple:
    """The unit a record finishes: (digest, attack, eps, first, last, rule)."""
    return (record["digest"], record["attack"], record["eps"], record["first"], record["last"],
            record["rule"])


class Attacker:
    """Attacks and scores batches for `logits_fn(params, x, key)` under `settings`.

    stochastic: whether the model draws internal randomness. vote_sigma: the vote
    rule's input noise (resolved: `settings.vote_sigma` or the training sigma).
    digest: names the settings that change a record's numbers (stored in each).
    The model's fast reverse-mode gradients are for `logits_fn` to provide
    (`functional(model, reverse_mode=True)`).
    """

    def __init__(self, logits_fn, params, settings: AttackSettings, *, stochastic: bool,
                 vote_sigma: float, digest: str = ""):
        self.logits_fn, self.params, self.settings = logits_fn, params, settings
        self.vote_sigma, self.digest = float(vote_sigma), digest
        base = make_target(logits_fn, stochastic=stochastic)
        vote = make_target(logits_fn, stochastic=stochastic, sigma=self.vote_sigma)
        self.targets = {rule: base if rule == "single" else vote for rule in settings.rules}

    def units(self) -> list:
        """(attack, eps, rule) of one batch, clean first."""
        return _units(self.settings.attacks, self.settings.eps, self.targets)

    def run(self, batch, finished: Mapping = MappingProxyType({})) -> Iterator[dict]:
        """Every unit's record of one batch, in `units()` order: from `finished`
        (`unit_key` -> record) where it has it, computed otherwise. A record holds the
        unit's key fields, the images' indices and their per-image scores."""
        s = self.settings
        real = np.asarray(batch["mask"])
        x, y = jax.numpy.asarray(batch["image"]), jax.numpy.asarray(batch["label"])
        index = np.asarray(batch["index"])[real]
        batch_key = jax.random.fold_in(rng.key(s.seed, s.prng_impl), int(index[0]))
        base = {"digest": self.digest, "first": int(index[0]), "last": int(index[-1])}
        cache = {}  # (attack, eps, target sigma) -> x_adv, shared by rules with one target
        for attack, eps, rule in self.units():
            unit = {**base, "attack": attack, "eps": eps, "rule": rule}
            if unit_key(unit) in finished:
                yield finished[unit_key(unit)]
                continue
            target = self.targets[rule]
            x_adv = self._adversarial(attack, eps, target, x, y, batch_key, cache)
            label = "clean" if attack == "clean" else attack_label(attack, target)
            scores = self._score(rule, x_adv[real], y[real], _fold(batch_key, f"score|{rule}"))
            yield {**unit, "label": label, "index": index.tolist(), **scores}

    def _adversarial(self, attack, eps, target, x, y, batch_key, cache):
        """x_adv of (attack, eps) against `target` on this batch, from `cache` or computed
        into it. The key depends on (batch, attack, eps, target) alone. AutoAttack first
        gets the outputs of its members that the settings also list stand-alone (computed
        here if need be, so a resumed run attacks with the same draws) and takes them
        rather than running those members again."""
        slot = (attack, eps, target.sigma)
        if slot not in cache:
            if attack == "clean":
                cache[slot] = x
            else:
                s = self.settings
                done = {member: self._adversarial(member, eps, target, x, y, batch_key, cache)
                        for member in reusable_members(attack, target) if member in s.attacks}
                cache[slot] = run_attack(
                    attack, target, self.params, x, y, _fold(batch_key, repr(slot)),
                    norm=s.norm, eps=eps, n_iter=s.n_iter, eot_iter=s.eot_iter, done=done)
        return cache[slot]

    def _score(self, rule, x_adv, y, key) -> dict:
        """Per-image scores of one rule, as JSON-ready lists."""
        s = self.settings
        if rule == "single":
            r = scoring.score_single(self.logits_fn, self.params, x_adv, y, key,
                                     repeats=s.repeats)
            return {"correct": np.rint(r["per_example"] * s.repeats).astype(int).tolist()}
        r = scoring.score_vote(self.logits_fn, self.params, x_adv, y, key, m=s.vote_samples,
                               sigma=self.vote_sigma, alpha=s.alpha)
        return {"right": (r["prediction"] == np.asarray(y)).tolist(),
                "decided": r["decided"].tolist()}

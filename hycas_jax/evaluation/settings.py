"""Typed settings of the two evaluations, read from an experiment config.

`CertifySettings` is `config.certify`, `AttackSettings` is `config.attack` (and
the two fields it shares with other sections); both are frozen dataclasses
checked when made, so a bad value fails at once with the field's name. The
command-line tools build them from the workdir's config with the user's
overrides applied; library users make them directly:

    settings = CertifySettings.of_workdir("runs/mnist", n=10_000)
    certify_workdir("runs/mnist", settings)
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional

from hycas_jax import checks, rng
from hycas_jax.attacks import scoring, validation
from hycas_jax.certification import stats
from hycas_jax.nn import dct
from hycas_jax.runtime import checkpointing

ATTACKS = ("apgd-ce", "apgd-dlr", "apgd-t", "autoattack", "autoattack-rand", "autoattack-standard")
RULES = scoring.RULES
CLIPS = ("fixed", "calibrated")  # where the margin certificate's logit clip comes from


def _with_impl(section, config) -> dict:
    """A config section's fields, with the run's key implementation where it names none."""
    section = dict(section)
    section.setdefault("prng_impl", rng.config_impl(config))
    return section


def _from_section(cls, section, overrides: dict):
    """An instance with the fields `section` (a ConfigDict or mapping) has, then the
    non-None `overrides`; fields neither names keep their defaults."""
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise ValueError(f"{cls.__name__} has no field(s) {unknown}; fields: {names}")
    values = {n: section[n] for n in names if n in section}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return cls(**values)


@dataclasses.dataclass(frozen=True)
class CertifySettings:
    """What `certify_workdir` computes. Changing any field but `batch_size` and
    `max_examples` changes the certified numbers, so a log made with other values
    is not resumed.

    sigma, n0, n, alpha: Cohen et al.'s CERTIFY. batch_size: Monte Carlo samples
    per jitted chunk. skip, max_examples: every `skip`-th test image, the first
    `max_examples` of them (None or <= 0: all). margin, margin_samples,
    logit_bound, margin_bound, margin_clip: the Lipschitz margin certificate too,
    its samples, logit clip, confidence bound (`stats.BOUNDS`) and where the clip
    comes from ("fixed": `logit_bound`; "calibrated": measured once per model on
    training images, `certification.clip`). seed: image idx uses `fold_in(key(seed), idx)`. lowpass_form: how
    FDPAN's DCT low-pass is computed (the same map: speed only). prng_impl: the key
    implementation (`hycas_jax.rng.IMPLS`; default: the run config's `prng_impl`).
    """
    sigma: float = 0.25
    n0: int = 100
    n: int = 100_000
    alpha: float = 0.001
    batch_size: int = 1000
    skip: int = 1
    max_examples: Optional[int] = None
    margin: bool = True
    margin_samples: int = 100_000
    logit_bound: float = 10.0
    margin_bound: str = "bernstein"
    margin_clip: str = "fixed"
    seed: int = 0
    lowpass_form: str = "einsum"
    prng_impl: str = rng.DEFAULT_IMPL

    def __post_init__(self):
        fix = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        fix("sigma", checks.validate_sigma(self.sigma))
        fix("alpha", checks.validate_alpha(self.alpha))
        for name in ("n0", "n", "batch_size", "skip", "margin_samples"):
            fix(name, checks.validate_count(getattr(self, name), name))
        fix("seed", checks.validate_count(self.seed, "seed", 0))
        if self.max_examples is not None:
            max_examples = checks.validate_count(self.max_examples, "max_examples", -2 ** 31)
            fix("max_examples", max_examples if max_examples > 0 else None)
        fix("margin", bool(self.margin))
        fix("logit_bound", float(self.logit_bound))
        if self.margin and not (math.isfinite(self.logit_bound) and self.logit_bound > 0):
            raise ValueError(f"logit_bound must be finite and > 0, got {self.logit_bound}")
        dct.check_lowpass_form(self.lowpass_form)
        rng.check_impl(self.prng_impl)
        stats.check_bound(self.margin_bound)
        if self.margin_clip not in CLIPS:
            raise ValueError(f"unknown margin_clip {self.margin_clip!r}; known: {list(CLIPS)}")

    @classmethod
    def from_config(cls, config, **overrides) -> "CertifySettings":
        """From an experiment config's `certify` section; non-None `overrides` win."""
        return _from_section(cls, _with_impl(config.certify, config), overrides)

    @classmethod
    def of_workdir(cls, workdir, **overrides) -> "CertifySettings":
        """From the config a training run saved in `workdir`; non-None `overrides` win."""
        return cls.from_config(checkpointing.restore_config(str(workdir)), **overrides)


@dataclasses.dataclass(frozen=True)
class AttackSettings:
    """What `attack_workdir` computes.

    attacks, rules: from `ATTACKS` and `RULES` ('autoattack' picks its version
    from the target). norm, eps: the threat model. n_iter, eot_iter: APGD
    iterations and EOT draws per gradient. max_examples, stride: every
    `stride`-th test image, the first `max_examples` of them (stride None:
    spread them evenly over the split). batch_size: images per attacked batch.
    repeats: passes per image scoring the 'single' rule. vote_samples,
    vote_sigma, alpha: the 'vote' rule's passes, input noise (None: the
    training sigma) and test level. seed: of the attack and scoring keys. prng_impl: their
    implementation (`hycas_jax.rng.IMPLS`; default: the run config's `prng_impl`).
    """
    attacks: tuple = ("apgd-ce", "apgd-dlr", "autoattack")
    rules: tuple = RULES
    norm: str = "linf"
    eps: tuple = (0.0, 0.05, 0.1, 0.2, 0.3)
    n_iter: int = 100
    eot_iter: int = 20
    max_examples: int = 200
    stride: Optional[int] = None
    batch_size: int = 100
    repeats: int = 10
    vote_samples: int = 100
    vote_sigma: Optional[float] = None
    alpha: float = 0.001
    seed: int = 0
    prng_impl: str = rng.DEFAULT_IMPL

    def __post_init__(self):
        fix = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        rng.check_impl(self.prng_impl)
        for name, value, known in (("attack", self.attacks, ATTACKS), ("rule", self.rules, RULES)):
            if isinstance(value, str) or not value:
                raise ValueError(f"no {name} given; choose from {known}")
            for item in value:
                if item not in known:
                    raise ValueError(f"unknown {name} {item!r}; expected one of {known}")
        fix("attacks", tuple(self.attacks))
        fix("rules", tuple(self.rules))
        validation.check_norm(self.norm)
        for e in self.eps:
            validation.check_eps(e)
        fix("eps", tuple(float(e) for e in self.eps))
        for name in ("n_iter", "eot_iter", "max_examples", "vote_samples", "repeats",
                     "batch_size") + (("stride",) if self.stride is not None else ()):
            validation.check_positive_int(name, getattr(self, name))
        if self.vote_sigma is not None:
            validation.check_eps(self.vote_sigma, "vote_sigma")
            fix("vote_sigma", float(self.vote_sigma))
        fix("alpha", checks.validate_alpha(self.alpha))
        fix("seed", checks.validate_count(self.seed, "seed", 0))

    @classmethod
    def from_config(cls, config, **overrides) -> "AttackSettings":
        """From an experiment config's `attack` section and its `certify.alpha`; non-None
        `overrides` win."""
        section = _with_impl(config.attack, config)
        section.setdefault("alpha", config.certify.alpha)
        return _from_section(cls, section, overrides)

    @classmethod
    def of_workdir(cls, workdir, **overrides) -> "AttackSettings":
        """From the config a training run saved in `workdir`; non-None `overrides` win."""
        return cls.from_config(checkpointing.restore_config(str(workdir)), **overrides)

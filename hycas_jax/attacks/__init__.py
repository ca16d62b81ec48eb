"""Attacks on any JAX classifier ``logits_fn(params, x, key) -> (B, K)``.

``x`` is float32 NHWC in [0, 1]; ``key`` draws the classifier's internal
randomness and every forward pass gets a fresh one. This package never
imports the model.

Each attack loop is jitted with ``logits_fn`` as a static argument: pass the
same function object across calls (not a fresh lambda) to reuse the
compilation. Radii are traced, so sweeping eps does not recompile.
"""

from hycas_jax.attacks.apgd import apgd
from hycas_jax.attacks.autoattack import AutoAttackResult, autoattack
from hycas_jax.attacks.pgd import pgd
from hycas_jax.attacks.result import AttackResult
from hycas_jax.attacks.scoring import describe, score, score_single, score_vote
from hycas_jax.attacks.square import square_linf

__all__ = [
    "AttackResult", "AutoAttackResult", "apgd", "autoattack", "describe", "pgd",
    "score", "score_single", "score_vote", "square_linf",
]

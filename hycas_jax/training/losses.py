"""Training losses: cross-entropy, and margin-aware losses for Lipschitz networks.

Every loss is `loss(logits, labels, cfg, lipschitz) -> scalar`, with `cfg` the
training section and `lipschitz` the network's current guaranteed bound L
(a traced scalar; the loop refreshes it at every log step). A margin
certificate of radius eps needs z_y - z_j > sqrt(2) L eps for every j != y
(or ||w_y - w_j|| L_body eps with per-pair norms, never more than
sqrt(2) L eps), so the margin losses ask for exactly that offset:

* ``"ce"``: cross-entropy of `logit_temperature * z`.
* ``"lipschitz_margin"`` (Tsuzuku, Sato and Sugiyama, 2018): cross-entropy of
  `logit_temperature * (z + sqrt(2) L margin_eps (1 - onehot(y)))`: the other
  classes' logits are raised by the offset the certificate will charge.
* ``"hinge"``: the multi-class hinge sum_{j != y} max(0, sqrt(2) L
  margin_eps - (z_y - z_j)), plus `margin_ce_weight` times the tempered
  cross-entropy (deel-lip's hinge form; the cross-entropy term keeps the
  gradient alive once every margin is met).

`training.loss` absent (a run saved before the choice) means "ce".
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

LOSSES = ("ce", "lipschitz_margin", "hinge")


def config_loss(tcfg) -> str:
    return tcfg.get("loss", "ce")


def check_loss(name: str) -> None:
    if name not in LOSSES:
        raise ValueError(f"unknown training loss {name!r}; known: {list(LOSSES)}")


def _ce(logits, labels, temperature):
    return optax.softmax_cross_entropy_with_integer_labels(temperature * logits, labels).mean()


def margin_offset(tcfg, lipschitz) -> jax.Array:
    """sqrt(2) L eps: the logit margin a certificate of radius `margin_eps` needs."""
    return math.sqrt(2.0) * tcfg.get("margin_eps", 0.0) * lipschitz


def loss(logits: jax.Array, labels: jax.Array, tcfg, lipschitz) -> jax.Array:
    name = config_loss(tcfg)
    temperature = tcfg.logit_temperature
    if name == "ce":
        return _ce(logits, labels, temperature)
    others = 1.0 - jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
    offset = margin_offset(tcfg, lipschitz)
    if name == "lipschitz_margin":
        return _ce(logits + offset * others, labels, temperature)
    if name == "hinge":
        true = jnp.take_along_axis(logits, labels[:, None], axis=-1)
        hinge = jnp.sum(others * jax.nn.relu(offset - (true - logits)), axis=-1).mean()
        return hinge + tcfg.get("margin_ce_weight", 0.1) * _ce(logits, labels, temperature)
    raise ValueError(f"unknown training loss {name!r}; known: {list(LOSSES)}")

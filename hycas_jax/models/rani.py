"""RANI: random attentional noise injection.

`omega ~ N(0, I)` is drawn from the key with the shape of the features; the
mask `M = sigmoid(scale_c * omega + shift_c)` lies in (0, 1) and depends on the
learned per-channel (scale, shift) but never on the input. Two forms:

* ``"residual"`` (the paper): `h + h * M`, i.e. `diag(1 + M)`, norm <= 2.
* ``"averaged"``: `(h + h * M) / 2`, norm <= 1 (the budgeted placement's
  in-block form, so that only one factor 2 enters the whole network).

Both bounds hold for every key because M is in [0, 1] whatever omega is.

The mask's spread over omega is the noise; training with cross-entropy rewards
removing it (|scale| -> 0, or |shift| large enough to saturate the sigmoid).
`spread` says how (scale, shift) are parametrized:

* ``"floored"``: scale = SCALE_FLOOR + softplus(u), shift = SHIFT_LIMIT * tanh(v),
  with (u, v) the learned parameters. The mask's standard deviation over
  omega is then at least `MIN_MASK_SD` in every channel, whatever training
  does (it is smallest at the floor scale and the largest |shift|). At
  initialization scale = 1 and shift = 0, as in the free form.
* ``"free"``: scale and shift are the parameters themselves (the form before
  the floor; checkpoints whose config names no `rani_spread` use it).

`RandomizedStream` is the tail every HyCAS stream (SNCAN, FDPAN, RPFAN) shares:
an optional RANI whose factor multiplies the stream's bound. With `rani=None`
a stream has no RANI (the deterministic Lipschitz baseline).
"""
import math
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hycas_jax import rng

FORMS = {"residual": 2.0, "averaged": 1.0}
SPREADS = ("floored", "free")
SCALE_FLOOR, SHIFT_LIMIT = 0.75, 1.5
MIN_MASK_SD = 0.1165  # sd of sigmoid(0.75 * omega + 1.5) over omega ~ N(0, 1): 0.11660
# Gauss-Hermite nodes and weights for expectations over omega ~ N(0, 1).
_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(64)
_WEIGHTS = _WEIGHTS / _WEIGHTS.sum()


def config_spread(cfg) -> str:
    """A model config's RANI parametrization. A config from before the choice existed (a
    saved run's) names none and gets the form it was trained with, "free"."""
    return cfg.get("rani_spread", "free")


def config_noise(cfg) -> str:
    """How a model config's RANI draws omega (`hycas_jax.rng.NOISES`). A config from
    before the choice existed names none and gets the exact normals it was trained with."""
    return cfg.get("rani_noise", "normal")


def check_spread(spread: str) -> None:
    if spread not in SPREADS:
        raise ValueError(f"unknown RANI spread {spread!r}; known: {list(SPREADS)}")


class RANI(nnx.Module):
    def __init__(self, channels: int, form: str = "residual", *, spread: str = "floored",
                 noise: str = "normal", rngs: nnx.Rngs):
        if form not in FORMS:
            raise ValueError(f"unknown RANI form {form!r}; known: {sorted(FORMS)}")
        check_spread(spread)
        rng.check_noise(noise)
        del rngs  # deterministic init; kept for a uniform constructor signature
        self.form, self.spread, self.noise = form, spread, noise
        # Parameters giving scale 1 and shift 0 in either parametrization.
        scale0 = 1.0 if spread == "free" else math.log(math.expm1(1.0 - SCALE_FLOOR))
        self.scale = nnx.Param(jnp.full((channels,), scale0, jnp.float32))
        self.shift = nnx.Param(jnp.zeros((channels,), jnp.float32))

    def mask_parameters(self) -> tuple[jax.Array, jax.Array]:
        """(scale, shift) per channel, as the mask applies them."""
        if self.spread == "free":
            return self.scale[...], self.shift[...]
        return (SCALE_FLOOR + jax.nn.softplus(self.scale[...]),
                SHIFT_LIMIT * jnp.tanh(self.shift[...]))

    def mask(self, shape, key: jax.Array) -> jax.Array:
        scale, shift = self.mask_parameters()
        omega = rng.internal_normal(key, shape, self.noise)
        return jax.nn.sigmoid(scale * omega + shift)

    def mask_sd(self) -> jax.Array:
        """Per-channel standard deviation of the mask over omega ~ N(0, 1) (Gauss-Hermite
        quadrature, 64 nodes)."""
        scale, shift = self.mask_parameters()
        m = jax.nn.sigmoid(scale[:, None] * jnp.asarray(_NODES, jnp.float32) + shift[:, None])
        w = jnp.asarray(_WEIGHTS, jnp.float32)
        mean = m @ w
        return jnp.sqrt(jnp.maximum((m * m) @ w - mean * mean, 0.0))

    def __call__(self, h: jax.Array, key: jax.Array) -> jax.Array:
        with jax.named_scope("rani"):
            out = h + h * self.mask(h.shape, key)
            return out if self.form == "residual" else 0.5 * out

    def lipschitz_bound(self) -> float:
        return FORMS[self.form]


def min_mask_sd(model: nnx.Module) -> float:
    """The smallest per-channel mask standard deviation over all of `model`'s RANI
    layers (nan when it has none): how much noise training has left."""
    sds = [m.mask_sd() for _, m in nnx.iter_graph(model) if isinstance(m, RANI)]
    return float(min(jnp.min(sd) for sd in sds)) if sds else float("nan")


class RandomizedStream(nnx.Module):
    """Shared tail: optional RANI, whose factor multiplies the stream's bound."""

    def _init_rani(self, channels: int, rani: Optional[str], rngs: nnx.Rngs,
                   spread: str = "floored", noise: str = "normal"):
        self.rani = RANI(channels, rani, spread=spread, noise=noise, rngs=rngs) if rani else None

    def _apply_rani(self, h, key):
        return h if self.rani is None else self.rani(h, key)

    def _rani_bound(self) -> float:
        return 1.0 if self.rani is None else self.rani.lipschitz_bound()

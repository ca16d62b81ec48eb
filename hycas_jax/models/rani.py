"""RANI: random attentional noise injection.

`omega ~ N(0, I)` is drawn from the key with the shape of the features; the
mask `M = sigmoid(scale_c * omega + shift_c)` lies in (0, 1) and depends on the
learned per-channel (scale, shift) but never on the input. Two forms:

* ``"residual"`` (the paper): `h + h * M`, i.e. `diag(1 + M)`, norm <= 2.
* ``"averaged"``: `(h + h * M) / 2`, norm <= 1 (the budgeted placement's
  in-block form, so that only one factor 2 enters the whole network).

Both bounds hold for every key because M is in [0, 1] whatever omega is.

`RandomizedStream` is the tail every HyCAS stream (SNCAN, FDPAN, RPFAN) shares:
an optional RANI whose factor multiplies the stream's bound. With `rani=None`
a stream has no RANI (the deterministic Lipschitz baseline).
"""
from typing import Optional

import jax
import jax.numpy as jnp
from flax import nnx

from hycas_jax import rng

FORMS = {"residual": 2.0, "averaged": 1.0}


class RANI(nnx.Module):
    def __init__(self, channels: int, form: str = "residual", *, rngs: nnx.Rngs):
        if form not in FORMS:
            raise ValueError(f"unknown RANI form {form!r}; known: {sorted(FORMS)}")
        del rngs  # deterministic init; kept for a uniform constructor signature
        self.form = form
        self.scale = nnx.Param(jnp.ones((channels,), jnp.float32))
        self.shift = nnx.Param(jnp.zeros((channels,), jnp.float32))

    def mask(self, shape, key: jax.Array) -> jax.Array:
        omega = rng.normal(key, shape, jnp.float32)
        return jax.nn.sigmoid(self.scale[...] * omega + self.shift[...])

    def __call__(self, h: jax.Array, key: jax.Array) -> jax.Array:
        with jax.named_scope("rani"):
            out = h + h * self.mask(h.shape, key)
            return out if self.form == "residual" else 0.5 * out

    def lipschitz_bound(self) -> float:
        return FORMS[self.form]


class RandomizedStream(nnx.Module):
    """Shared tail: optional RANI, whose factor multiplies the stream's bound."""

    def _init_rani(self, channels: int, rani: Optional[str], rngs: nnx.Rngs):
        self.rani = RANI(channels, rani, rngs=rngs) if rani else None

    def _apply_rani(self, h, key):
        return h if self.rani is None else self.rani(h, key)

    def _rani_bound(self) -> float:
        return 1.0 if self.rani is None else self.rani.lipschitz_bound()

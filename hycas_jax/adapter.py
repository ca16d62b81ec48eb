"""The one adapter from a Flax NNX model to the library's contract,
`logits_fn(params, x, key) -> logits`."""
from __future__ import annotations

import functools

from flax import nnx

from hycas_jax.nn.depthwise import reverse_mode_only


def functional(model: nnx.Module, *, reverse_mode: bool = False):
    """Splits an NNX model into `(logits_fn, params)`.

    `params` is the model's whole state (trainable parameters and the
    power-iteration state); `logits_fn(params, x, key)` is pure and jittable
    and does not change `params`. Models of one architecture share one
    `logits_fn` (`logits_fn_for`), so jitted code that takes it as a static
    argument compiles once for all of them.

    reverse_mode: the model's random-projection convolution uses a hand-written
    backward pass, faster under `jax.grad` / `vjp` (training, attacks) but with no
    forward-mode (`jvp`) derivative; the values are the same either way.
    """
    graphdef, params = nnx.split(model)
    return logits_fn_for(graphdef, reverse_mode=reverse_mode), params


@functools.lru_cache(maxsize=64)
def logits_fn_for(graphdef, *, reverse_mode: bool = False):
    """The `logits_fn(params, x, key)` of an architecture (`nnx.split`'s graphdef).

    `params` is the state `nnx.split` returned, or a tuple of the states of a
    filtered split (`nnx.split(model, nnx.Param, ...)`), merged back in order.
    """
    def logits_fn(params, x, key):
        model = nnx.merge(graphdef, *params) if isinstance(params, tuple) else nnx.merge(
            graphdef, params)
        if not reverse_mode:
            return model(x, key)
        with reverse_mode_only():
            return model(x, key)

    return logits_fn

"""hycas_jax: HyCAS (ICLR 2026) in JAX / Flax NNX.

The contract shared by every part of the library: a classifier is a pure
function `logits_fn(params, x, key) -> logits (B, num_classes)` of float32 NHWC
raw pixels in [0, 1] and a PRNG key. `functional(model)` turns a Flax NNX
model into that form; smoothing, certificates and attacks accept any such
function. For inference, `functional(freeze(model))` computes the weights that
layers derive from their parameters once instead of in every forward pass
(see `hycas_jax.inference`).
"""
from __future__ import annotations

from flax import nnx

from hycas_jax.inference import freeze

__version__ = "0.1.0"


def functional(model: nnx.Module):
    """Splits an NNX model into `(logits_fn, params)`.

    `params` is the model's whole state (trainable parameters and the
    power-iteration state); `logits_fn(params, x, key)` is pure and jittable
    and does not change `params`.
    """
    graphdef, params = nnx.split(model)

    def logits_fn(params, x, key):
        return nnx.merge(graphdef, params)(x, key)

    return logits_fn, params

"""Choosing the margin certificate's logit clip b from data, once per model.

The margin certificate of a stochastic network estimates the expected clipped
logits Z_b = E[clip(f, -b, b)]; its confidence bound pays the range 4b of a
clipped margin (Hoeffding: at 1 / sqrt(n); empirical Bernstein: at 1 / n), and
a clip below the logits' real size cuts the margins themselves. A good b is
just above the logits the network produces. `calibrated_clip` measures that on
calibration images (training images, never the test images certified) with
the selection pass's sample count, and rounds up: the largest |logit| seen,
times `headroom`, to a multiple of `step`.

It is chosen once per model, not per test image: the certified classifier
argmax Z_b is then one classifier for every image of a table, which names b.
A per-image b would certify a different classifier at each image.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from hycas_jax import checks


@functools.partial(jax.jit, static_argnames=("logits_fn", "num", "chunk_size"))
def _max_abs_logit(logits_fn, params, x, key, *, num, chunk_size):
    lanes = jnp.arange(chunk_size)

    def one(j):
        return jnp.max(jnp.abs(logits_fn(params, x, jax.random.fold_in(key, j))))

    def chunk(c, best):
        j = c * chunk_size + lanes
        values = jax.vmap(one)(j)
        return jnp.maximum(best, jnp.max(jnp.where(j < num, values, 0.0)))

    return jax.lax.fori_loop(0, -(-num // chunk_size), chunk, jnp.float32(0.0))


def calibrated_clip(logits_fn, params, x, key, *, num: int = 100, chunk_size: int = 100,
                    headroom: float = 1.1, step: float = 0.5) -> float:
    """The clip b for `logits_fn` from calibration images x (B, H, W, C): the largest
    |logit| over `num` draws of the model's key (no input noise) on each image, times
    `headroom`, rounded up to a multiple of `step`."""
    x = checks.validate_images(x)
    num = checks.validate_count(num, "num")
    chunk_size = min(checks.validate_count(chunk_size, "chunk_size"), num)
    largest = float(_max_abs_logit(logits_fn, params, x, key, num=num, chunk_size=chunk_size))
    if not math.isfinite(largest):
        raise ValueError(f"the model's logits are not finite on the calibration images ({largest})")
    return max(step, math.ceil(largest * headroom / step) * step)

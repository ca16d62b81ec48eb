"""How tight a guaranteed Lipschitz bound is: the largest gain gradient ascent finds.

`largest_gain` searches, for fixed keys, over pairs of inputs (a, b) for the
largest ratio ||f(a; key) - f(b; key)|| / ||a - b||, starting from given
points and a small random offset, by Adam ascent on the ratio. Every ratio it
reports is attained by a real pair, so it is a lower bound on the Lipschitz
constant of each x -> f(x; key), and a guaranteed bound must lie above it (the
tests check that); `network_bound / largest_gain` is how much radius a margin
certificate throws away at most.

Works for any `fn(params, x, key) -> (B, ...)` (a whole classifier's logits
or one layer), under jit, batched over the starting points.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax


def largest_gain(fn, params, x, keys, *, steps: int = 200, learning_rate: float = 1e-2,
                 spread: float = 0.05, seed: int = 0) -> float:
    """The largest gain ||fn(a) - fn(b)|| / ||a - b|| found from the points `x`
    (B, ...) with each key of `keys` (a sequence of PRNG keys) held fixed."""
    opt = optax.adam(learning_rate)

    def ratios(pair, key):
        a, b = pair
        fa = fn(params, a, key).reshape(a.shape[0], -1)
        fb = fn(params, b, key).reshape(b.shape[0], -1)
        diff = (a - b).reshape(a.shape[0], -1)
        return jnp.linalg.norm(fa - fb, axis=1) / (jnp.linalg.norm(diff, axis=1) + 1e-12)

    @jax.jit
    def run(x, key, start_key):
        pair = (x, x + spread * jax.random.normal(start_key, x.shape, x.dtype))
        state = opt.init(pair)

        def step(carry, _):
            pair, state, best = carry
            value, grads = jax.value_and_grad(lambda p: -jnp.sum(ratios(p, key)))(pair)
            updates, state = opt.update(grads, state)
            best = jnp.maximum(best, ratios(pair, key))
            return (optax.apply_updates(pair, updates), state, best), None

        best0 = jnp.zeros(x.shape[0], jnp.float32)
        (pair, _, best), _ = jax.lax.scan(step, (pair, state, best0), None, length=steps)
        return jnp.maximum(best, ratios(pair, key))

    x = jnp.asarray(x, jnp.float32)
    found = 0.0
    for i, key in enumerate(keys):
        start_key = jax.random.fold_in(jax.random.key(seed), i)
        found = max(found, float(np.max(np.asarray(run(x, key, start_key)))))
    return found

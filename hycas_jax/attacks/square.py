"""Square Attack, l_inf (Andriushchenko et al., 2020): a score-based
black-box random search over square patches of +-eps, the gradient-free
component of AutoAttack's standard version. A modest implementation: one
square per query, all inside one jitted ``lax.fori_loop``.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from hycas_jax.attacks import losses, result, validation

# Query counts (out of 10,000) after which the patch area fraction halves.
# numpy, not jnp: a jnp constant at import time would start the XLA backend
# before jax.distributed.initialize can run.
_HALVING_AT = np.array([10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000])


def _side(i, n_queries, p_init, height):
    """Side of the square patch at query ``i``: sqrt(p * H * W) for square images."""
    scaled = (i * 10000) // n_queries
    p = p_init / 2.0 ** jnp.sum(scaled > _HALVING_AT)
    side = jnp.round(jnp.sqrt(p * height * height)).astype(jnp.int32)
    return jnp.clip(side, 1, max(height - 1, 1))


def _propose(x, x_cur, eps, side, key):
    """Replaces one random side x side patch of each perturbation by +-eps per channel."""
    batch, height, width, channels = x.shape
    pos_key, sign_key = jax.random.split(key)
    corner = jax.random.uniform(pos_key, (2, batch))
    row = jnp.floor(corner[0] * (height - side + 1)).astype(jnp.int32)
    col = jnp.floor(corner[1] * (width - side + 1)).astype(jnp.int32)
    rows, cols = jnp.arange(height), jnp.arange(width)
    in_rows = (rows[None, :] >= row[:, None]) & (rows[None, :] < row[:, None] + side)
    in_cols = (cols[None, :] >= col[:, None]) & (cols[None, :] < col[:, None] + side)
    patch = (in_rows[:, :, None] & in_cols[:, None, :])[..., None]
    signs = jax.random.rademacher(sign_key, (batch, 1, 1, channels), x.dtype)
    delta = jnp.where(patch, eps * signs, x_cur - x)
    return jnp.clip(x + delta, 0.0, 1.0)


@functools.partial(jax.jit, static_argnames=("logits_fn", "n_queries"))
def _run(params, x, y, key, eps, p_init, *, logits_fn, n_queries):
    """See ``square_linf``."""
    def evaluate(x_adv, k):
        logits = logits_fn(params, x_adv, k)
        return losses.margin(logits, y), jnp.argmax(logits, axis=1) != y

    key, init_key, eval_key = jax.random.split(key, 3)
    # Start from vertical stripes of +-eps: one sign per column and channel.
    stripes = jax.random.rademacher(init_key, (x.shape[0], 1, x.shape[2], x.shape[3]), x.dtype)
    x0 = jnp.clip(x + eps * stripes, 0.0, 1.0)
    margin0, fooled0 = evaluate(x0, eval_key)

    def body(i, carry):
        progress, k = carry
        k, propose_key, eval_k = jax.random.split(k, 3)
        side = _side(i, n_queries, p_init, x.shape[1])
        x_new = _propose(x, progress.x_best, eps, side, propose_key)
        margin_new, fooled = evaluate(x_new, eval_k)
        # Broken points stop moving; the others accept only a lower margin.
        fooled = fooled & ~progress.success
        loss_new = jnp.where(progress.success, -jnp.inf, -margin_new)
        progress, _ = result.update(progress, x_new, loss_new, fooled)
        return progress, k

    progress = result.start(x0, -margin0, fooled0)
    return result.finish(jax.lax.fori_loop(1, n_queries, body, (progress, key))[0])


def square_linf(logits_fn, params, x, y, key, *, eps, n_queries=5000, p_init=0.8):
    """Untargeted l_inf Square Attack on the margin loss.

    Args:
      x: (B, H, W, C) float in [0, 1], H == W; y: (B,) int; key: PRNG key.
      eps: l_inf radius >= 0; n_queries: forward passes per point (>= 1).
      p_init: initial fraction of pixels in the patch, halved on a schedule.

    Returns:
      AttackResult whose loss is minus the best margin.
    """
    validation.check_attack_inputs(logits_fn, params, x, y, key, norm="linf", eps=eps)
    validation.check_positive_int("n_queries", n_queries)
    if x.shape[1] != x.shape[2]:
        raise ValueError(f"square_linf needs square images, got {x.shape[1]}x{x.shape[2]}")
    if not 0.0 < p_init <= 1.0:
        raise ValueError(f"p_init must lie in (0, 1], got {p_init}")
    x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32)
    return _run(params, x, y, key, jnp.float32(eps), jnp.float32(p_init),
                logits_fn=logits_fn, n_queries=n_queries)

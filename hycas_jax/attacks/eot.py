"""Expectation over Transformation: the loss and its gradient averaged over
``eot_iter`` fresh draws of the classifier's internal randomness.

The draws run side by side with ``jax.vmap`` over split keys, so memory grows
linearly with ``eot_iter``.
"""

import jax
import jax.numpy as jnp

from hycas_jax.attacks import losses


def loss_and_grad(logits_fn, loss, eot_iter, params, x_adv, y, y_target, key):
    """EOT loss, gradient and one-pass verdict at ``x_adv``.

    Args:
      logits_fn: ``(params, x, key) -> (B, K)`` logits.
      loss: a name in ``losses.LOSSES``.
      eot_iter: number of draws (static).
      x_adv: (B, H, W, C) float32; y, y_target: (B,) int.
      key: PRNG key, split into one key per draw.

    Returns:
      loss (B,) mean over draws, grad (B, H, W, C) of that mean, and
      fooled (B,) bool: the first draw misclassifies, i.e. the verdict of a
      single stochastic forward pass, which is what AutoAttack scores.
    """
    loss_fn = losses.LOSSES[loss]
    keys = jax.random.split(key, eot_iter)

    def mean_loss(x_in):
        logits = jax.vmap(lambda k: logits_fn(params, x_in, k))(keys)
        per_draw = jax.vmap(lambda z: loss_fn(z, y, y_target))(logits)
        per_example = per_draw.mean(axis=0)
        # Examples do not interact, so the gradient of the sum is per example.
        return per_example.sum(), (per_example, logits[0])

    (_, (value, logits)), grad = jax.value_and_grad(mean_loss, has_aux=True)(x_adv)
    return value, grad, jnp.argmax(logits, axis=1) != y

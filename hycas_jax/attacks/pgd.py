"""Projected gradient ascent (Madry et al., 2018) with a fixed step size and
EOT, as a single jitted ``lax.fori_loop``."""

import functools

import jax
import jax.numpy as jnp

from hycas_jax.attacks import eot, result, threat, validation


@functools.partial(jax.jit, static_argnames=("logits_fn", "norm", "loss", "n_iter",
                                             "eot_iter", "random_start"))
def _run(params, x, y, key, eps, step_size, *, logits_fn, norm, loss, n_iter, eot_iter,
         random_start):
    """One PGD run; see ``pgd``. Returns an AttackResult."""
    def evaluate(x_adv, k):
        return eot.loss_and_grad(logits_fn, loss, eot_iter, params, x_adv, y, y, k)

    key, start_key, eval_key = jax.random.split(key, 3)
    x0 = threat.random_start(norm, x, eps, start_key) if random_start else x
    loss0, grad0, fooled0 = evaluate(x0, eval_key)
    steps = jnp.full((x.shape[0],), step_size, x.dtype)

    def body(_, carry):
        x_cur, grad, progress, k = carry
        k, sub = jax.random.split(k)
        x_new = threat.step(norm, x_cur, grad, steps, x, eps)
        loss_new, grad_new, fooled = evaluate(x_new, sub)
        progress, _ = result.update(progress, x_new, loss_new, fooled)
        return x_new, grad_new, progress, k

    carry = (x0, grad0, result.start(x0, loss0, fooled0), key)
    return result.finish(jax.lax.fori_loop(0, n_iter, body, carry)[2])


def pgd_unchecked(params, x, y, key, eps, step_size, *, logits_fn, norm="linf", loss="ce",
                  n_iter, eot_iter=1, random_start=True):
    """`pgd` without the host-side input checks, so it can run inside another
    jitted function (adversarial training). Arguments as `pgd`'s."""
    return _run(params, x, y, key, eps, step_size, logits_fn=logits_fn, norm=norm, loss=loss,
                n_iter=n_iter, eot_iter=eot_iter, random_start=random_start)


def pgd(logits_fn, params, x, y, key, *, norm="linf", eps, step_size, n_iter, loss="ce",
        eot_iter=1, random_start=True):
    """Untargeted PGD with EOT against ``logits_fn(params, x, key) -> (B, K)``.

    Args:
      x: (B, H, W, C) float in [0, 1]; y: (B,) int labels; key: PRNG key.
      norm: 'linf' (sign steps) or 'l2' (normalised-gradient steps).
      eps: radius >= 0; step_size: step length > 0 in the norm's units.
      n_iter: steps; loss: 'ce' or 'dlr'; eot_iter: draws per gradient.
      random_start: start uniformly inside the ball rather than at ``x``.

    Returns:
      AttackResult (see ``result.AttackResult``); success is judged by the
      single forward pass drawn at each iterate (optimistic on a stochastic
      classifier: score ``x_best`` there).
    """
    if loss not in ("ce", "dlr"):
        raise ValueError(f"unknown loss {loss!r} for pgd; expected 'ce' or 'dlr'")
    validation.check_attack_inputs(logits_fn, params, x, y, key, norm=norm, eps=eps, loss=loss)
    validation.check_positive_int("n_iter", n_iter)
    validation.check_positive_int("eot_iter", eot_iter)
    validation.check_eps(step_size, "step_size")
    x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32)
    return _run(params, x, y, key, jnp.float32(eps), jnp.float32(step_size),
                logits_fn=logits_fn, norm=norm, loss=loss, n_iter=n_iter,
                eot_iter=eot_iter, random_start=bool(random_start))

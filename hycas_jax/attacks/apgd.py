"""Auto-PGD (Croce & Hein, 2020, "Reliable evaluation of adversarial
robustness with an ensemble of diverse parameter-free attacks"), with EOT.

One run is a single jitted ``lax.fori_loop``; restarts and target classes
loop on the host, each over the points not yet broken.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from hycas_jax.attacks import eot, result, threat, validation

_MOMENTUM = 0.75
# Checkpoints: first after 22% of the iterations, then windows shrinking by
# 3% of n_iter per checkpoint, never below 6%.
_FIRST_WINDOW, _WINDOW_DECREMENT, _MIN_WINDOW = 0.22, 0.03, 0.06


def checkpoint_windows(n_iter):
    """(first window, decrement, minimum window) in iterations, each >= 1."""
    return tuple(max(int(frac * n_iter), 1)
                 for frac in (_FIRST_WINDOW, _WINDOW_DECREMENT, _MIN_WINDOW))


class _State(NamedTuple):
    x_cur: jax.Array           # (B, H, W, C) current iterate
    x_prev: jax.Array          # (B, H, W, C) previous iterate, for momentum
    grad: jax.Array            # (B, H, W, C) EOT gradient at x_cur
    loss_cur: jax.Array        # (B,) EOT loss at x_cur
    step: jax.Array            # (B,) per-example step size
    progress: result.Progress
    grad_best: jax.Array       # (B, H, W, C) gradient at the best point
    n_increase: jax.Array      # (B,) int: loss increases since the last checkpoint
    since_check: jax.Array     # () int: iterations since the last checkpoint
    window: jax.Array          # () int: length of the current checkpoint window
    loss_at_check: jax.Array   # (B,) best loss at the last checkpoint
    reduced_last: jax.Array    # (B,) bool: step halved at the last checkpoint
    key: jax.Array


def _checkpoint(state, rho, decrement, min_window):
    """Halves the step, restarting from the best point, where progress stalled.

    Condition 1: the loss rose in fewer than rho of the window's steps
    (oscillation). Condition 2: the step was not halved at the previous
    checkpoint and the best loss has not improved since.
    """
    oscillating = state.n_increase < rho * state.window
    stalled = ~state.reduced_last & (state.progress.loss_best <= state.loss_at_check)
    halve = oscillating | stalled
    halve_img = threat.per_example(halve)
    return state._replace(
        step=jnp.where(halve, state.step / 2, state.step),
        x_cur=jnp.where(halve_img, state.progress.x_best, state.x_cur),
        grad=jnp.where(halve_img, state.grad_best, state.grad),
        loss_cur=jnp.where(halve, state.progress.loss_best, state.loss_cur),
        n_increase=jnp.zeros_like(state.n_increase),
        since_check=jnp.zeros_like(state.since_check),
        window=jnp.maximum(state.window - decrement, min_window),
        loss_at_check=state.progress.loss_best,
        reduced_last=halve,
    )


def _iterate(i, state, *, evaluate, norm, x, eps, rho, decrement, min_window):
    """One APGD iteration: momentum step, evaluation, bookkeeping, checkpoint."""
    z = threat.step(norm, state.x_cur, state.grad, state.step, x, eps)
    # The first step has no momentum (there is no previous iterate yet).
    alpha = jnp.where(i == 0, 1.0, _MOMENTUM)
    x_new = threat.project(
        norm,
        state.x_cur + alpha * (z - state.x_cur) + (1 - alpha) * (state.x_cur - state.x_prev),
        x, eps)
    key, sub = jax.random.split(state.key)
    loss_new, grad_new, fooled = evaluate(x_new, sub)
    progress, improved = result.update(state.progress, x_new, loss_new, fooled)
    state = state._replace(
        x_prev=state.x_cur, x_cur=x_new, grad=grad_new, loss_cur=loss_new,
        progress=progress,
        grad_best=jnp.where(threat.per_example(improved), grad_new, state.grad_best),
        n_increase=state.n_increase + (loss_new > state.loss_cur),
        since_check=state.since_check + 1,
        key=key,
    )
    return jax.lax.cond(
        state.since_check == state.window,
        functools.partial(_checkpoint, rho=rho, decrement=decrement, min_window=min_window),
        lambda s: s, state)


@functools.partial(jax.jit, static_argnames=("logits_fn", "norm", "loss", "n_iter", "eot_iter"))
def _run(params, x, y, y_target, key, eps, rho, *, logits_fn, norm, loss, n_iter, eot_iter):
    """One APGD run from a random start; see ``apgd``. Returns an AttackResult."""
    def evaluate(x_adv, k):
        return eot.loss_and_grad(logits_fn, loss, eot_iter, params, x_adv, y, y_target, k)

    key, start_key, eval_key = jax.random.split(key, 3)
    x0 = threat.random_start(norm, x, eps, start_key)
    loss0, grad0, fooled0 = evaluate(x0, eval_key)
    first_window, decrement, min_window = checkpoint_windows(n_iter)
    batch = x.shape[0]
    state = _State(
        x_cur=x0, x_prev=x0, grad=grad0, loss_cur=loss0,
        step=jnp.full((batch,), 2.0 * eps, x.dtype),
        progress=result.start(x0, loss0, fooled0), grad_best=grad0,
        n_increase=jnp.zeros((batch,), jnp.int32),
        since_check=jnp.zeros((), jnp.int32), window=jnp.asarray(first_window, jnp.int32),
        loss_at_check=loss0, reduced_last=jnp.zeros((batch,), bool), key=key)
    body = functools.partial(_iterate, evaluate=evaluate, norm=norm, x=x, eps=eps, rho=rho,
                             decrement=decrement, min_window=min_window)
    return result.finish(jax.lax.fori_loop(0, n_iter, body, state).progress)


@functools.partial(jax.jit, static_argnames=("logits_fn", "eot_iter"))
def _ranked_other_classes(params, x, y, key, *, logits_fn, eot_iter):
    """(B, K) classes other than y by decreasing mean clean logit; y comes last."""
    keys = jax.random.split(key, eot_iter)
    logits = jax.vmap(lambda k: logits_fn(params, x, k))(keys).mean(axis=0)
    logits = jnp.where(jax.nn.one_hot(y, logits.shape[1], dtype=bool), -jnp.inf, logits)
    return jnp.argsort(-logits, axis=1)


def _resolve_loss(loss, targeted):
    """``targeted=True`` with 'ce'/'dlr' means their targeted variants."""
    if targeted and loss in ("ce", "dlr"):
        return loss + "-targeted"
    return loss


def apgd(logits_fn, params, x, y, key, *, norm="linf", eps, n_iter=100, loss="ce",
         eot_iter=1, n_restarts=1, targeted=False, n_target_classes=9, rho=0.75):
    """Auto-PGD with EOT against ``logits_fn(params, x, key) -> (B, K)``.

    Args:
      x: (B, H, W, C) float in [0, 1]; y: (B,) int labels; key: PRNG key
        (typed or legacy), split so every forward pass gets fresh randomness.
      norm: 'linf' or 'l2'; eps: radius >= 0.
      n_iter: iterations per run (the start point adds one evaluation).
      loss: 'ce', 'dlr', 'ce-targeted' or 'dlr-targeted' ('targeted=True'
        turns 'ce'/'dlr' into their targeted variants).
      eot_iter: draws of randomness averaged per gradient.
      n_restarts: random restarts (per target class when targeted), each run
        only on points not yet broken.
      n_target_classes: targeted runs aim at the 1st..n-th highest other class.
      rho: oscillation threshold of checkpoint condition 1.

    Returns:
      AttackResult (see ``result.AttackResult``), every image inside the
      eps-ball and [0, 1]. ``success`` is judged by the single forward pass
      drawn at each iterate, so on a stochastic classifier it is optimistic
      (any of n_iter + 1 draws); score ``x_best`` there, with ``scoring``.
    """
    loss = _resolve_loss(loss, targeted)
    n_classes = validation.check_attack_inputs(logits_fn, params, x, y, key,
                                               norm=norm, eps=eps, loss=loss)
    for name, value in (("n_iter", n_iter), ("eot_iter", eot_iter), ("n_restarts", n_restarts)):
        validation.check_positive_int(name, value)
    if not 0.0 < rho <= 1.0:
        raise ValueError(f"rho must lie in (0, 1], got {rho}")
    x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32)
    run = functools.partial(
        _run, logits_fn=logits_fn, norm=norm, loss=loss, n_iter=n_iter, eot_iter=eot_iter)
    attack = lambda xs, ys, ts, k: run(params, xs, ys, ts, k, jnp.float32(eps), jnp.float32(rho))
    targets = [y]
    if loss.endswith("-targeted"):
        validation.check_positive_int("n_target_classes", n_target_classes)
        if n_target_classes > n_classes - 1:
            raise ValueError(f"n_target_classes must be <= {n_classes - 1}, got {n_target_classes}")
        key, rank_key = jax.random.split(key)
        ranked = _ranked_other_classes(params, x, y, rank_key, logits_fn=logits_fn,
                                       eot_iter=eot_iter)
        targets = [ranked[:, t] for t in range(n_target_classes)]
    out = result.unattacked(x)
    for y_target in targets:
        for _ in range(n_restarts):
            key, sub = jax.random.split(key)
            ran = result.run_on(attack, ~np.asarray(out.success), sub, x, y, y_target)
            if ran is not None:
                out = result.merge(out, *ran)
    return out

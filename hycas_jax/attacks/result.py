"""What an attack returns, how its per-iteration bookkeeping works, and how
repeated runs (restarts, target classes, attacks) combine.

Shapes: images (B, H, W, C) float32, flags and losses (B,).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from hycas_jax.attacks import threat


class AttackResult(NamedTuple):
    """What an attack returns; images (B, H, W, C), the rest (B,).

    ``x_adv``: the first iterate that fooled the attack's own forward pass
    where ``success``, else ``x_best``. ``x_best``: the iterate with the
    highest (EOT-averaged) loss. Against a stochastic classifier, a single
    fooling draw is weak evidence and ``x_best`` is the stronger attack point
    to score; against a deterministic one, ``x_adv`` is a certain adversarial
    example where ``success``. ``loss``: the best loss reached (-inf where the
    point was not attacked).
    """
    x_adv: jax.Array
    success: jax.Array
    x_best: jax.Array
    loss: jax.Array


class Progress(NamedTuple):
    """Per-example record kept inside the attack loops."""
    x_adv: jax.Array
    success: jax.Array
    x_best: jax.Array
    loss_best: jax.Array


def start(x0, loss0, fooled0):
    """Progress after evaluating the starting point ``x0``."""
    return Progress(x_adv=x0, success=fooled0, x_best=x0, loss_best=loss0)


def update(progress, x_new, loss_new, fooled):
    """Records an evaluated iterate; returns (progress, improved (B,) bool).

    The first fooling point is kept (later ones may fool less often under a
    fresh draw of randomness, and the first is the one a reader can audit).
    """
    first = fooled & ~progress.success
    improved = loss_new > progress.loss_best
    return Progress(
        x_adv=jnp.where(threat.per_example(first), x_new, progress.x_adv),
        success=progress.success | fooled,
        x_best=jnp.where(threat.per_example(improved), x_new, progress.x_best),
        loss_best=jnp.where(improved, loss_new, progress.loss_best),
    ), improved


def finish(progress):
    """The AttackResult of a finished run."""
    x_adv = jnp.where(threat.per_example(progress.success), progress.x_adv, progress.x_best)
    return AttackResult(x_adv=x_adv, success=progress.success, x_best=progress.x_best,
                        loss=progress.loss_best)


def unattacked(x):
    """The result before any attack: the clean points, nothing broken."""
    batch = x.shape[0]
    return AttackResult(x_adv=x, success=jnp.zeros((batch,), bool), x_best=x,
                        loss=jnp.full((batch,), -jnp.inf, jnp.float32))


def _bucket(count, batch):
    """Smallest power of two >= count, capped at the batch: jit sees few shapes."""
    return min(1 << max(count - 1, 0).bit_length(), batch)


def run_on(attack, mask, key, *arrays):
    """Runs ``attack(*sub_arrays, key) -> AttackResult`` on the rows where ``mask``.

    Rows are gathered on the host and padded by repeating the first selected
    row up to a power-of-two bucket. Returns (indices, AttackResult on those
    indices), or None when ``mask`` selects nothing.
    """
    idx = np.flatnonzero(np.asarray(mask))
    if idx.size == 0:
        return None
    batch = arrays[0].shape[0]
    padded = np.concatenate([idx, np.full(_bucket(idx.size, batch) - idx.size, idx[0])])
    out = attack(*(a[padded] for a in arrays), key)
    return idx, AttackResult(*(field[:idx.size] for field in out))


def merge(result, idx, new):
    """Folds a run on rows ``idx`` into ``result``: for ``x_adv`` a success
    wins, then the higher loss; for ``x_best`` the higher loss wins."""
    old = AttackResult(*(field[idx] for field in result))
    higher = new.loss > old.loss
    take_adv = (new.success & ~old.success) | (~old.success & higher)
    rows = lambda mask: mask.reshape((-1,) + (1,) * (old.x_adv.ndim - 1))
    merged = AttackResult(
        x_adv=jnp.where(rows(take_adv), new.x_adv, old.x_adv),
        success=old.success | new.success,
        x_best=jnp.where(rows(higher), new.x_best, old.x_best),
        loss=jnp.maximum(old.loss, new.loss))
    return AttackResult(*(whole.at[idx].set(part) for whole, part in zip(result, merged)))

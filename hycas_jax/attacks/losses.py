"""Per-example attack losses; the attacker maximises them.

All take ``logits`` (B, K) float and integer ``y`` (B,) and return (B,).
The DLR losses follow Croce & Hein (2020): the logit margin divided by a
spread of the sorted logits, which makes them invariant to shifting and
rescaling the logits (a defence against gradient masking by logit scale).
"""

import jax
import jax.numpy as jnp

# Keeps the DLR denominator away from 0 when the top logits tie.
_DLR_EPS = 1e-12


def _pick(logits, labels):
    return jnp.take_along_axis(logits, labels[:, None], axis=1)[:, 0]


def cross_entropy(logits, y, y_target=None):
    """Untargeted CE: -log softmax(logits)[y]. ``y_target`` is ignored."""
    del y_target
    return -_pick(jax.nn.log_softmax(logits), y)


def cross_entropy_targeted(logits, y, y_target):
    """Targeted CE: log softmax(logits)[y_target] (maximised toward the target)."""
    del y
    return _pick(jax.nn.log_softmax(logits), y_target)


def dlr(logits, y, y_target=None):
    """DLR: -(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3). Needs K >= 3."""
    del y_target
    top = jax.lax.top_k(logits, 3)[0]
    z_y = _pick(logits, y)
    # The best other logit is the 2nd largest exactly when y holds the 1st.
    best_other = jnp.where(top[:, 0] == z_y, top[:, 1], top[:, 0])
    return -(z_y - best_other) / (top[:, 0] - top[:, 2] + _DLR_EPS)


def dlr_targeted(logits, y, y_target):
    """Targeted DLR: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2). Needs K >= 4."""
    top = jax.lax.top_k(logits, 4)[0]
    margin = _pick(logits, y) - _pick(logits, y_target)
    return -margin / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + _DLR_EPS)


def margin(logits, y):
    """z_y - max_{j != y} z_j; negative exactly when the point is misclassified."""
    z_y = _pick(logits, y)
    others = jnp.where(jax.nn.one_hot(y, logits.shape[1], dtype=bool), -jnp.inf, logits)
    return z_y - others.max(axis=1)


LOSSES = {
    "ce": cross_entropy,
    "ce-targeted": cross_entropy_targeted,
    "dlr": dlr,
    "dlr-targeted": dlr_targeted,
}

"""Checks at the public entry points of the attack library.

Every attack takes ``logits_fn(params, x, key) -> (B, num_classes)`` and a
batch ``x`` (float32, NHWC, pixels in [0, 1]) with integer labels ``y`` (B,).
The checks run once on the host, never inside the jitted loops.
"""

import math

import jax
import numpy as np

from hycas_jax import checks
from hycas_jax.attacks import losses

NORMS = ("linf", "l2")
LOSSES = tuple(losses.LOSSES)
# DLR divides by the gap between the top logit and the 3rd (4th) largest one.
_MIN_CLASSES = {"ce": 2, "dlr": 3, "ce-targeted": 2, "dlr-targeted": 4}


def num_classes(logits_fn, params, x, key):
    """Number of classes from an abstract (shape-only) call of ``logits_fn``."""
    out = jax.eval_shape(logits_fn, params, x[:1], key)
    if len(out.shape) != 2 or out.shape[0] != 1:
        raise ValueError(
            f"logits_fn must return (batch, num_classes), got {out.shape} for a batch of 1")
    return out.shape[1]


def check_labels(y, batch, n_classes):
    """Checks ``y`` is an integer vector of ``batch`` labels in range."""
    if tuple(np.shape(y)) != (batch,):
        raise ValueError(f"y must have shape ({batch},), got {tuple(np.shape(y))}")
    dtype = getattr(y, "dtype", None) or np.asarray(y).dtype
    if not np.issubdtype(dtype, np.integer):
        raise ValueError(f"y must be integer labels, got dtype {dtype}")
    labels = checks.host_values(y)
    if labels is not None and labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(
            f"labels must lie in [0, {n_classes}), got range [{labels.min()}, {labels.max()}]")


def check_eps(eps, name="eps"):
    """Checks a radius (or step length) is a finite number >= 0."""
    if (not isinstance(eps, (int, float, np.floating, np.integer)) or isinstance(eps, bool)
            or not math.isfinite(eps)):
        raise ValueError(f"{name} must be a finite number, got {eps!r}")
    if eps < 0:
        raise ValueError(f"{name} must be >= 0, got {eps}")


def check_norm(norm):
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")


def check_loss(loss, n_classes):
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; expected one of {LOSSES}")
    if n_classes < _MIN_CLASSES[loss]:
        raise ValueError(
            f"loss {loss!r} needs at least {_MIN_CLASSES[loss]} classes, got {n_classes}")


def check_positive_int(name, value):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def check_attack_inputs(logits_fn, params, x, y, key, *, norm, eps, loss=None):
    """Runs the checks shared by all attacks; returns ``num_classes``."""
    check_norm(norm)
    check_eps(eps)
    checks.check_images(x)
    n_classes = num_classes(logits_fn, params, x, key)
    check_labels(y, np.shape(x)[0], n_classes)
    if loss is not None:
        check_loss(loss, n_classes)
    return n_classes

"""Guaranteed Lipschitz bound of a whole network (SPEC section 2).

The bound is the product of guaranteed per-layer bounds (FFT bounds for convs,
exact SVDs for dense and orthogonal matrices, exact constants for RANI,
pooling and normalization), combined as each layer's module says (e.g. the
gate's per-channel bound, a residual's convex mix). It is valid for every
value of the key: RANI's factor holds for every mask, the random projections'
for every draw. Certificates use this number, never a hard-coded 2.
"""
from __future__ import annotations

import math

from flax import nnx


def network_bound(model: nnx.Module) -> float:
    """l2 Lipschitz bound of `x -> model(x, key)` in raw pixel space."""
    if not hasattr(model, "lipschitz_bound"):
        raise TypeError(f"{type(model).__name__} does not report a Lipschitz bound")
    bound = float(model.lipschitz_bound())
    if not math.isfinite(bound) or bound <= 0:
        raise ValueError(f"network bound is not a positive finite number: {bound}")
    return bound

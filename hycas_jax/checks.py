"""The checks of the library's public entry points: one for image batches, one per
kind of numeric argument. Each raises ValueError naming the problem.

Images are float NHWC batches of raw pixels in [0, 1]. Shape and dtype are
checked always; the values (NaN, range) only when they are concrete on this
host. Inside someone else's `jit`, `vmap`, `grad` or `scan` the check never
turns a traced value into a Python bool: a traced batch, or an expression
of a closed-over one, is checked at shape level only.
"""
from __future__ import annotations

import math
import operator
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def host_values(x) -> Optional[np.ndarray]:
    """x's values as a numpy array, or None where reading them would force a trace
    (a Tracer) or need other hosts' data (an array not fully addressable here)."""
    if isinstance(x, jax.core.Tracer):
        return None
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return None
    return np.asarray(x)


def check_images(x, *, image_shape: Optional[Sequence[int]] = None,
                 pixel_range: bool = True) -> None:
    """Raises ValueError naming the first problem of the batch `x`.

    image_shape: the (H, W, C) the caller was built for, if any. pixel_range:
    also require values in [0, 1] (off for a model, which also sees noisy inputs).
    """
    shape, dtype = getattr(x, "shape", None), getattr(x, "dtype", None)
    if shape is None or dtype is None:
        raise ValueError(f"x must be an array, got {type(x).__name__}")
    if len(shape) != 4:
        raise ValueError(f"x must be NHWC (B, H, W, C), got shape {tuple(shape)}")
    if image_shape is not None and tuple(shape[1:]) != tuple(image_shape):
        raise ValueError(f"x has image shape {tuple(shape[1:])}, the model was built for "
                         f"{tuple(image_shape)} (H, W, C); its Lipschitz bound is for that size")
    if not np.issubdtype(dtype, np.floating):
        raise ValueError(f"x must be a float array of raw pixels in [0, 1], got dtype {dtype}")
    values = host_values(x)
    if values is None or values.size == 0:
        return
    if np.isnan(values).any():
        raise ValueError("x contains NaN")
    if pixel_range and (values.min() < 0.0 or values.max() > 1.0):
        raise ValueError(f"x must be raw pixels in [0, 1], got range "
                         f"[{values.min()}, {values.max()}]")


def validate_images(x) -> jax.Array:
    """Checks a batch of raw-pixel images (`check_images`); returns it as float32."""
    check_images(x)
    return jnp.asarray(x, jnp.float32)


def validate_count(value, name: str, minimum: int = 1) -> int:
    """Checks an integer argument >= minimum (and small enough for int32 counts)."""
    try:
        if isinstance(value, (bool, np.bool_)):
            raise TypeError
        value = operator.index(value)  # ints, numpy and concrete JAX integer scalars
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None
    if not minimum <= value < 2 ** 31:
        raise ValueError(f"{name} must be in [{minimum}, 2**31), got {value}")
    return int(value)


def validate_alpha(alpha) -> float:
    """Checks a failure probability in the open interval (0, 1)."""
    if not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    return float(alpha)


def validate_sigma(sigma, allow_zero: bool = False) -> float:
    """Checks the input-noise level: finite and > 0 (>= 0 when allow_zero)."""
    sigma = float(sigma)
    if not math.isfinite(sigma) or sigma < 0.0 or (sigma == 0.0 and not allow_zero):
        raise ValueError(f"sigma must be finite and {'>=' if allow_zero else '>'} 0, got {sigma}")
    return sigma

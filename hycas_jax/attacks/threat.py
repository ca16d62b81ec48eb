"""The threat model: an l_inf or l_2 ball of radius eps around the clean
image, intersected with the pixel box [0, 1].

Shapes: images (B, H, W, C) float32; per-example scalars (B,) broadcast over
the pixel axes.
"""

import jax
import jax.numpy as jnp

from hycas_jax import rng

# Guards the l2 normalisations against a zero vector.
_TINY = 1e-12


def per_example(v):
    """(B,) -> (B, 1, 1, 1) so it broadcasts against NHWC images."""
    return v.reshape((-1,) + (1,) * 3)


def l2_norm(v):
    """Per-example l2 norm of (B, H, W, C) -> (B,)."""
    return jnp.sqrt(jnp.sum(jnp.square(v), axis=(1, 2, 3)))


def project(norm, x_adv, x, eps):
    """Maps ``x_adv`` into the ball around ``x`` and then into [0, 1].

    For l_inf both sets are boxes, so clipping to one then the other is the
    exact projection. For l_2 we rescale into the ball and then clip; clipping
    only moves each coordinate toward ``x``, so the result stays in the ball
    (it is feasible, though not the exact Euclidean projection).
    """
    delta = x_adv - x
    if norm == "linf":
        delta = jnp.clip(delta, -eps, eps)
    else:
        length = per_example(l2_norm(delta))
        delta = delta * jnp.minimum(1.0, eps / jnp.maximum(length, _TINY))
    return jnp.clip(x + delta, 0.0, 1.0)


def random_start(norm, x, eps, key):
    """A uniform draw from the ball (l_inf cube or l_2 ball), clipped to [0, 1]."""
    if norm == "linf":
        delta = jax.random.uniform(key, x.shape, x.dtype, -eps, eps)
    else:
        direction_key, radius_key = jax.random.split(key)
        direction = rng.normal(direction_key, x.shape, x.dtype)
        direction = direction / per_example(jnp.maximum(l2_norm(direction), _TINY))
        dim = x[0].size
        # Radius eps * U^(1/d) makes the draw uniform in volume, not just on the sphere.
        radius = eps * jax.random.uniform(radius_key, (x.shape[0],), x.dtype) ** (1.0 / dim)
        delta = direction * per_example(radius)
    return jnp.clip(x + delta, 0.0, 1.0)


def ascent_direction(norm, grad):
    """Steepest-ascent direction of unit norm: sign(g) for l_inf, g / ||g|| for l_2."""
    if norm == "linf":
        return jnp.sign(grad)
    return grad / per_example(jnp.maximum(l2_norm(grad), _TINY))


def step(norm, x_cur, grad, step_size, x, eps):
    """One projected steepest-ascent step with per-example ``step_size`` (B,)."""
    moved = x_cur + per_example(step_size) * ascent_direction(norm, grad)
    return project(norm, moved, x, eps)

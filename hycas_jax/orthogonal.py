"""Orthogonal 1x1 channel mixing.

The matrix is `expm(A - A^T)` of a learned square A (a rotation, up to float
rounding), cut to (c_in, c_out). The cut has orthonormal rows (c_in <= c_out:
energy-conserving) or orthonormal columns (c_in > c_out: a co-isometry), so its
norm is exactly 1 either way. The reported bound is the SVD of the
materialized matrix, so float error is accounted for, not assumed away.

The exponential is computed by scaling and squaring with a Taylor polynomial
(`expm_skew`), matmuls only. `jax.scipy.linalg.expm` (Pade approximant, an LU
solve and a norm-dependent `cond`) gives the same matrix to float32 rounding
(about 1e-6 either way, tested against a float64 reference) but cost a
quarter of a small-CNN training step on CPU, where six of them are
differentiated every step.
"""
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hycas_jax import spectral

_TAYLOR_DEGREE = 18
_THETA = 2.0  # scale until ||X||_1 <= THETA: truncation error <= 2**19 / 19! < 1e-11
_MAX_SQUARINGS = 24


def expm_skew(s: jax.Array) -> jax.Array:
    """exp(s) of a square matrix by scaling and squaring a degree-18 Taylor series.

    Meant for skew-symmetric s (whose exponential is orthogonal): accurate to
    float32 rounding for ||s||_1 up to 2 * 2**24. Differentiable; the number of
    squarings depends on ||s||_1 but is taken as a constant by autodiff.
    """
    norm = jnp.max(jnp.sum(jnp.abs(s), axis=0))
    squarings = jax.lax.stop_gradient(
        jnp.clip(jnp.ceil(jnp.log2(jnp.maximum(norm, 1e-30) / _THETA)), 0, _MAX_SQUARINGS))
    x = s * jnp.exp2(-squarings)
    eye = jnp.eye(s.shape[0], dtype=s.dtype)
    q = eye
    for k in range(_TAYLOR_DEGREE, 0, -1):  # Horner: I + x (I + x/2 (I + ...))
        q = eye + (x @ q) / k
    for i in range(_MAX_SQUARINGS):
        q = jnp.where(i < squarings, q @ q, q)
    return q


class OrthogonalMix(nnx.Module):
    """x (..., c_in) -> x @ Q[:c_in, :c_out] with Q orthogonal."""

    def __init__(self, in_channels: int, out_channels: int, *, rngs: nnx.Rngs):
        self.in_channels, self.out_channels = in_channels, out_channels
        size = max(in_channels, out_channels)
        self.generator = nnx.Param(0.1 * jax.random.normal(rngs.params(), (size, size), jnp.float32))

    def matrix(self) -> jax.Array:
        a = self.generator[...]
        q = expm_skew(a - a.T)
        return q[: self.in_channels, : self.out_channels]

    def __call__(self, x: jax.Array) -> jax.Array:
        return x @ self.matrix()

    def lipschitz_bound(self) -> float:
        return spectral.matrix_bound(np.asarray(self.matrix()))

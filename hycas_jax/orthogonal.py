"""Orthogonal 1x1 channel mixing.

The matrix is `expm(A - A^T)` of a learned square A (a rotation, up to float
rounding), cut to (c_in, c_out). The cut has orthonormal rows (c_in <= c_out:
energy-conserving) or orthonormal columns (c_in > c_out: a co-isometry), so its
norm is exactly 1 either way. The reported bound is the SVD of the
materialized matrix, so float error is accounted for, not assumed away.
"""
import jax
import jax.numpy as jnp
import jax.scipy.linalg
import numpy as np
from flax import nnx

from hycas_jax import spectral


class OrthogonalMix(nnx.Module):
    """x (..., c_in) -> x @ Q[:c_in, :c_out] with Q orthogonal."""

    def __init__(self, in_channels: int, out_channels: int, *, rngs: nnx.Rngs):
        self.in_channels, self.out_channels = in_channels, out_channels
        size = max(in_channels, out_channels)
        self.generator = nnx.Param(0.1 * jax.random.normal(rngs.params(), (size, size), jnp.float32))

    def matrix(self) -> jax.Array:
        a = self.generator[...]
        q = jax.scipy.linalg.expm(a - a.T)
        return q[: self.in_channels, : self.out_channels]

    def __call__(self, x: jax.Array) -> jax.Array:
        return x @ self.matrix()

    def lipschitz_bound(self) -> float:
        return spectral.matrix_bound(np.asarray(self.matrix()))

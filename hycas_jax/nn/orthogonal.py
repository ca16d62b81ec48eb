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
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hycas_jax.nn import spectral
from hycas_jax.nn.frozen import Frozen, frozen_or

_TAYLOR_DEGREE = 18
_THETA = 2.0  # scale until ||X||_1 <= THETA: truncation error <= 2**19 / 19! < 1e-11
_MAX_SQUARINGS = 16
_COEFFICIENTS = [1.0 / math.factorial(k) for k in range(_TAYLOR_DEGREE + 1)]


def _taylor(x: jax.Array) -> jax.Array:
    """sum_k x^k / k! for k <= 18, by Paterson-Stockmeyer: 8 matmuls instead of 18.

    p(x) = sum_j (x^3)^j B_j(x), B_j = c_3j I + c_3j+1 x + c_3j+2 x^2, in Horner form.
    """
    eye = jnp.eye(x.shape[0], dtype=x.dtype)
    x2 = x @ x
    x3 = x2 @ x
    c = _COEFFICIENTS + [0.0, 0.0]

    def block(j):
        return c[3 * j] * eye + c[3 * j + 1] * x + c[3 * j + 2] * x2

    q = block(_TAYLOR_DEGREE // 3)
    for j in range(_TAYLOR_DEGREE // 3 - 1, -1, -1):
        q = block(j) + x3 @ q
    return q


def expm_skew(s: jax.Array) -> jax.Array:
    """exp(s) of a square matrix by scaling and squaring a degree-18 Taylor series.

    Meant for skew-symmetric s (whose exponential is orthogonal): accurate to
    float32 rounding for ||s||_1 up to 2 * 2**16 (a generator initialized as
    here has ||s||_1 near 10-60). Beyond that the result drifts from
    orthogonal; the mix's bound is the SVD of the materialized matrix, so a
    certificate stays sound either way. Differentiable; the number of
    squarings depends on ||s||_1 but is taken as a constant by autodiff.
    """
    norm = jnp.max(jnp.sum(jnp.abs(s), axis=0))
    squarings = jax.lax.stop_gradient(
        jnp.clip(jnp.ceil(jnp.log2(jnp.maximum(norm, 1e-30) / _THETA)), 0, _MAX_SQUARINGS))
    q = _taylor(s * jnp.exp2(-squarings))
    for i in range(_MAX_SQUARINGS):  # masked, not lax.cond: 24 conds per mix slowed compiles
        q = jnp.where(i < squarings, q @ q, q)
    return q


class OrthogonalMix(nnx.Module):
    """x (..., c_in) -> x @ Q[:c_in, :c_out] with Q orthogonal."""

    def __init__(self, in_channels: int, out_channels: int, *, rngs: nnx.Rngs):
        self.in_channels, self.out_channels = in_channels, out_channels
        size = max(in_channels, out_channels)
        self.generator = nnx.Param(0.1 * jax.random.normal(rngs.params(), (size, size), jnp.float32))

    def matrix(self) -> jax.Array:
        def compute():
            a = self.generator[...]
            return expm_skew(a - a.T)[: self.in_channels, : self.out_channels]
        return frozen_or(self, "frozen_matrix", compute)

    def freeze(self) -> None:
        """Stores the matrix (see `hycas_jax.nn.frozen`)."""
        self.frozen_matrix = Frozen(self.matrix())

    def __call__(self, x: jax.Array) -> jax.Array:
        with jax.named_scope("mix"):
            return x @ self.matrix()

    def lipschitz_bound(self) -> float:
        return spectral.matrix_bound(np.asarray(self.matrix()))

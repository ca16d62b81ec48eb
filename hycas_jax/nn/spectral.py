"""Operator-norm bounds for the linear layers of a Lipschitz network.

Two kinds of numbers live here and must never be confused:

* **Guaranteed upper bounds** (`conv_operator_bound`, `conv_layer_bound`,
  `matrix_bound`), computed on the host in float64 and inflated by `SAFETY` to
  absorb floating point. Certificates use these.
* **Power-iteration estimates** (`power_iteration_step`, `conv_norm_estimate`),
  which converge to the norm from *below*. Training normalizes with them; a
  certificate never relies on them.

The conv bound follows Sedghi et al. (2019): a zero-padded (any padding, any
stride) convolution on an n x n input is a restriction of the full linear
convolution, which equals the circular convolution on any grid of size
N >= n + k - 1. The circular convolution is block-diagonalized by the 2-D DFT,
so its norm is the largest singular value over the N x N frequency blocks of
the kernel's DFT. Restricting/subsampling (stride) can only lower the norm.
That slack is large on small maps (the border outputs of a 3x3 kernel on a 2x2
map), so `conv_layer_bound`, which the layers use, also takes the SVD of the
layer's exact dense matrix where it is small, and keeps the smaller bound.
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

# Relative inflation of every guaranteed bound: covers float64 SVD error and the
# float32 rounding of the weights themselves by a wide margin.
SAFETY = 1.0 + 1e-4


def _check_kernel(kernel: np.ndarray) -> np.ndarray:
    kernel = np.asarray(kernel, dtype=np.float64)
    if kernel.ndim != 4:
        raise ValueError(f"kernel must be HWIO (kh, kw, c_in, c_out), got shape {kernel.shape}")
    if not np.all(np.isfinite(kernel)):
        raise ValueError("kernel contains NaN or inf")
    return kernel


def conv_operator_bound(kernel, input_hw: Sequence[int]) -> float:
    """Guaranteed upper bound on the l2 operator norm of a 2-D convolution.

    Args:
      kernel: (kh, kw, c_in, c_out) array.
      input_hw: (H, W) of the input the layer really sees. The bound holds for
        every padding and stride on that input size.
    Returns:
      A float >= the largest singular value of the layer's dense matrix.
    """
    kernel = _check_kernel(kernel)
    kh, kw = kernel.shape[:2]
    grid = (int(input_hw[0]) + kh - 1, int(input_hw[1]) + kw - 1)
    spectrum = np.fft.fft2(kernel, s=grid, axes=(0, 1))  # (N1, N2, c_in, c_out)
    blocks = spectrum.reshape(-1, kernel.shape[2], kernel.shape[3])
    sigma = np.linalg.svd(blocks, compute_uv=False)
    return float(sigma.max()) * SAFETY


# Largest dense matrix (entries) `conv_layer_bound` builds: 4M float64 entries is
# 32 MB and well under a second for the SVD of the smaller Gram matrix.
DENSE_LIMIT = 4_000_000


def same_padding(size: int, k: int, stride: int) -> tuple[int, int]:
    """(lo, hi) padding of XLA's SAME convolution on one spatial axis (JAX's own rule,
    so the dense matrix below and the depthwise stencil pad as `conv2d` does)."""
    (lo, hi), = jax.lax.padtype_to_pads((size,), (k,), (stride,), "SAME")
    return int(lo), int(hi)


def conv_dense_matrix(kernel, input_hw: Sequence[int], stride: int = 1) -> np.ndarray:
    """The float64 matrix of `conv2d(x, kernel, stride)` (SAME padding) on (H, W, c_in)
    inputs: rows index the flattened (H_out, W_out, c_out) output, columns the
    flattened (H, W, c_in) input. Built from the kernel entries, not by running a conv."""
    kernel = _check_kernel(kernel)
    kh, kw, c_in, c_out = kernel.shape
    h, w = (int(s) for s in input_hw)
    (top, _), (left, _) = same_padding(h, kh, stride), same_padding(w, kw, stride)
    h_out, w_out = -(-h // stride), -(-w // stride)
    dense = np.zeros((h_out, w_out, c_out, h, w, c_in))
    for oy in range(h_out):
        for ox in range(w_out):
            for ky in range(kh):
                iy = oy * stride + ky - top
                if not 0 <= iy < h:
                    continue
                for kx in range(kw):
                    ix = ox * stride + kx - left
                    if 0 <= ix < w:
                        dense[oy, ox, :, iy, ix, :] = kernel[ky, kx].T
    return dense.reshape(h_out * w_out * c_out, h * w * c_in)


def conv_layer_bound(kernel, input_hw: Sequence[int], stride: int = 1) -> float:
    """Guaranteed bound on the l2 norm of the layer `conv2d(x, kernel, stride)` (SAME)
    on (H, W) inputs: the smaller of `conv_operator_bound` (any padding and stride)
    and, when the layer's dense matrix has at most `DENSE_LIMIT` entries, the SVD
    bound of that exact matrix.

    On small feature maps the FFT bound counts border outputs that SAME padding
    never produces (a 3x3 kernel on a 2x2 map: up to 2x loose) and ignores
    stride; the dense matrix has neither slack.
    """
    kernel = _check_kernel(kernel)
    fft = conv_operator_bound(kernel, input_hw)
    h, w = (int(s) for s in input_hw)
    rows = -(-h // stride) * -(-w // stride) * kernel.shape[3]
    if rows * h * w * kernel.shape[2] > DENSE_LIMIT:
        return fft
    dense = conv_dense_matrix(kernel, input_hw, stride)
    gram = dense @ dense.T if dense.shape[0] <= dense.shape[1] else dense.T @ dense
    # sigma_max^2 = lambda_max of the Gram matrix; float64 error is far below SAFETY.
    exact = float(np.sqrt(max(np.linalg.eigvalsh(gram)[-1], 0.0))) * SAFETY
    return min(fft, exact)


def matrix_bound(matrix) -> float:
    """Guaranteed upper bound on the spectral norm of a dense matrix (2-D)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"matrix must be 2-D, got shape {matrix.shape}")
    if not np.all(np.isfinite(matrix)):
        raise ValueError("matrix contains NaN or inf")
    return float(np.linalg.svd(matrix, compute_uv=False)[0]) * SAFETY


def conv2d(x: jax.Array, kernel: jax.Array, stride: int = 1, padding="SAME") -> jax.Array:
    """NHWC x HWIO convolution, the one every layer of the library uses."""
    return jax.lax.conv_general_dilated(
        x, kernel, window_strides=(stride, stride), padding=padding,
        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _normalize(v: jax.Array) -> jax.Array:
    return v / (jnp.linalg.norm(v) + 1e-12)


def power_iteration_step(v: jax.Array, linear_fn) -> jax.Array:
    """One step v <- A^T A v / ||A^T A v|| for the linear map `linear_fn`."""
    out, vjp = jax.vjp(linear_fn, v)
    (back,) = vjp(out)
    return _normalize(back)


@functools.partial(jax.jit, static_argnums=2)
def conv_power_iteration(v: jax.Array, kernel: jax.Array, steps: int) -> jax.Array:
    """`steps` power-iteration steps for the stride-1 SAME conv with `kernel`."""
    step = lambda _, u: power_iteration_step(u, lambda w: conv2d(w, kernel))
    return jax.lax.fori_loop(0, steps, step, v)


def conv_norm_estimate(v: jax.Array, kernel: jax.Array, stride: int, padding) -> jax.Array:
    """||conv(v)|| / ||v||: a lower bound of the conv operator norm (training only).

    Differentiable in `kernel` (v is treated as a constant), as in Miyato et
    al.'s spectral normalization.
    """
    v = jax.lax.stop_gradient(v)
    out = conv2d(v, kernel, stride, padding)
    return jnp.linalg.norm(out) / (jnp.linalg.norm(v) + 1e-12)

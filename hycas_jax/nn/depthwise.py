"""Depthwise convolution with an optional hand-written backward pass.

`depthwise_conv(x, filters, stride)` is a SAME-padded depthwise convolution
written as k*k strided multiply-adds. Inside `reverse_mode_only()` it uses a
custom VJP (faster reverse-mode gradients on XLA's CPU backend, no
forward-mode derivative); elsewhere JAX derives the gradient. Same values
either way.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools

import jax
import jax.numpy as jnp

from hycas_jax.nn import spectral


def _depthwise_forward(x, filters, stride):
    k = filters.shape[0]
    padded = jnp.pad(x, ((0, 0), *(spectral.same_padding(s, k, stride) for s in x.shape[1:3]), (0, 0)))
    span_h, span_w = ((-(-s // stride) - 1) * stride + 1 for s in x.shape[1:3])
    return sum(padded[:, i:i + span_h:stride, j:j + span_w:stride, :] * filters[i, j, 0]
               for i in range(k) for j in range(k))


_REVERSE_MODE_ONLY = contextvars.ContextVar("hycas_reverse_mode_only", default=False)


@contextlib.contextmanager
def reverse_mode_only():
    """Functions traced inside use a hand-written backward pass for RPFAN's
    depthwise convolution: faster reverse-mode gradients (jax.grad, vjp,
    jacrev, under vmap too), but no forward-mode (jvp, jacfwd) through it.

    The training step and the attacks' EOT gradient trace under it. The
    autodiff-derived transpose, used elsewhere, sums k*k separately padded
    copies of the cotangent, which XLA's CPU backend runs slowly: about a
    fifth of a small-CNN training step.
    """
    token = _REVERSE_MODE_ONLY.set(True)
    try:
        yield
    finally:
        _REVERSE_MODE_ONLY.reset(token)


def depthwise_conv(x: jax.Array, filters: jax.Array, stride: int) -> jax.Array:
    """SAME-padded depthwise conv of NHWC `x` with (k, k, 1, C) `filters`.

    Padded exactly as `lax.conv` pads "SAME" at this stride, so the output
    grid lines up with the SNC streams' that the gate adds it to. Written as
    k*k strided multiply-adds rather than a grouped convolution: XLA's CPU
    grouped conv is several times slower, and this form batches cheaply under
    vmap when every sample has its own filters. Same values either way; see
    `reverse_mode_only` for the two backward passes.
    """
    if _REVERSE_MODE_ONLY.get():
        return _depthwise_custom_vjp(x, filters, stride)
    return _depthwise_forward(x, filters, stride)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _depthwise_custom_vjp(x, filters, stride):
    return _depthwise_forward(x, filters, stride)


def _depthwise_fwd(x, filters, stride):
    return _depthwise_forward(x, filters, stride), (x, filters)


def _depthwise_bwd(stride, residuals, g):
    x, filters = residuals
    _, filters_vjp = jax.vjp(lambda f: _depthwise_forward(x, f, stride), filters)
    return _depthwise_transpose(g, filters, stride, x.shape[1:3]), filters_vjp(g)[0]


_depthwise_custom_vjp.defvjp(_depthwise_fwd, _depthwise_bwd)


def _depthwise_transpose(g, filters, stride, hw):
    """x's cotangent for the output cotangent g (the conv's transpose)."""
    k = filters.shape[0]
    (top, bottom), (left, right) = (spectral.same_padding(s, k, stride) for s in hw)
    # Output (oh, ow) read padded input (oh * s + i, ow * s + j). Spread g back
    # onto the stride grid (interior padding s - 1); then x's cotangent at row
    # y is sum_i dilated[y + top - i]: a stencil with the flipped filters.
    height, width = hw
    span_h, span_w = (g.shape[1] - 1) * stride + 1, (g.shape[2] - 1) * stride + 1
    dilated = jax.lax.pad(g, jnp.zeros((), g.dtype),
                          ((0, 0, 0),
                           (k - 1, height + top + bottom - span_h, stride - 1),
                           (k - 1, width + left + right - span_w, stride - 1),
                           (0, 0, 0)))
    return sum(dilated[:, top + k - 1 - i:top + k - 1 - i + height,
                       left + k - 1 - j:left + k - 1 - j + width, :] * filters[i, j, 0]
               for i in range(k) for j in range(k))

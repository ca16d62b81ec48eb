"""The three HyCAS streams. Each maps (B, H, W, c_in) -> (B, H/s, W/s, c_out).

* SNCAN: RANI(SNC(x)).
* FDPAN: DCT low-pass -> orthogonal 1x1 mix -> SNC -> RANI.
* RPFAN: orthogonal channel pre-mix -> random projection filters -> RANI.

RPFAN's random filters are depthwise k x k Gaussian kernels, re-drawn from the
key on every pass and divided by their l1 norm. By Young's inequality a
convolution with an l1-normalized kernel has l2 operator norm <= 1 (any
padding, any stride), so the bound is known for every draw, unlike the paper's
two-step power iteration, which under-estimates the norm. Channel mixing comes
from the learned orthogonal pre-mix, so pre-mix + depthwise filters together
are a random (low-rank-in-space) projection conv.

With `rani=None` a stream has no RANI (the deterministic Lipschitz baseline).
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hycas_jax import dct, rng, spectral
from hycas_jax.inference import Frozen
from hycas_jax.orthogonal import OrthogonalMix
from hycas_jax.rani import RANI
from hycas_jax.snc import SNConv


class _Stream(nnx.Module):
    """Shared tail: optional RANI, whose factor multiplies the stream's bound."""

    def _init_rani(self, channels: int, rani: Optional[str], rngs: nnx.Rngs):
        self.rani = RANI(channels, rani, rngs=rngs) if rani else None

    def _apply_rani(self, h, key):
        return h if self.rani is None else self.rani(h, key)

    def _rani_bound(self) -> float:
        return 1.0 if self.rani is None else self.rani.lipschitz_bound()


class SNCAN(_Stream):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *,
                 input_hw: Sequence[int], stride: int = 1, rani: Optional[str] = "residual",
                 rngs: nnx.Rngs):
        self.conv = SNConv(in_channels, out_channels, kernel_size, input_hw=input_hw,
                           stride=stride, rngs=rngs)
        self._init_rani(out_channels, rani, rngs)

    def __call__(self, x: jax.Array, key: jax.Array) -> jax.Array:
        return self._apply_rani(self.conv(x), key)

    def lipschitz_bound(self) -> float:
        return self.conv.lipschitz_bound() * self._rani_bound()


class FDPAN(_Stream):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *,
                 input_hw: Sequence[int], stride: int = 1, rani: Optional[str] = "residual",
                 dct_keep: float = 0.5, rngs: nnx.Rngs):
        self.dct_keep = dct_keep
        self.input_hw = tuple(input_hw)
        self.lowpass_form = "einsum"  # how XLA is asked to compute it (dct.lowpass); same map
        self.mix = OrthogonalMix(in_channels, in_channels, rngs=rngs)
        self.conv = SNConv(in_channels, out_channels, kernel_size, input_hw=input_hw,
                           stride=stride, rngs=rngs)
        self._init_rani(out_channels, rani, rngs)

    def _projections(self):
        h, w = self.input_hw
        return dct.lowpass_projection(h, self.dct_keep), dct.lowpass_projection(w, self.dct_keep)

    def lowpass(self, x: jax.Array) -> jax.Array:
        """idct(mask * dct(x)) per channel, as two separable projections."""
        with jax.named_scope("lowpass"):
            return dct.lowpass(x, *self._projections(), form=self.lowpass_form)

    def __call__(self, x: jax.Array, key: jax.Array) -> jax.Array:
        folded = getattr(self, "frozen_kernel", None)
        if folded is None:
            h = self.conv(self.mix(self.lowpass(x)))
        else:  # frozen: the mix folded into the conv kernel
            h = self.conv(self.lowpass(x), folded[...])
        return self._apply_rani(h, key)

    def freeze(self) -> None:
        """Folds the 1x1 mix into the SNC kernel: conv(x Q, W) = conv(x, Q W), with
        (Q W)[i, j, a, o] = sum_b Q[a, b] W[i, j, b, o], formed in float64."""
        q = np.asarray(self.mix.matrix(), np.float64)
        w = np.asarray(self.conv.effective_kernel(), np.float64)
        self.frozen_kernel = Frozen(jnp.asarray(np.einsum("ab,ijbo->ijao", q, w), jnp.float32))

    def lipschitz_bound(self) -> float:
        ph, pw = self._projections()
        lowpass = spectral.matrix_bound(ph) * spectral.matrix_bound(pw)
        folded = getattr(self, "frozen_kernel", None)
        if folded is not None:  # bound the folded conv the forward pass applies
            conv = spectral.conv_layer_bound(np.asarray(folded[...]), self.input_hw, self.conv.stride)
            return lowpass * conv * self._rani_bound()
        return lowpass * self.mix.lipschitz_bound() * self.conv.lipschitz_bound() * self._rani_bound()


def random_projection_filters(key: jax.Array, kernel_size: int, channels: int) -> jax.Array:
    """Depthwise Gaussian kernels (k, k, 1, C), each with l1 norm 1."""
    # Materialized: the fusible form was fused into every consumer of this
    # tiny array (the depthwise stencil and its transpose) and re-hashed for
    # each of their output elements.
    k = rng.normal(key, (kernel_size, kernel_size, 1, channels), jnp.float32, fusible=False)
    return _materialized(k / (jnp.sum(jnp.abs(k), axis=(0, 1, 2), keepdims=True) + 1e-12))


def _materialized(f: jax.Array) -> jax.Array:
    """`f` (..., C), bit for bit, as the result of a matmul by the C x C identity.

    XLA fuses elementwise producers into each consumer, and keeps a dot's
    result in memory. Without the dot, the hash above stayed materialized but
    its erf_inv and the l1 normalization were fused into every tap of the
    depthwise stencil (forward, and twice in the backward): recomputed k*k
    times per output element, 30% of RPFAN's depthwise time in a small-CNN
    training step on CPU. Each output is f * 1 plus zeros, exact at HIGHEST
    precision (no TF32 or bf16 rounding on accelerators); the matmul costs C
    multiply-adds per filter weight, a few thousand per draw.
    """
    eye = (jnp.arange(f.shape[-1])[:, None] == jnp.arange(f.shape[-1])[None, :]).astype(f.dtype)
    return jnp.matmul(f, eye, precision=jax.lax.Precision.HIGHEST)


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


class RPFAN(_Stream):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *,
                 input_hw: Sequence[int], stride: int = 1, rani: Optional[str] = "residual",
                 rngs: nnx.Rngs):
        self.kernel_size, self.stride, self.channels = kernel_size, stride, out_channels
        self.mix = OrthogonalMix(in_channels, out_channels, rngs=rngs)
        self._init_rani(out_channels, rani, rngs)

    def __call__(self, x: jax.Array, key: jax.Array) -> jax.Array:
        proj_key, rani_key = jax.random.split(key)
        with jax.named_scope("filters"):
            filters = random_projection_filters(proj_key, self.kernel_size, self.channels)
        h = self.mix(x)
        with jax.named_scope("depthwise"):
            h = depthwise_conv(h, filters, self.stride)
        return self._apply_rani(h, rani_key)

    def lipschitz_bound(self) -> float:
        # Young's inequality gives 1 for every draw; SAFETY covers float32 rounding.
        return self.mix.lipschitz_bound() * spectral.SAFETY * self._rani_bound()


STREAMS = {"sncan": SNCAN, "fdpan": FDPAN, "rpfan": RPFAN}

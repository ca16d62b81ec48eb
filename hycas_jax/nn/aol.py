"""Almost-orthogonal convolutions (AOL) and norm-preserving downsampling.

AOL (Prach and Lampert, 2022) rescales each input channel i of a free kernel P
by d_i = (sum_j sum_delta |M_delta[i, j]|)^(-1/2), where M is the kernel of
P^T P (the correlation of P with itself: M_delta[i, j] = sum_{u, o}
P[u, i, o] P[u + delta, j, o]). With D = diag(d), the convolution with P D
has operator norm <= 1 on the infinite grid, for every P (the absolute row
sums of (P D)^T (P D) = D P^T P D are <= 1, and a symmetric matrix's norm is
at most its largest absolute row sum), hence on every zero-padded finite
input. Unlike spectral normalization by a power-iteration estimate, the
rescaling is exact arithmetic on the weights: no state, no iteration, and a
trained AOL layer is close to orthogonal where the data needs it, so it keeps
the gradient norm instead of shrinking it.

The theorem is not what certificates use: `AOLConv.lipschitz_bound()` is the
guaranteed FFT / dense-SVD bound (`spectral.conv_layer_bound`) of the kernel
the forward pass really applies, as for every other layer.

Downsampling by `stride` is space-to-depth (each stride x stride patch becomes
channels: a permutation of the entries, norm exactly 1 and invertible)
followed by a stride-1 AOL convolution on the stride^2-times-wider input.
A strided convolution instead drops (stride^2 - 1) / stride^2 of its outputs
and loses that much of the signal's norm.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hycas_jax.nn import spectral
from hycas_jax.nn.frozen import Frozen, frozen_or

_EPS = 1e-12  # keeps an all-zero channel's scale finite (its kernel entries are 0 anyway)


def space_to_depth(x: jax.Array, block: int) -> jax.Array:
    """(B, H, W, C) -> (B, ceil(H/block), ceil(W/block), block^2 * C).

    Zero-pads H and W up to multiples of `block` (an isometric embedding), then
    moves each block x block patch into channels, ordered (dy, dx, c). Every
    input entry appears exactly once in the output: the map preserves norms.
    """
    if block == 1:
        return x
    b, h, w, c = x.shape
    ph, pw = -h % block, -w % block
    if ph or pw:
        x = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)))
    hb, wb = (h + ph) // block, (w + pw) // block
    x = x.reshape(b, hb, block, wb, block, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, hb, wb, block * block * c)


def aol_scale(kernel: jax.Array) -> jax.Array:
    """The AOL rescaling d (c_in,) of an HWIO kernel (module docstring)."""
    kh, kw = kernel.shape[:2]
    # M as one convolution: the "image" is P with c_in as batch and c_out as
    # channels, the filter is P with its channel axes swapped, fully padded;
    # output position y holds M_delta for delta = (k - 1) - y.
    gram = jax.lax.conv_general_dilated(
        jnp.transpose(kernel, (2, 0, 1, 3)), jnp.transpose(kernel, (0, 1, 3, 2)),
        window_strides=(1, 1), padding=((kh - 1, kh - 1), (kw - 1, kw - 1)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=jax.lax.Precision.HIGHEST)  # (c_in, 2kh-1, 2kw-1, c_in)
    row_sums = jnp.sum(jnp.abs(gram), axis=(1, 2, 3))
    return jax.lax.rsqrt(row_sums + _EPS)


def aol_gram_numpy(kernel) -> np.ndarray:
    """M[delta_h, delta_w, i, j] in float64 with plain loops (the tests' reference)."""
    p = np.asarray(kernel, np.float64)
    kh, kw = p.shape[:2]
    m = np.zeros((2 * kh - 1, 2 * kw - 1, p.shape[2], p.shape[2]))
    for dh in range(-(kh - 1), kh):
        for dw in range(-(kw - 1), kw):
            for uh in range(kh):
                for uw in range(kw):
                    vh, vw = uh + dh, uw + dw
                    if 0 <= vh < kh and 0 <= vw < kw:
                        m[dh + kh - 1, dw + kw - 1] += p[uh, uw] @ p[vh, vw].T
    return m


def _aol_init(key, shape):
    # Orthogonal-ish start: identity-like center tap plus small noise, so the
    # first layers pass the signal on at about unit gain.
    kh, kw, cin, cout = shape
    w = jax.random.normal(key, shape, jnp.float32) * 0.1 / np.sqrt(kh * kw * cin)
    eye = jnp.eye(cin, cout, dtype=jnp.float32)
    return w.at[kh // 2, kw // 2].add(eye)


class AOLConv(nnx.Module):
    """AOL convolution `conv(s2d(x), P D) + b`, NHWC -> NHWC (module docstring).

    The same interface as `SNConv`: `stride`, `input_hw`, `effective_kernel()`,
    `freeze()`, `fold_input_mix(q)`, `lipschitz_bound()`, and `conv(x, kernel)`
    with an explicit kernel (FDPAN's frozen form). The kernel acts on the
    space-to-depth input: (k, k, stride^2 * in_channels, out_channels).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *,
                 input_hw: Sequence[int], stride: int = 1, use_bias: bool = True,
                 rngs: nnx.Rngs):
        self.stride = int(stride)
        self.input_hw = tuple(int(s) for s in input_hw)
        self.in_channels = in_channels
        shape = (kernel_size, kernel_size, self.stride ** 2 * in_channels, out_channels)
        self.kernel = nnx.Param(_aol_init(rngs.params(), shape))
        self.bias = nnx.Param(jnp.zeros((out_channels,), jnp.float32)) if use_bias else None

    def conv_hw(self) -> tuple[int, int]:
        """(H, W) the stride-1 convolution sees (after space-to-depth)."""
        return tuple(-(-s // self.stride) for s in self.input_hw)

    def effective_kernel(self) -> jax.Array:
        def compute():
            kernel = self.kernel[...]
            return kernel * aol_scale(kernel)[:, None]
        return frozen_or(self, "frozen_kernel", compute)

    def freeze(self) -> None:
        """Stores the rescaled kernel (see `hycas_jax.nn.frozen`)."""
        self.frozen_kernel = Frozen(self.effective_kernel())

    def fold_input_mix(self, q) -> jax.Array:
        """The kernel of `x -> self(x @ q)` (q: (in, in), applied before space-to-depth),
        formed in float64."""
        w = np.asarray(self.effective_kernel(), np.float64)
        k = w.shape[0]
        w = w.reshape(k, k, self.stride ** 2, self.in_channels, w.shape[-1])
        folded = np.einsum("ab,ijpbo->ijpao", np.asarray(q, np.float64), w)
        return jnp.asarray(folded.reshape(k, k, -1, w.shape[-1]), jnp.float32)

    def __call__(self, x: jax.Array, kernel: jax.Array | None = None) -> jax.Array:
        with jax.named_scope("aol"):
            kernel = self.effective_kernel() if kernel is None else kernel
            y = spectral.conv2d(space_to_depth(x, self.stride), kernel, 1)
            return y if self.bias is None else y + self.bias[...]

    def lipschitz_bound(self, kernel=None) -> float:
        """Guaranteed bound of the applied map (space-to-depth has norm exactly 1)."""
        kernel = self.effective_kernel() if kernel is None else kernel
        return spectral.conv_layer_bound(np.asarray(kernel), self.conv_hw(), 1)


"""RPFAN: orthogonal channel pre-mix -> random projection filters -> RANI.

The random filters are depthwise k x k Gaussian kernels, re-drawn from the key
on every pass and divided by their l1 norm. By Young's inequality a
convolution with an l1-normalized kernel has l2 operator norm <= 1 (any
padding, any stride), so the bound is known for every draw, unlike the paper's
two-step power iteration, which under-estimates the norm. Channel mixing comes
from the learned orthogonal pre-mix, so pre-mix + depthwise filters together
are a random (low-rank-in-space) projection conv.
"""
from __future__ import annotations

from typing import Optional, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from hycas_jax import rng
from hycas_jax.models.rani import RandomizedStream
from hycas_jax.nn import spectral
from hycas_jax.nn.depthwise import depthwise_conv
from hycas_jax.nn.orthogonal import OrthogonalMix


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


class RPFAN(RandomizedStream):
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

"""SNCAN: RANI(conv(x)), a normalized convolution (SNC or AOL) and its noise."""
from __future__ import annotations

from typing import Optional, Sequence

import jax
from flax import nnx

from hycas_jax.models.rani import RandomizedStream
from hycas_jax.nn.conv import make_conv


class SNCAN(RandomizedStream):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *,
                 input_hw: Sequence[int], stride: int = 1, rani: Optional[str] = "residual",
                 rani_spread: str = "floored", rani_noise: str = "normal", conv: str = "snc", rngs: nnx.Rngs):
        self.conv = make_conv(conv, in_channels, out_channels, kernel_size, input_hw=input_hw,
                              stride=stride, rngs=rngs)
        self._init_rani(out_channels, rani, rngs, rani_spread, rani_noise)

    def __call__(self, x: jax.Array, key: jax.Array) -> jax.Array:
        return self._apply_rani(self.conv(x), key)

    def lipschitz_bound(self) -> float:
        return self.conv.lipschitz_bound() * self._rani_bound()

"""FDPAN: DCT low-pass -> orthogonal 1x1 mix -> normalized conv (SNC or AOL) -> RANI."""
from __future__ import annotations

from typing import Optional, Sequence

import jax
from flax import nnx

from hycas_jax.models.rani import RandomizedStream
from hycas_jax.nn import dct, spectral
from hycas_jax.nn.conv import make_conv
from hycas_jax.nn.frozen import Frozen
from hycas_jax.nn.orthogonal import OrthogonalMix


class FDPAN(RandomizedStream):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *,
                 input_hw: Sequence[int], stride: int = 1, rani: Optional[str] = "residual",
                 rani_spread: str = "floored", rani_noise: str = "normal",
                 dct_keep: float = 0.5, conv: str = "snc", rngs: nnx.Rngs):
        self.dct_keep = dct_keep
        self.input_hw = tuple(input_hw)
        self.lowpass_form = "einsum"  # how XLA is asked to compute it (dct.lowpass); same map
        self.mix = OrthogonalMix(in_channels, in_channels, rngs=rngs)
        self.conv = make_conv(conv, in_channels, out_channels, kernel_size, input_hw=input_hw,
                              stride=stride, rngs=rngs)
        self._init_rani(out_channels, rani, rngs, rani_spread, rani_noise)

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
        self.frozen_kernel = Frozen(self.conv.fold_input_mix(self.mix.matrix()))

    def lipschitz_bound(self) -> float:
        ph, pw = self._projections()
        lowpass = spectral.matrix_bound(ph) * spectral.matrix_bound(pw)
        folded = getattr(self, "frozen_kernel", None)
        if folded is not None:  # bound the folded conv the forward pass applies
            conv = self.conv.lipschitz_bound(folded[...])
            return lowpass * conv * self._rani_bound()
        return lowpass * self.mix.lipschitz_bound() * self.conv.lipschitz_bound() * self._rani_bound()

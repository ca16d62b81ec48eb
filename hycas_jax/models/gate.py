"""The per-channel convex gate that fuses the streams.

`alpha = softmax(lambda, axis=stream)`, output channel c = sum_b alpha[b, c] *
stream_b[..., c]. NOTE: the spec (and the paper) bound this by max_b L_b, which
is true only when alpha does not vary across channels. With per-channel
weights two streams can put their full gain into disjoint channels, and the
fused map then has gain sqrt(2) * L (see tests/test_gate.py). The guaranteed
bound used here is

    min( sum_b a_b L_b ,  sqrt(sum_b a_b L_b^2) ),   a_b = max_c alpha[b, c],

the first by the triangle inequality, the second by Jensen's inequality on
each channel's convex combination. It equals max_b L_b when alpha is constant
across channels and never exceeds sqrt(#streams) * max_b L_b.

`per_channel=False` shares one weight per stream across all channels: a true
convex combination of the streams, bounded by max_b L_b (the budgeted RANI
placement uses it, since a per-channel gate would spend its budget).

`learned=False` is the "no gate" ablation: the streams are averaged with fixed
equal weights 1 / #streams (held as a non-trainable `GateLogits` variable).
"""
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hycas_jax.nn import spectral
from hycas_jax.nn.frozen import Frozen, frozen_or


class GateLogits(nnx.Variable):
    """Fixed (untrained) gate logits: the optimizer only updates `nnx.Param`s."""


class ConvexGate(nnx.Module):
    def __init__(self, num_streams: int, channels: int, *, per_channel: bool = True,
                 learned: bool = True, rngs: nnx.Rngs):
        del rngs
        shape = (num_streams, channels if per_channel and learned else 1)
        self.logits = (nnx.Param if learned else GateLogits)(jnp.zeros(shape, jnp.float32))

    def weights(self) -> jax.Array:
        return frozen_or(self, "frozen_weights", lambda: jax.nn.softmax(self.logits[...], axis=0))

    def freeze(self) -> None:
        """Stores the softmax weights (see `hycas_jax.nn.frozen`)."""
        self.frozen_weights = Frozen(self.weights())

    def __call__(self, streams: Sequence[jax.Array]) -> jax.Array:
        alpha = self.weights()
        return sum(alpha[b] * s for b, s in enumerate(streams))

    def lipschitz_bound(self, stream_bounds: Sequence[float]) -> float:
        frozen = getattr(self, "frozen_weights", None)
        if frozen is not None:  # the very weights the forward pass applies
            alpha = np.asarray(frozen[...], np.float64)
        else:
            logits = np.asarray(self.logits[...], np.float64)
            alpha = np.exp(logits - logits.max(axis=0))
            alpha /= alpha.sum(axis=0)
        a = alpha.max(axis=1) * spectral.SAFETY
        lb = np.asarray(stream_bounds, np.float64)
        return float(min(np.sum(a * lb), np.sqrt(np.sum(a * lb**2))))

"""Input normalization, global pooling and classification heads, with bounds."""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hycas_jax.nn import spectral
from hycas_jax.nn.frozen import Frozen, frozen_or


class Normalize(nnx.Module):
    """(x - mean) / std per channel. Its bound 1 / min(std) is counted."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        std = np.asarray(std, np.float32)
        if np.any(std <= 0) or not np.all(np.isfinite(std)):
            raise ValueError(f"normalization std must be positive and finite, got {std.tolist()}")
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def __call__(self, x: jax.Array) -> jax.Array:
        return (x - jnp.asarray(self.mean, x.dtype)) / jnp.asarray(self.std, x.dtype)

    def lipschitz_bound(self) -> float:
        # Dividing in float32 can round up by one ulp; SAFETY covers it.
        return spectral.SAFETY / min(self.std)


def sum_pool(x: jax.Array) -> jax.Array:
    """sum over H, W divided by sqrt(H * W): global pooling with norm exactly 1.

    Plain averaging has norm 1/sqrt(HW); Lipschitz networks would then need
    huge weights downstream, so the constant is folded in here instead.
    """
    return jnp.sum(x, axis=(1, 2)) / np.sqrt(x.shape[1] * x.shape[2])


def mean_pool(x: jax.Array) -> jax.Array:
    return jnp.mean(x, axis=(1, 2))


def mean_pool_bound(hw: Sequence[int]) -> float:
    return spectral.SAFETY / float(np.sqrt(hw[0] * hw[1]))


class LipschitzLinear(nnx.Module):
    """Dense layer with weight W / ||W||_2 (exact SVD; small matrices only)."""

    def __init__(self, in_features: int, out_features: int, *, rngs: nnx.Rngs):
        w = jax.random.normal(rngs.params(), (in_features, out_features), jnp.float32)
        self.weight = nnx.Param(w / np.sqrt(in_features))
        self.bias = nnx.Param(jnp.zeros((out_features,), jnp.float32))

    def effective_weight(self) -> jax.Array:
        def compute():
            w = self.weight[...]
            return w / jnp.linalg.norm(w, ord=2)
        return frozen_or(self, "frozen_weight", compute)

    def freeze(self) -> None:
        """Stores the normalized weight (see `hycas_jax.nn.frozen`)."""
        self.frozen_weight = Frozen(self.effective_weight())

    def __call__(self, x: jax.Array) -> jax.Array:
        return x @ self.effective_weight() + self.bias[...]

    def lipschitz_bound(self) -> float:
        return spectral.matrix_bound(np.asarray(self.effective_weight()))


class Linear(nnx.Module):
    """Unconstrained dense layer (plain baseline)."""

    def __init__(self, in_features: int, out_features: int, *, rngs: nnx.Rngs):
        w = jax.random.normal(rngs.params(), (in_features, out_features), jnp.float32)
        self.weight = nnx.Param(w / np.sqrt(in_features))
        self.bias = nnx.Param(jnp.zeros((out_features,), jnp.float32))

    def effective_weight(self) -> jax.Array:
        return self.weight[...]

    def __call__(self, x: jax.Array) -> jax.Array:
        return x @ self.weight[...] + self.bias[...]

    def lipschitz_bound(self) -> float:
        return spectral.matrix_bound(np.asarray(self.weight[...]))

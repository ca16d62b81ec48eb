"""The classifier shell shared by all backbones.

normalize -> backbone features -> [final RANI, "budgeted" and "final" placements] ->
pooling -> head. The public entry point checks its input once; inner layers
do not re-check.

Pooling (`pool` in the model config): "sum" (global sum / sqrt(H W), norm 1;
the default, and what configs from before the choice used) or "flatten" (the
whole feature map into the head: an isometry, so no signal is averaged away).

With a linear head z = W p + c on pooled features p, the margin z_i - z_j =
(w_i - w_j) . p + (c_i - c_j) is `||w_i - w_j|| * L_body`-Lipschitz, where
L_body bounds everything before the head: `pair_bounds()` reports these K x K
guaranteed numbers, at most sqrt(2) L and often well below it.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hycas_jax import checks
from hycas_jax.models.block import FINAL_RANI
from hycas_jax.models.rani import RANI, config_noise, config_spread
from hycas_jax.nn import normalize, spectral
from hycas_jax.nn.activations import get_activation


class Classifier(nnx.Module):
    """Subclasses build their units, call `_init_shell`, and implement
    `features(h, key)` and `features_bound()`."""

    def _init_shell(self, cfg, channels: int, final_hw, rngs: nnx.Rngs):
        self.image_shape = tuple(int(s) for s in cfg.image_shape)
        self.num_classes = int(cfg.num_classes)
        self.kind = cfg.kind
        self.activation_name = "relu" if cfg.kind == "plain" else cfg.activation
        self.final_hw = tuple(final_hw)
        self.pool = config_pool(cfg)
        check_pool(self.pool)
        self.normalize = normalize.Normalize(cfg.mean, cfg.std)
        ends_in_rani = cfg.kind == "hycas" and cfg.rani in FINAL_RANI
        self.final_rani = (RANI(channels, "residual", spread=config_spread(cfg),
                                noise=config_noise(cfg), rngs=rngs)
                           if ends_in_rani else None)
        if self.pool == "flatten":
            channels = channels * self.final_hw[0] * self.final_hw[1]
        if cfg.kind == "plain":
            self.head = normalize.Linear(channels, self.num_classes, rngs=rngs)
        else:
            self.head = normalize.LipschitzLinear(channels, self.num_classes, rngs=rngs)

    @property
    def stochastic(self) -> bool:
        return self.kind == "hycas"

    def activation(self, x):
        with jax.named_scope("activation"):
            return get_activation(self.activation_name)(x)

    def check_input(self, x) -> None:
        """Clear errors for the mistakes a caller can make at the entry point; never
        forces a traced value (`checks.check_images`)."""
        checks.check_images(x, image_shape=self.image_shape, pixel_range=False)

    def __call__(self, x: jax.Array, key: jax.Array | None = None) -> jax.Array:
        """x: float (B, H, W, C) raw pixels in [0, 1]; key: PRNG key. -> logits (B, classes)."""
        self.check_input(x)
        if key is None:
            if self.stochastic:
                raise ValueError("this model is stochastic (RANI / random projections): pass a PRNG key")
            key = jax.random.key(0)  # unused by deterministic units
        feat_key, rani_key = jax.random.split(key)
        # Named scopes label the compiled ops (profiles, HLO dumps); they change nothing else.
        with jax.named_scope("normalize"):
            h = self.normalize(x.astype(jnp.float32))
        h = self.features(h, feat_key)
        if self.final_rani is not None:
            with jax.named_scope("final_rani"):
                h = self.final_rani(h, rani_key)
        with jax.named_scope("head"):
            if self.pool == "flatten":
                pooled = h.reshape(h.shape[0], -1)
            elif self.kind == "plain":
                pooled = normalize.mean_pool(h)
            else:
                pooled = normalize.sum_pool(h)
            return self.head(pooled)

    def pool_bound(self) -> float:
        if self.pool == "flatten" or self.kind != "plain":
            return 1.0
        return normalize.mean_pool_bound(self.final_hw)

    def body_bound(self) -> float:
        """Guaranteed l2 Lipschitz bound of x -> pooled features (the head's input)."""
        bound = self.normalize.lipschitz_bound() * self.features_bound()
        if self.final_rani is not None:
            bound *= self.final_rani.lipschitz_bound()
        return float(bound * self.pool_bound())

    def lipschitz_bound(self) -> float:
        """Guaranteed l2 Lipschitz bound of x -> logits in raw pixels, for every key."""
        return float(self.body_bound() * self.head.lipschitz_bound())

    def pair_bounds(self) -> np.ndarray:
        """(K, K) float64: entry (i, j) bounds the l2 Lipschitz constant of the
        unclipped margin z_i - z_j (module docstring); the diagonal is 0."""
        return pair_bounds(self.head.effective_weight(), self.body_bound())


POOLS = ("sum", "flatten")


def config_pool(cfg) -> str:
    """A model config's pooling; configs from before the choice: "sum"."""
    return cfg.get("pool", "sum")


def check_pool(pool: str) -> None:
    if pool not in POOLS:
        raise ValueError(f"unknown pool {pool!r}; known: {list(POOLS)}")


def pair_bounds(weight, body_bound: float) -> np.ndarray:
    """||w_i - w_j|| * body_bound for a head `x @ weight` (weight (C, K)), in float64,
    times `spectral.SAFETY` for the float32 rounding of the head's product."""
    w = np.asarray(weight, np.float64)
    diff = w[:, :, None] - w[:, None, :]
    return np.sqrt(np.sum(diff * diff, axis=0)) * body_bound * spectral.SAFETY

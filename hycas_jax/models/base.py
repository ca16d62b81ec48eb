"""The classifier shell shared by all backbones.

normalize -> backbone features -> [final RANI, budgeted placement only] ->
global pooling -> head. The public entry point checks its input once; inner
layers do not re-check.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from hycas_jax import checks
from hycas_jax.models.rani import RANI, config_spread
from hycas_jax.nn import normalize
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
        self.normalize = normalize.Normalize(cfg.mean, cfg.std)
        budgeted = cfg.kind == "hycas" and cfg.rani == "budgeted"
        self.final_rani = (RANI(channels, "residual", spread=config_spread(cfg), rngs=rngs)
                           if budgeted else None)
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
            pooled = normalize.mean_pool(h) if self.kind == "plain" else normalize.sum_pool(h)
            return self.head(pooled)

    def pool_bound(self) -> float:
        return normalize.mean_pool_bound(self.final_hw) if self.kind == "plain" else 1.0

    def lipschitz_bound(self) -> float:
        """Guaranteed l2 Lipschitz bound of x -> logits in raw pixels, for every key."""
        bound = self.normalize.lipschitz_bound() * self.features_bound()
        if self.final_rani is not None:
            bound *= self.final_rani.lipschitz_bound()
        return float(bound * self.pool_bound() * self.head.lipschitz_bound())

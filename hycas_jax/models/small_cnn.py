"""A small HyCAS CNN that trains in minutes on 2 CPU cores (28x28, 32x32).

units[i]: conv unit (widths[i], strides[i]) followed by a 1-Lipschitz
activation. One stage per unit, so `streams` has one entry per unit.
"""
from __future__ import annotations

import math

import jax
from flax import nnx

from hycas_jax.models.base import Classifier
from hycas_jax.models.units import make_unit, out_hw


class SmallCNN(Classifier):
    def __init__(self, cfg, *, rngs: nnx.Rngs):
        hw, channels = tuple(cfg.image_shape[:2]), cfg.image_shape[2]
        units = []
        for i, (width, stride) in enumerate(zip(cfg.widths, cfg.strides)):
            units.append(make_unit(cfg.kind, channels, width, input_hw=hw, stride=stride,
                                   streams=cfg.streams[i], cfg=cfg, rngs=rngs))
            hw, channels = out_hw(hw, stride), width
        self.units = nnx.List(units)
        self._init_shell(cfg, channels, hw, rngs)

    def features(self, h: jax.Array, key: jax.Array) -> jax.Array:
        for i, (unit, k) in enumerate(zip(self.units, jax.random.split(key, len(self.units)))):
            with jax.named_scope(f"unit{i}"):
                h = self.activation(unit(h, k))
        return h

    def features_bound(self) -> float:
        return math.prod(u.lipschitz_bound() for u in self.units)

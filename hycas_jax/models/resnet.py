"""The paper's ResNet-18-style HyCAS network.

stem unit -> 4 stages x `blocks_per_stage` basic blocks (widths 64/128/256/512,
strides 1/2/2/2) -> pooling -> head. A basic block is
`(1 - beta) * skip(x) + beta * act(unit2(act(unit1(x))))` with
`beta = sigmoid(logit)` (a scalar convex mix, so its bound is the convex mix
of the two branches' bounds). `skip` is the identity, or a 1x1 SNC (plain conv
for the plain kind) when the shape changes.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from hycas_jax.models.base import Classifier
from hycas_jax.models.units import make_unit, out_hw
from hycas_jax.nn.activations import get_activation
from hycas_jax.nn.conv import PlainConv, SNConv


class BasicBlock(nnx.Module):
    def __init__(self, in_channels, out_channels, *, input_hw, stride, streams, cfg,
                 rngs: nnx.Rngs):
        self.activation = get_activation("relu" if cfg.kind == "plain" else cfg.activation)
        mid_hw = out_hw(input_hw, stride)
        self.unit1 = make_unit(cfg.kind, in_channels, out_channels, input_hw=input_hw,
                               stride=stride, streams=streams, cfg=cfg, rngs=rngs)
        self.unit2 = make_unit(cfg.kind, out_channels, out_channels, input_hw=mid_hw, stride=1,
                               streams=streams, cfg=cfg, rngs=rngs)
        conv = PlainConv if cfg.kind == "plain" else SNConv
        reshape = stride != 1 or in_channels != out_channels
        self.skip = (conv(in_channels, out_channels, 1, input_hw=input_hw, stride=stride, rngs=rngs)
                     if reshape else None)
        self.mix_logit = nnx.Param(jnp.zeros((), jnp.float32))

    def __call__(self, x, key):
        k1, k2 = jax.random.split(key)
        out = self.activation(self.unit2(self.activation(self.unit1(x, k1)), k2))
        skip = x if self.skip is None else self.skip(x)
        beta = jax.nn.sigmoid(self.mix_logit[...])
        return (1.0 - beta) * skip + beta * out

    def lipschitz_bound(self) -> float:
        beta = float(jax.nn.sigmoid(self.mix_logit[...]))
        skip = 1.0 if self.skip is None else self.skip.lipschitz_bound()
        branch = self.unit1.lipschitz_bound() * self.unit2.lipschitz_bound()
        return (1.0 - beta) * skip + beta * branch


class ResNet18(Classifier):
    def __init__(self, cfg, *, rngs: nnx.Rngs):
        hw = tuple(cfg.image_shape[:2])
        self.stem = make_unit(cfg.kind, cfg.image_shape[2], cfg.widths[0], input_hw=hw, stride=1,
                              streams=cfg.streams[0], cfg=cfg, rngs=rngs)
        blocks, channels = [], cfg.widths[0]
        for stage, (width, stride) in enumerate(zip(cfg.widths, cfg.strides)):
            for i in range(cfg.blocks_per_stage):
                s = stride if i == 0 else 1
                blocks.append(BasicBlock(channels, width, input_hw=hw, stride=s,
                                         streams=cfg.streams[stage], cfg=cfg, rngs=rngs))
                hw, channels = out_hw(hw, s), width
        self.blocks = nnx.List(blocks)
        self._init_shell(cfg, channels, hw, rngs)

    def features(self, h, key):
        keys = jax.random.split(key, len(self.blocks) + 1)
        with jax.named_scope("stem"):
            h = self.activation(self.stem(h, keys[0]))
        for i, (block, k) in enumerate(zip(self.blocks, keys[1:])):
            with jax.named_scope(f"block{i}"):
                h = block(h, k)
        return h

    def features_bound(self) -> float:
        return self.stem.lipschitz_bound() * math.prod(b.lipschitz_bound() for b in self.blocks)

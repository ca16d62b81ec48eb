"""The conv unit a backbone is built from, chosen by the model kind.

* ``hycas``: a HyCAS block (streams + gate + RANI) per conv.
* ``lipschitz``: the deterministic Lipschitz baseline: the same block without
  RANI and without the random-projection stream.
* ``plain``: an unconstrained conv (the randomized-smoothing baseline).

Every unit is called as `unit(x, key)` and reports `lipschitz_bound()`.
"""
from __future__ import annotations

from typing import Sequence

import jax
from flax import nnx

from hycas_jax.models.block import HyCASBlock
from hycas_jax.models.rani import config_noise, config_spread
from hycas_jax.models.rpfan import config_form as rpfan_form
from hycas_jax.models.rpfan import config_random_weight
from hycas_jax.nn.conv import PlainConv, config_conv

KINDS = ("hycas", "lipschitz", "plain")


class PlainUnit(nnx.Module):
    def __init__(self, in_channels, out_channels, kernel_size, *, input_hw, stride, rngs):
        self.conv = PlainConv(in_channels, out_channels, kernel_size, input_hw=input_hw,
                              stride=stride, rngs=rngs)

    def __call__(self, x: jax.Array, key: jax.Array) -> jax.Array:
        del key
        return self.conv(x)

    def lipschitz_bound(self) -> float:
        return self.conv.lipschitz_bound()


def deterministic_streams(streams: Sequence[str]) -> tuple:
    kept = tuple(s for s in streams if s != "rpfan")
    return kept or ("sncan",)


def make_unit(kind: str, in_channels: int, out_channels: int, *, input_hw, stride: int,
              streams: Sequence[str], cfg, rngs: nnx.Rngs) -> nnx.Module:
    if kind == "plain":
        return PlainUnit(in_channels, out_channels, cfg.kernel_size, input_hw=input_hw,
                         stride=stride, rngs=rngs)
    if kind == "lipschitz":
        streams, rani = deterministic_streams(streams), "off"
    else:
        rani = cfg.rani
    return HyCASBlock(in_channels, out_channels, cfg.kernel_size, input_hw=input_hw,
                      stride=stride, streams=streams, rani=rani, dct_keep=cfg.dct_keep,
                      gate=cfg.get("gate", "learned"), rani_spread=config_spread(cfg),
                      rani_noise=config_noise(cfg),
                      rpfan=rpfan_form(cfg), rpfan_random_weight=config_random_weight(cfg),
                      conv=config_conv(cfg), rngs=rngs)


def out_hw(hw, stride: int):
    """Spatial size after a SAME-padded conv with `stride`."""
    return tuple(-(-s // stride) for s in hw)

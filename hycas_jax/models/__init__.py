"""The HyCAS model and its backbones, built from a model config.

One file per part: the streams `sncan`, `fdpan`, `rpfan` (each ending in RANI,
`rani`), the per-channel convex `gate`, the `block` that fuses them; the
`small_cnn` and `resnet` backbones over `units` of one kind (hycas, lipschitz,
plain), sharing the `base` classifier (normalization, head, bound). Every
module reports a guaranteed `lipschitz_bound()`.
"""
from hycas_jax.models.base import Classifier
from hycas_jax.models.block import HyCASBlock
from hycas_jax.models.factory import (
                                      ALL_STREAMS,
                                      BACKBONES,
                                      STREAM_SCHEDULES,
                                      build,
                                      default_config,
                                      validate,
)
from hycas_jax.models.fdpan import FDPAN
from hycas_jax.models.gate import ConvexGate
from hycas_jax.models.rani import RANI
from hycas_jax.models.rpfan import RPFAN
from hycas_jax.models.sncan import SNCAN

__all__ = ["ALL_STREAMS", "BACKBONES", "STREAM_SCHEDULES", "Classifier", "ConvexGate", "FDPAN",
           "HyCASBlock", "RANI", "RPFAN", "SNCAN", "build", "default_config", "validate"]

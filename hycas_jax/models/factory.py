"""Model construction from a model config: `build(cfg, *, key)`, `default_config`, `validate`.

The model config (`config.model` of an experiment, or a bare ConfigDict) has:

  backbone       'small_cnn' | 'resnet18'
  kind           'hycas' | 'lipschitz' | 'plain'   (see models/units.py)
  image_shape    (H, W, C) of raw-pixel inputs in [0, 1]
  num_classes
  widths, strides    one entry per unit (small_cnn) or per stage (resnet18)
  blocks_per_stage   resnet18 only
  streams        one tuple of stream names per unit/stage ('sncan', 'fdpan', 'rpfan')
  rani           'per_block' (paper) | 'budgeted' (global bound <= 2) | 'final' (<= 2,
                 one RANI at the end; models/block.py) | 'off'
  rani_spread    'floored' (the mask's spread has a floor) | 'free' (default when absent)
  rani_noise     how RANI draws omega: 'quantile16' (16 random bits per value, within
                 1e-5 of N(0, 1); hycas_jax/rng.py) | 'normal' (exact; default when absent)
  rpfan          'mixed' (learned + random filters) | 'depthwise' (default when absent)
  rpfan_random_weight   the random filters' weight a in the mixed form (0.1)
  conv           'snc' (spectral normalization, strided; default when absent) |
                 'aol' (AOL rescaling, space-to-depth downsampling; nn/aol.py)
  pool           'sum' (global sum pooling; default when absent) | 'flatten'
  kernel_size, dct_keep, activation ('maxmin' | 'groupsort4'), mean, std
"""
from __future__ import annotations

import jax
import ml_collections
from flax import nnx

from hycas_jax import rng
from hycas_jax.models.base import Classifier, check_pool, config_pool
from hycas_jax.models.block import check_gate, check_rani, check_streams
from hycas_jax.models.rani import check_spread, config_noise, config_spread
from hycas_jax.models.resnet import ResNet18
from hycas_jax.models.rpfan import check_form as check_rpfan
from hycas_jax.models.rpfan import config_form as rpfan_form
from hycas_jax.models.small_cnn import SmallCNN
from hycas_jax.models.units import KINDS
from hycas_jax.nn.activations import ACTIVATIONS
from hycas_jax.nn.conv import check_conv, config_conv

BACKBONES = {"small_cnn": SmallCNN, "resnet18": ResNet18}
ALL_STREAMS = ("sncan", "fdpan", "rpfan")
# ResNet-18's streams per stage. The paper puts all three at every convolution; the
# authors' notebook runs the frequency stream in stages 1-2 and the projections in 1-3.
STREAM_SCHEDULES = {
    "paper": (ALL_STREAMS,) * 4,
    "notebook": (ALL_STREAMS, ALL_STREAMS, ("sncan", "rpfan"), ("sncan",)),
}


def default_config(backbone: str = "small_cnn") -> ml_collections.ConfigDict:
    """A HyCAS model config for MNIST-sized inputs (small_cnn) or CIFAR-sized ones
    (resnet18). The input normalization is generic (mean 0.5, std 0.25 per channel):
    `hycas_jax.config.experiment` sets a data set's own (its DATASET_MODELS table)."""
    cfg = ml_collections.ConfigDict()
    cfg.backbone = backbone
    cfg.kind = "hycas"
    cfg.kernel_size = 3
    cfg.rani = "per_block"
    cfg.rani_spread = "floored"  # the mask keeps its noise (models/rani.py); "free": unbounded
    cfg.rani_noise = "quantile16"  # omega from 16 random bits (hycas_jax/rng.py); "normal": exact
    cfg.rpfan = "mixed"  # learned and random filters (models/rpfan.py); "depthwise": before
    cfg.rpfan_random_weight = 0.1  # the random filters' share of the mixed form's output
    cfg.dct_keep = 0.5
    cfg.conv = "snc"  # the streams' normalized convolution; "aol": nn/aol.py
    cfg.pool = "sum"  # or "flatten" (models/base.py)
    cfg.activation = "maxmin"
    cfg.gate = "learned"  # or "uniform": fixed equal stream weights (the no-gate ablation)
    if backbone == "resnet18":
        cfg.image_shape = (32, 32, 3)
        cfg.num_classes = 10
        cfg.widths = (64, 128, 256, 512)
        cfg.strides = (1, 2, 2, 2)
        cfg.blocks_per_stage = 2
        cfg.streams = STREAM_SCHEDULES["paper"]
    else:
        cfg.image_shape = (28, 28, 1)
        cfg.num_classes = 10
        # Downsample in the first unit: RANI draws one normal per feature, and
        # full-resolution features made random-number generation the main cost.
        cfg.widths = (16, 32, 64)
        cfg.strides = (2, 2, 1)
        cfg.streams = (ALL_STREAMS,) * 3
    channels = cfg.image_shape[2]
    cfg.mean, cfg.std = (0.5,) * channels, (0.25,) * channels
    return cfg


def validate(cfg) -> None:
    """Raises ValueError naming the first bad field of a model config."""
    if cfg.backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {cfg.backbone!r}; known: {sorted(BACKBONES)}")
    if cfg.kind not in KINDS:
        raise ValueError(f"unknown model kind {cfg.kind!r}; known: {list(KINDS)}")
    if cfg.kind != "plain" and cfg.activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {cfg.activation!r}; known: {sorted(ACTIVATIONS)}")
    check_rani(cfg.rani)
    check_spread(config_spread(cfg))
    rng.check_noise(config_noise(cfg))
    check_rpfan(rpfan_form(cfg))
    check_gate(cfg.get("gate", "learned"))
    check_conv(config_conv(cfg))
    check_pool(config_pool(cfg))
    if len(cfg.image_shape) != 3:
        raise ValueError(f"image_shape must be (H, W, C), got {cfg.image_shape}")
    if len(cfg.mean) != cfg.image_shape[2] or len(cfg.std) != cfg.image_shape[2]:
        raise ValueError(f"mean/std need one entry per channel ({cfg.image_shape[2]})")
    if cfg.num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {cfg.num_classes}")
    if not len(cfg.widths) == len(cfg.strides) == len(cfg.streams):
        raise ValueError("widths, strides and streams need one entry per unit/stage")
    for streams in cfg.streams:
        check_streams(streams)
    if cfg.kind != "plain":
        odd = [w for w in cfg.widths if w % 2]
        if odd:
            raise ValueError(f"widths must be even for the MaxMin/GroupSort activation, got {odd}")


def build(cfg, *, key: jax.Array) -> Classifier:
    """Builds the model a model config describes (an experiment's `config.model`, or
    `default_config(...)`). Parameters are drawn from `key`."""
    if "model" in cfg:
        raise ValueError("models.build takes a model config: pass config.model, not the "
                         "whole experiment config")
    validate(cfg)
    if not jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(key)  # legacy uint32 PRNGKey
    return BACKBONES[cfg.backbone](cfg, rngs=nnx.Rngs(params=key))

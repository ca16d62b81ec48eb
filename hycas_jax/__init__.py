"""hycas_jax: HyCAS (ICLR 2026) in JAX / Flax NNX.

The contract shared by every part of the library: a classifier is a pure
function `logits_fn(params, x, key) -> logits (B, num_classes)` of float32 NHWC
raw pixels in [0, 1] and a PRNG key. `functional(model)` turns a Flax NNX model
into that form; certification and attacks accept any such function. For
inference, `functional(freeze(model))` computes the weights that layers derive
from their parameters once instead of in every forward pass.
`network_bound(model)` is the model's guaranteed l2 Lipschitz bound.

Sub-packages: `nn` (primitives with guaranteed bounds), `models` (HyCAS and its
backbones), `certification`, `attacks`, `data`, `training`, `evaluation`,
`reporting`, `runtime`; `config` builds experiment configs.
"""
from hycas_jax.adapter import functional, logits_fn_for
from hycas_jax.nn import freeze, network_bound

__version__ = "0.1.0"
__all__ = ["freeze", "functional", "logits_fn_for", "network_bound"]

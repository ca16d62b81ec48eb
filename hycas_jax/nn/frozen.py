"""Inference form of a model: parameter-derived weights computed once.

Several layers derive the weight they apply from their parameters on every
call: an SNC divides its kernel by a power-iteration norm estimate, an
orthogonal mix is the matrix exponential of a skew generator, the Lipschitz
head divides by an SVD norm, the gate takes a softmax. Training needs that
(gradients flow through the derivation), inference does not. Inside a jitted
Monte Carlo loop XLA:CPU hoists the derivation out of the loop, but XLA:GPU
ran it again for every chunk: about 300 tiny kernels per chunk for the small
CNN, a large part of its certification time.

`freeze(model)` returns a copy whose derived weights are computed once, here,
and stored as `Frozen` variables that the layers then read. FDPAN also folds
its 1x1 orthogonal mix into the SNC kernel that follows it (two linear maps
in a row, one conv). The frozen model computes the same function, up to
float32 rounding, with the same keys; its `lipschitz_bound()` is computed
from the very arrays its forward pass applies. A frozen copy is for
inference only: its power iteration refuses to run, so a training step on it
fails; checkpoint the original.
"""
from __future__ import annotations

from typing import Callable, Optional

import jax
from flax import nnx

from hycas_jax.nn import dct


class Frozen(nnx.Variable):
    """A weight derived from parameters, computed once by `freeze` (not trained)."""


def frozen_or(module: nnx.Module, name: str, compute: Callable[[], jax.Array]) -> jax.Array:
    """The frozen value `module.<name>` when the module is frozen, else `compute()`."""
    value = getattr(module, name, None)
    return compute() if value is None else value[...]


def is_frozen(model: nnx.Module) -> bool:
    """Whether `model` (or any layer in it) holds frozen weights."""
    return any(isinstance(v, Frozen) for _, v in nnx.iter_graph(model))


def freeze(model: nnx.Module, *, lowpass_form: Optional[str] = None) -> nnx.Module:
    """A copy of `model` with every parameter-derived weight computed once (module
    docstring); a model already frozen is returned as it is. The argument is not
    changed. Layers that derive weights implement `freeze()`; it is called on each,
    children before parents.

    lowpass_form: how every FDPAN's DCT low-pass is computed in the copy (one of
    `dct.LOWPASS_FORMS`; None keeps the model's). Each form is the same linear
    map up to float32 rounding, so the bound and the certificates do not change;
    which is fastest depends on the device (the benchmark's `lowpass` section)."""
    if lowpass_form is not None:
        dct.check_lowpass_form(lowpass_form)
    already = is_frozen(model)
    if already and lowpass_form is None:
        return model
    model = nnx.clone(model)
    if not already:
        modules = [m for _, m in nnx.iter_modules(model)]
        for module in modules:  # iter_modules yields children before their parent
            if hasattr(module, "freeze"):
                module.freeze()
    if lowpass_form is not None:
        for _, module in nnx.iter_modules(model):
            if hasattr(module, "lowpass_form"):
                module.lowpass_form = lowpass_form
    return model

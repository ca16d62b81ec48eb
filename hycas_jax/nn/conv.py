"""Convolutions: the spectral-normalized convolution (SNC) and a plain conv.

SNC divides its kernel by a power-iteration estimate of the norm of the *conv
operator* (not of the reshaped kernel matrix). The iteration vector is kept as
state (`PowerIterate`) across training steps and advanced by
`power_iterate()`, outside the forward pass, so a forward pass is a pure
function of (params, state, x). The norm is estimated for the stride-1 conv:
that is the operator the guaranteed FFT bound measures, and striding (a
subsampling, norm 1) can only lower it. Because the estimate is a lower bound, the
effective kernel can have norm slightly above 1; `lipschitz_bound()` therefore
reports the guaranteed FFT bound of the effective kernel, never "1".
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hycas_jax.nn import spectral
from hycas_jax.nn.aol import AOLConv
from hycas_jax.nn.frozen import Frozen, frozen_or


class PowerIterate(nnx.Variable):
    """Power-iteration vector of an SNC: state, not a trainable parameter."""


def _conv_init(key, shape):
    fan_in = shape[0] * shape[1] * shape[2]
    return jax.random.normal(key, shape, jnp.float32) * np.sqrt(2.0 / fan_in)


class SNConv(nnx.Module):
    """Spectral-normalized conv: `conv(x, W / sigma(W)) + b`, NHWC -> NHWC.

    Args:
      in_channels, out_channels, kernel_size, stride: the conv's shape.
      input_hw: (H, W) of the input; the norm (and the bound) depend on it.
      init_iterations: power-iteration steps run at construction, so the very
        first forward pass is already close to norm 1.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *,
                 input_hw: Sequence[int], stride: int = 1, use_bias: bool = True,
                 init_iterations: int = 20, rngs: nnx.Rngs):
        self.stride = stride
        self.input_hw = tuple(int(s) for s in input_hw)
        shape = (kernel_size, kernel_size, in_channels, out_channels)
        self.kernel = nnx.Param(_conv_init(rngs.params(), shape))
        self.bias = nnx.Param(jnp.zeros((out_channels,), jnp.float32)) if use_bias else None
        v = jax.random.normal(rngs.params(), (1, *self.input_hw, in_channels), jnp.float32)
        self.v = PowerIterate(spectral.conv_power_iteration(
            v / jnp.linalg.norm(v), self.kernel[...], init_iterations))

    def sigma(self) -> jax.Array:
        """Power-iteration estimate of the stride-1 conv's operator norm."""
        return spectral.conv_norm_estimate(self.v[...], self.kernel[...], 1, "SAME")

    def effective_kernel(self) -> jax.Array:
        return frozen_or(self, "frozen_kernel", lambda: self.kernel[...] / self.sigma())

    def freeze(self) -> None:
        """Stores the effective kernel (see `hycas_jax.nn.frozen`)."""
        self.frozen_kernel = Frozen(self.effective_kernel())

    def power_iterate(self) -> None:
        """Advances the power-iteration state by one step (call once per train step)."""
        if getattr(self, "frozen_kernel", None) is not None:
            raise RuntimeError("this SNC is frozen for inference (hycas_jax.nn.frozen.freeze): "
                               "train the original model, not its frozen copy")
        kernel = jax.lax.stop_gradient(self.kernel[...])
        self.v[...] = spectral.power_iteration_step(self.v[...], lambda v: spectral.conv2d(v, kernel))

    def __call__(self, x: jax.Array, kernel: jax.Array | None = None) -> jax.Array:
        """conv(x, kernel) + bias; `kernel` defaults to the effective kernel (FDPAN's
        frozen form passes its folded one)."""
        with jax.named_scope("snc"):
            kernel = self.effective_kernel() if kernel is None else kernel
            y = spectral.conv2d(x, kernel, self.stride)
            return y if self.bias is None else y + self.bias[...]

    def fold_input_mix(self, q) -> jax.Array:
        """The kernel of `x -> self(x @ q)` (q: (in, in)): conv(x Q, W) = conv(x, Q W),
        (Q W)[i, j, a, o] = sum_b Q[a, b] W[i, j, b, o], formed in float64."""
        w = np.asarray(self.effective_kernel(), np.float64)
        return jnp.asarray(np.einsum("ab,ijbo->ijao", np.asarray(q, np.float64), w), jnp.float32)

    def lipschitz_bound(self, kernel=None) -> float:
        """Guaranteed bound of the conv with `kernel` (default: the effective kernel)."""
        kernel = self.effective_kernel() if kernel is None else kernel
        return spectral.conv_layer_bound(np.asarray(kernel), self.input_hw, self.stride)


class PlainConv(nnx.Module):
    """Unconstrained conv (the randomized-smoothing baseline's layer)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *,
                 input_hw: Sequence[int], stride: int = 1, rngs: nnx.Rngs):
        self.stride = stride
        self.input_hw = tuple(int(s) for s in input_hw)
        shape = (kernel_size, kernel_size, in_channels, out_channels)
        self.kernel = nnx.Param(_conv_init(rngs.params(), shape))
        self.bias = nnx.Param(jnp.zeros((out_channels,), jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        return spectral.conv2d(x, self.kernel[...], self.stride) + self.bias[...]

    def lipschitz_bound(self) -> float:
        return spectral.conv_layer_bound(np.asarray(self.kernel[...]), self.input_hw, self.stride)


CONV_FORMS = ("snc", "aol")


def config_conv(cfg) -> str:
    """A model config's normalized convolution; configs from before the choice: "snc"."""
    return cfg.get("conv", "snc")


def check_conv(form: str) -> None:
    if form not in CONV_FORMS:
        raise ValueError(f"unknown conv form {form!r}; known: {list(CONV_FORMS)}")


def make_conv(form: str, in_channels: int, out_channels: int, kernel_size: int, *,
              input_hw: Sequence[int], stride: int = 1, rngs: nnx.Rngs):
    """The normalized convolution of a stream: "snc" (spectral normalization by power
    iteration, strided) or "aol" (AOL rescaling, space-to-depth downsampling;
    `hycas_jax.nn.aol`). Both report a guaranteed `lipschitz_bound()`."""
    check_conv(form)
    cls = SNConv if form == "snc" else AOLConv
    return cls(in_channels, out_channels, kernel_size, input_hw=input_hw, stride=stride,
               rngs=rngs)


def power_iterate_all(model: nnx.Module) -> None:
    """Advances every SNC's power-iteration state inside `model` by one step."""
    for _, module in nnx.iter_modules(model):
        if isinstance(module, SNConv):
            module.power_iterate()

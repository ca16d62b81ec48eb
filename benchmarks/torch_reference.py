"""A PyTorch-eager re-implementation of the HyCAS small CNN and ResNet-18.

`from_jax(model)` copies the weights of a `hycas_jax` model (kind 'hycas',
MaxMin activation) into the same architecture written with torch ops, so the
benchmarks compare equal work. Layouts: torch runs NCHW (or channels_last);
JAX kernels are HWIO and features NHWC.

Randomness comes from a noise source passed to `forward`, asked in the order
the JAX model draws: `TorchNoise` uses torch's RNG (the speed benchmarks);
`ReplayNoise` replays JAX's own draws so a test can compare logits on the
same noise. RPFAN filters are drawn per sample, as in JAX's vmapped
certification, where every Monte Carlo sample has its own model key.

Trainable weights are torch Parameters and the effective weights (SNC kernel /
power-iteration sigma, expm orthogonal mixes, softmax gates, spectrally
normalized head) are derived from them on each call, so autograd trains the
same parametrization as JAX. `inference()` computes them once for a sampling
loop instead, as JAX's jitted chunk does.
"""
from __future__ import annotations

import contextlib
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hycas_jax import rng
from hycas_jax.models.fdpan import FDPAN
from hycas_jax.models.resnet import ResNet18
from hycas_jax.models.rpfan import RPFAN
from hycas_jax.models.sncan import SNCAN
from hycas_jax.nn import dct
from hycas_jax.nn.spectral import same_padding

RANI_FACTORS = {"residual": 1.0, "averaged": 0.5}


def _tensor(array) -> torch.Tensor:
    return torch.from_numpy(np.array(array, np.float32))


def _param(array) -> nn.Parameter:
    return nn.Parameter(_tensor(array))


# ------------------------------------------------------------------ noise

def _horner(coefficients, v):
    p = torch.full_like(v, coefficients[-1])
    for c in coefficients[-2::-1]:
        p = p * v + c
    return p


def quantile16_map(h: torch.Tensor) -> torch.Tensor:
    """`hycas_jax.rng.quantile16_map` in torch ops: float32 omega of 16-bit values held
    in an int32 tensor (0..65535)."""
    x = ((h & 0x7FFF) * 2 + 1).float() * 2.0 ** -16
    t = (1.0 - x * x).view(torch.int32)
    exponent = (t >> 23).float() - 127.0
    mantissa = ((t & 0x7FFFFF) | 0x3F800000).view(torch.float32) - 1.0
    w = -(exponent + _horner(rng.QUANTILE16_LOG2, mantissa) * mantissa)
    magnitude = x * _horner(rng.QUANTILE16_R, torch.sqrt(torch.clamp(w, min=0.0)))
    return torch.where((h & 0x8000) != 0, -magnitude, magnitude)


def quantile16_omega(like: torch.Tensor) -> torch.Tensor:
    """Values of `like`'s shape with the law of `hycas_jax.rng.quantile16`: uniform
    16-bit values through the same quantile map."""
    h = torch.randint(0, 65536, like.shape, dtype=torch.int32, device=like.device)
    return quantile16_map(h)


def randn_omega(like: torch.Tensor) -> torch.Tensor:
    return torch.randn_like(like)


_FASTEST = {}


def fastest_quantile16(device=None, size: int = 1 << 20, repeats: int = 5):
    """torch's fastest way to draw RANI's 'quantile16' omega on `device`: its own
    16-bit map (`quantile16_omega`) or plain `torch.randn` (exact normals, within the
    map's 1e-5 Kolmogorov distance of the same law); timed once per device, returns
    (name, function). The timing leaves torch's random state as it found it, so a seeded
    forward pass draws the same values whether or not it is the first."""
    device = torch.device(device or "cpu")
    if device not in _FASTEST:
        like = torch.empty(size, device=device)
        times = {}
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            for name, draw in (("randn", randn_omega), ("quantile16", quantile16_omega)):
                times[name] = _best_time(draw, like, device, repeats)
        name = min(times, key=times.get)
        _FASTEST[device] = (name, randn_omega if name == "randn" else quantile16_omega)
    return _FASTEST[device]


def _best_time(draw, like, device, repeats: int) -> float:
    draw(like)
    best = math.inf
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        draw(like)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


class TorchNoise:
    """Draws every omega and projection filter with torch's RNG, on `device`: RANI's
    omega the fastest way torch has for the model's noise form (`fastest_quantile16`)."""

    def __init__(self, device=None):
        self.device = device

    def omega(self, like: torch.Tensor, form: str = "normal") -> torch.Tensor:
        if form == "quantile16":
            return fastest_quantile16(like.device)[1](like)
        return torch.randn_like(like)

    def filters(self, n: int, channels: int, k: int) -> torch.Tensor:
        return torch.randn(n, channels, k, k, device=self.device)


class ReplayNoise:
    """Replays the standard-normal draws a JAX forward made, in call order.

    draws: arrays as JAX drew them, RANI omegas NHWC (B, H, W, C) and RPFAN
    filters HWIO (k, k, 1, C) shared by the batch.
    """

    def __init__(self, draws, device=None):
        self.draws = [np.array(d, np.float32) for d in draws]
        self.device = device

    def _next(self, ndim: int) -> torch.Tensor:
        if not self.draws:
            raise ValueError("the torch model asked for more noise than JAX drew")
        draw = self.draws.pop(0)
        if draw.ndim != ndim:
            raise ValueError(f"draw of shape {draw.shape} where a rank-{ndim} one was expected")
        return torch.from_numpy(draw).to(self.device)

    def omega(self, like: torch.Tensor, form: str = "normal") -> torch.Tensor:
        out = self._next(4).permute(0, 3, 1, 2)
        if out.shape != like.shape:
            raise ValueError(f"replayed omega {tuple(out.shape)} for features {tuple(like.shape)}")
        return out

    def filters(self, n: int, channels: int, k: int) -> torch.Tensor:
        out = self._next(4).permute(3, 2, 0, 1).reshape(1, channels, k, k)
        return out.expand(n, channels, k, k)


def recorded_forward(jax_model, x, key):
    """Eager forward of a JAX model -> (logits, every standard-normal draw in call order),
    the draws ready for `ReplayNoise` (the model draws with `hycas_jax.rng.normal` and
    `hycas_jax.rng.quantile16`)."""
    draws, originals = [], {name: getattr(rng, name) for name in ("normal", "quantile16")}

    def recording(draw):
        def record(*args, **kwargs):
            out = draw(*args, **kwargs)
            draws.append(np.asarray(out))
            return out
        return record

    for name, draw in originals.items():
        setattr(rng, name, recording(draw))
    try:
        logits = np.asarray(jax_model(x, key))
    finally:
        for name, draw in originals.items():
            setattr(rng, name, draw)
    return logits, draws


# ----------------------------------------------------------------- layers

class Cached(nn.Module):
    """A layer whose effective weights `weights()` can be frozen by `inference()`."""

    cache = None

    def effective(self):
        return self.weights() if self.cache is None else self.cache


class SNConv(Cached):
    """conv(x, W / sigma) + b with sigma = ||conv(v)|| / ||v|| (stride 1, SAME)."""

    def __init__(self, jax_conv):
        super().__init__()
        self.stride = jax_conv.stride
        self.kernel = _param(np.transpose(np.asarray(jax_conv.kernel[...]), (3, 2, 0, 1)))
        self.bias = _param(jax_conv.bias[...])
        self.register_buffer("v", _tensor(np.transpose(np.asarray(jax_conv.v[...]), (0, 3, 1, 2))))

    def weights(self):
        pad = self.kernel.shape[-1] // 2
        out = F.conv2d(self.v, self.kernel, padding=pad)
        return self.kernel / (out.norm() / (self.v.norm() + 1e-12))

    def forward(self, x):
        k = self.kernel.shape[-1]
        (hlo, hhi), (wlo, whi) = (same_padding(s, k, self.stride) for s in x.shape[2:])
        x = F.pad(x, (wlo, whi, hlo, hhi)) if max(hlo, hhi, wlo, whi) else x
        return F.conv2d(x, self.effective(), self.bias, stride=self.stride)

    @torch.no_grad()
    def power_iterate(self):
        """v <- A^T A v / ||A^T A v||, A the stride-1 SAME conv (JAX's vjp)."""
        pad = self.kernel.shape[-1] // 2
        back = F.conv_transpose2d(F.conv2d(self.v, self.kernel, padding=pad), self.kernel, padding=pad)
        self.v.copy_(back / (back.norm() + 1e-12))


class OrthogonalMix(Cached):
    """1x1 conv with expm(A - A^T)[:c_in, :c_out]."""

    def __init__(self, jax_mix):
        super().__init__()
        self.c_in, self.c_out = jax_mix.in_channels, jax_mix.out_channels
        self.generator = _param(jax_mix.generator[...])

    def weights(self):
        q = torch.linalg.matrix_exp(self.generator - self.generator.T)[: self.c_in, : self.c_out]
        return q.T.reshape(self.c_out, self.c_in, 1, 1)

    def forward(self, x):
        return F.conv2d(x, self.effective())


class RANI(nn.Module):
    def __init__(self, jax_rani):
        super().__init__()
        self.factor = RANI_FACTORS[jax_rani.form]
        self.noise_form = getattr(jax_rani, "noise", "normal")
        self.scale = _param(np.reshape(jax_rani.scale[...], (1, -1, 1, 1)))
        self.shift = _param(np.reshape(jax_rani.shift[...], (1, -1, 1, 1)))

    def forward(self, h, noise):
        out = h + h * torch.sigmoid(self.scale * noise.omega(h, self.noise_form) + self.shift)
        return out if self.factor == 1.0 else self.factor * out


def _rani(jax_stream):
    if jax_stream.rani is None:
        raise NotImplementedError("the reference implements HyCAS models with RANI only")
    return RANI(jax_stream.rani)


class SNCANStream(nn.Module):
    def __init__(self, jax_stream):
        super().__init__()
        self.conv, self.rani = SNConv(jax_stream.conv), _rani(jax_stream)

    def forward(self, x, noise):
        return self.rani(self.conv(x), noise)


class FDPANStream(nn.Module):
    def __init__(self, jax_stream):
        super().__init__()
        (h, w), keep = jax_stream.input_hw, jax_stream.dct_keep
        self.register_buffer("ph", _tensor(dct.lowpass_projection(h, keep)))
        self.register_buffer("pw_t", _tensor(dct.lowpass_projection(w, keep).T))
        self.mix, self.conv = OrthogonalMix(jax_stream.mix), SNConv(jax_stream.conv)
        self.rani = _rani(jax_stream)

    def forward(self, x, noise):
        low = torch.matmul(torch.matmul(self.ph, x), self.pw_t)
        return self.rani(self.conv(self.mix(low)), noise)


class RPFANStream(nn.Module):
    """Orthogonal pre-mix, then per-sample depthwise l1-normalized random filters."""

    def __init__(self, jax_stream):
        super().__init__()
        self.k, self.stride, self.channels = jax_stream.kernel_size, jax_stream.stride, jax_stream.channels
        self.mix, self.rani = OrthogonalMix(jax_stream.mix), _rani(jax_stream)

    def forward(self, x, noise):
        mixed = self.mix(x)
        b, c, h, w = mixed.shape
        filters = noise.filters(b, c, self.k)
        filters = filters / (filters.abs().sum(dim=(2, 3), keepdim=True) + 1e-12)
        # One grouped conv over (sample, channel) pairs: every sample its own filters,
        # padded as JAX pads SAME at this stride.
        (hlo, hhi), (wlo, whi) = (same_padding(size, self.k, self.stride) for size in (h, w))
        out = F.conv2d(F.pad(mixed.reshape(1, b * c, h, w), (wlo, whi, hlo, hhi)),
                       filters.reshape(b * c, 1, self.k, self.k), stride=self.stride, groups=b * c)
        return self.rani(out.reshape(b, c, *out.shape[2:]), noise)


STREAMS = {SNCAN: SNCANStream, FDPAN: FDPANStream, RPFAN: RPFANStream}


class Block(nn.Module):
    """Streams -> per-channel softmax gate -> post-fusion RANI."""

    def __init__(self, jax_block):
        super().__init__()
        self.streams = nn.ModuleList(STREAMS[type(s)](s) for s in jax_block.streams)
        self.gate_logits = _param(jax_block.gate.logits[...])
        self.post_rani = RANI(jax_block.post_rani)

    def forward(self, x, noise):
        alpha = torch.softmax(self.gate_logits, dim=0)[:, None, :, None, None]
        fused = sum(a * s(x, noise) for a, s in zip(alpha, self.streams))
        return self.post_rani(fused, noise)


def max_min(x):
    """MaxMin over channel pairs (2i, 2i+1): their max at 2i, their min at 2i + 1, as in JAX."""
    pairs = x.unflatten(1, (-1, 2))
    a, b = pairs[:, :, 0], pairs[:, :, 1]
    return torch.stack([torch.maximum(a, b), torch.minimum(a, b)], dim=2).flatten(1, 2)


class BasicBlock(nn.Module):
    """(1 - beta) * skip(x) + beta * act(unit2(act(unit1(x))))."""

    def __init__(self, jax_block):
        super().__init__()
        self.unit1, self.unit2 = Block(jax_block.unit1), Block(jax_block.unit2)
        self.skip = None if jax_block.skip is None else SNConv(jax_block.skip)
        self.mix_logit = _param(jax_block.mix_logit[...])

    def forward(self, x, noise):
        out = max_min(self.unit2(max_min(self.unit1(x, noise)), noise))
        skip = x if self.skip is None else self.skip(x)
        beta = torch.sigmoid(self.mix_logit)
        return (1.0 - beta) * skip + beta * out


class Classifier(Cached):
    """normalize -> units (small CNN) or stem + basic blocks (ResNet-18) ->
    [final RANI] -> sum pooling -> spectrally normalized linear head."""

    def __init__(self, jax_model):
        super().__init__()
        if jax_model.kind != "hycas" or jax_model.activation_name != "maxmin":
            raise NotImplementedError("the reference implements kind='hycas' with MaxMin only")
        channels = len(jax_model.normalize.mean)
        self.register_buffer("mean", torch.tensor(jax_model.normalize.mean).reshape(1, channels, 1, 1))
        self.register_buffer("std", torch.tensor(jax_model.normalize.std).reshape(1, channels, 1, 1))
        self.resnet = isinstance(jax_model, ResNet18)
        if self.resnet:
            self.stem = Block(jax_model.stem)
            self.units = nn.ModuleList(BasicBlock(b) for b in jax_model.blocks)
        else:
            self.units = nn.ModuleList(Block(u) for u in jax_model.units)
        self.final_rani = None if jax_model.final_rani is None else RANI(jax_model.final_rani)
        self.weight = _param(jax_model.head.weight[...])
        self.bias = _param(jax_model.head.bias[...])

    def weights(self):
        return self.weight / torch.linalg.matrix_norm(self.weight, ord=2)

    def forward(self, x, noise):
        """x: float (B, C, H, W) raw pixels -> logits (B, classes)."""
        h = (x - self.mean) / self.std
        if self.resnet:
            h = max_min(self.stem(h, noise))
            for block in self.units:
                h = block(h, noise)
        else:
            for unit in self.units:
                h = max_min(unit(h, noise))
        if self.final_rani is not None:
            h = self.final_rani(h, noise)
        pooled = h.sum(dim=(2, 3)) / math.sqrt(h.shape[2] * h.shape[3])
        return pooled @ self.effective() + self.bias

    @contextlib.contextmanager
    def inference(self):
        """No autograd, and every effective weight computed once for the whole block."""
        cached = [m for m in self.modules() if isinstance(m, Cached)]
        with torch.inference_mode():
            for m in cached:
                m.cache = m.weights()
            try:
                yield self
            finally:
                for m in cached:
                    m.cache = None

    def power_iterate(self):
        for m in self.modules():
            if isinstance(m, SNConv):
                m.power_iterate()


def from_jax(jax_model, device=None) -> Classifier:
    """The torch reference with the weights and power-iteration state of `jax_model`,
    on `device` (the CPU by default)."""
    return Classifier(jax_model).to(device or "cpu")


def device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


# ------------------------------------------------- Cohen et al.'s sampling loop

def sample_counts(model: Classifier, image: torch.Tensor, *, num: int, batch_size: int,
                  sigma: float, num_classes: int, channels_last: bool = False) -> np.ndarray:
    """Class counts of `num` noisy copies of one image (C, H, W), `batch_size` at a time."""
    device = device_of(model)
    image = image.to(device)
    counts = torch.zeros(num_classes, dtype=torch.long, device=device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    noise = TorchNoise(device)
    with model.inference():
        remaining = num
        while remaining > 0:
            b = min(batch_size, remaining)
            batch = image.unsqueeze(0).repeat(b, 1, 1, 1).contiguous(memory_format=fmt)
            logits = model(batch + sigma * torch.randn_like(batch), noise)
            counts += torch.bincount(logits.argmax(dim=1), minlength=num_classes)
            remaining -= b
    return counts.cpu().numpy()


def train_step(model: Classifier, optimizer, x, y, *, sigma: float, temperature: float) -> float:
    """One step as JAX trains: Gaussian input noise, CE on temperature * logits,
    backward, optimizer step, then one power-iteration update of every SNC."""
    logits = model(x + sigma * torch.randn_like(x), TorchNoise(x.device))
    loss = F.cross_entropy(temperature * logits, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    model.power_iterate()
    return float(loss.detach())

"""Shared benchmark helpers: interleaved timing, machine description, models.

Every ratio in the results comes from `interleaved`: the contenders run in
turn (A, B, A, B, ...) in one process and each is summarized by its median, so
load from other processes on a shared machine hits all of them alike.
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Callable, Dict

import flax
import jax
import numpy as np
from flax import nnx

from hycas_jax import config as experiments
from hycas_jax import models
from hycas_jax.training.loop import initial_state


# name -> experiment config of each benchmarked model (image shape in the name).
def _as_measured(config):
    """The architecture `RESULTS.md` measured and `torch_reference.py` implements: the
    all-random depthwise RPFAN, RANI's free mask parameters and, for ResNet-18, the notebook's
    stream schedule. (The faithful-HyCAS defaults, a mixed RPFAN with a learned conv, a
    floored RANI and all streams at every stage, are not benchmarked yet.) RANI draws omega
    as new configs do, `quantile16` (16 random bits per value)."""
    config.model.rpfan, config.model.rani_spread = "depthwise", "free"
    if config.model.backbone == "resnet18":
        config.model.streams = models.STREAM_SCHEDULES["notebook"]
    return config


CONFIGS = {
    "small_cnn 28x28x1": lambda: _as_measured(experiments.experiment("mnist5k")),
    "small_cnn 32x32x3": lambda: _as_measured(
        experiments.experiment("cifar10", backbone="small_cnn")),
    "resnet18 32x32x3": lambda: _as_measured(experiments.experiment("cifar10")),
}


def timed_rounds(contenders: Dict[str, Callable[[], object]], repeats: int) -> Dict[str, list]:
    """Seconds of each call of each contender, round by round (A, B, ..., A, B, ...),
    after one untimed warm-up call each."""
    for fn in contenders.values():
        fn()
    times = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def interleaved(contenders: Dict[str, Callable[[], object]], repeats: int) -> Dict[str, float]:
    """Median seconds per call of each contender, timed in interleaved rounds."""
    return medians(timed_rounds(contenders, repeats))


def medians(rounds: Dict[str, list]) -> Dict[str, float]:
    return {name: statistics.median(t) for name, t in rounds.items()}


def speedup(rounds: Dict[str, list], ours: str, others) -> tuple:
    """The best of `others` over `ours`, each ratio taken within one round:
    (median, lowest, highest) over the rounds. The spread is what this run's load
    did to the ratio."""
    ratios = [min(rounds[o][i] for o in others) / t for i, t in enumerate(rounds[ours])]
    return statistics.median(ratios), min(ratios), max(ratios)


def jax_model(name: str, rani_noise: str | None = None):
    """-> (experiment config, graphdef, train state, optax tx, nnx model) of a benchmarked model.
    rani_noise: override how its RANI draws omega (`hycas_jax.rng.NOISES`); the weights
    do not depend on it (the same initialization)."""
    config = CONFIGS[name]()
    if rani_noise is not None:
        config.model.rani_noise = rani_noise
    graphdef, state, tx = initial_state(config)
    model = nnx.merge(graphdef, state["params"], state["rest"])
    return config, graphdef, state, tx, model


def images(shape, count: int, seed: int = 0) -> np.ndarray:
    """Uniform raw-pixel images (count, H, W, C) in [0, 1]."""
    return np.random.default_rng(seed).uniform(0.0, 1.0, (count, *shape)).astype(np.float32)


def machine() -> dict:
    """CPU model, core count and library versions for the results header."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import jaxlib

    versions = {"jax": jax.__version__, "jaxlib": jaxlib.__version__, "flax": flax.__version__,
                "numpy": np.__version__}
    torch_threads = torch_device = None
    try:
        import torch
        versions["torch"] = torch.__version__
        torch_threads = torch.get_num_threads()
        torch_device = str(torch_reference_device())
        if torch.cuda.is_available():
            torch_device += f" ({torch.cuda.get_device_name()})"
    except ImportError:
        versions["torch"] = None
    return {"cpu": cpu, "cores": os.cpu_count(), "jax_backend": jax.default_backend(),
            "jax_device": str(jax.devices()[0]),
            "jax_device_kind": getattr(jax.devices()[0], "device_kind", ""),
            "torch_threads": torch_threads, "torch_device": torch_device, "versions": versions,
            "load_average_at_start": os.getloadavg()[0]}


def on_gpu() -> bool:
    """Whether JAX computes on a GPU (the benchmarks then run torch on CUDA too)."""
    return jax.default_backend() == "gpu"


def torch_reference_device():
    """The torch device of the reference: CUDA when JAX runs on a GPU, else the CPU."""
    import torch

    if on_gpu() and not torch.cuda.is_available():
        raise RuntimeError("JAX runs on a GPU but torch sees no CUDA device: the comparison "
                           "would not be on the same hardware")
    return torch.device("cuda" if on_gpu() else "cpu")


def best_chunks(contenders: dict, num: int) -> tuple[dict, dict]:
    """contenders: {label: {chunk: thunk}}. Times every (label, chunk) in interleaved
    rounds (one warm-up call, which compiles ours, then two timed) and returns each
    label's fastest chunk and the samples/s of every chunk tried."""
    flat = {(label, chunk): fn for label, by_chunk in contenders.items() for chunk, fn in by_chunk.items()}
    t = interleaved(flat, 2)
    rates = {label: {chunk: num / t[label, chunk] for chunk in by_chunk}
             for label, by_chunk in contenders.items()}
    return {label: max(r, key=r.get) for label, r in rates.items()}, rates

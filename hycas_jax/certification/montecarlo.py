"""Monte Carlo counting: the one vmapped pass that randomized smoothing, the
margin certificate and the attacks' vote rule all rest on.

A classifier is `logits_fn(params, x, key) -> logits (B, K)`: pure, jittable,
`x` float32 NHWC raw pixels in [0, 1], `key` a PRNG key (typed or legacy) from
which it draws all of its internal randomness. Sample j of a pass adds the
input noise N(0, sigma^2 I) (not clipped) and runs the classifier, both with
keys from `fold_in(key, j)`, j the global sample index, so results do not
depend on the chunk size or on the number of devices. The B images of one call
share each sample's model key (one forward pass of the whole batch per
sample): samples of one image stay iid, but an image's result depends on the
batch it was run with. For results that do not depend on the grouping, run
each image with its own key, e.g. `fold_in(key, image_index)`.

Counting is exact (int32 on device); sums of clipped logits come with a bound
on their float32 rounding error. Every entry point takes an optional `mesh`
that deals the chunks of samples over its devices (and hosts): the same
samples are drawn, so counts equal the one-device results exactly.
"""
from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from hycas_jax import checks, rng
from hycas_jax.runtime import distributed

LogitsFn = Callable[..., jax.Array]

# Unit roundoff of float32: bounds the rounding error of the on-device sums.
_F32_UNIT_ROUNDOFF = 2.0 ** -24


class MonteCarloStats(NamedTuple):
    """What one Monte Carlo pass over a batch of B images returns (host numpy).

    counts: int64 (B, K), how often each class was the argmax of the logits.
    logit_sum: float64 (B, K), sum over samples of clip(logits, -b, b).
    logit_sum_error: float, bound on the float32 rounding error of every
        `logit_sum` entry (inf when the logits were not clipped).
    num: int, number of samples.
    pair_square_sum: float64 (B, K, K) or None (not asked for): sum over samples
        of (clip(z_i) - clip(z_j))^2, the pairwise margins' second moments.
    pair_square_factor: float, with pair_square_sum: the exact sum is at most
        `pair_square_factor * pair_square_sum` (`_square_sum_factor`).
    """

    counts: np.ndarray
    logit_sum: np.ndarray
    logit_sum_error: float
    num: int
    pair_square_sum: np.ndarray | None = None
    pair_square_factor: float = 1.0


def _chunk_sums(logits_fn, params, x, keys, sigma, bound, *, num_classes, split, num,
                chunk_size, first, stride, rounds, axes=(), pair_moments=False):
    """Counts and clipped-logit sums of chunks first, first + stride, ... (`rounds` of them).

    The pass holds `num` samples in two parts: sample j < `split` is sample j of
    `keys[0]`'s stream, sample j >= split is sample j - split of `keys[-1]`'s.
    A part's draws depend on its own key and index alone, so a pass with both
    parts counts exactly what two separate passes would (Cohen's selection and
    estimation samples run in one executable). Chunk c holds samples
    [c * chunk_size, (c + 1) * chunk_size), masked at `num`, so any assignment
    of chunks to devices counts the same samples. `axes`: the shard_map mesh
    axes this runs under, if any. Returns int32 counts (2, B, K) and float32
    sums (2, B, K), one row per part.
    """
    batch = x.shape[0]
    lanes = jnp.arange(chunk_size)
    last_key = keys.shape[0] - 1

    def one_sample(j):
        second = j >= split
        key = keys[jnp.where(second, last_key, 0)]
        noise_key, model_key = jax.random.split(
            jax.random.fold_in(key, jnp.where(second, j - split, j)))
        with jax.named_scope("input_noise"):
            noisy = x + sigma * rng.normal(noise_key, x.shape, x.dtype)
        logits = logits_fn(params, noisy, model_key)
        if logits.shape != (batch, num_classes):  # checked once, at trace time
            raise ValueError(
                f"num_classes={num_classes} but logits_fn returned logits of shape "
                f"{logits.shape} for a batch of {batch}")
        return logits

    def chunk(r, carry):
        counts, sums = carry[:2]
        j = (first + r * stride) * chunk_size + lanes
        logits = jax.vmap(one_sample)(j)  # (chunk, B, K)
        # (2, chunk, 1, 1): which part each lane counts for; the tail past `num` in neither.
        part = jnp.stack([j < split, (j >= split) & (j < num)])[:, :, None, None]
        votes = jax.nn.one_hot(jnp.argmax(logits, axis=-1), num_classes, dtype=jnp.int32)
        clipped = jnp.clip(logits.astype(jnp.float32), -bound, bound)
        out = (counts + jnp.sum(jnp.where(part, votes, 0), axis=1),
               sums + jnp.sum(jnp.where(part, clipped, 0.0), axis=1))
        if pair_moments:
            diff = clipped[:, :, :, None] - clipped[:, :, None, :]  # (chunk, B, K, K)
            out += (carry[2] + jnp.sum(jnp.where(part[..., None], diff * diff, 0.0), axis=1),)
        return out

    init = (jnp.zeros((2, batch, num_classes), jnp.int32),
            jnp.zeros((2, batch, num_classes), jnp.float32))
    if pair_moments:
        init += (jnp.zeros((2, batch, num_classes, num_classes), jnp.float32),)
    if axes:  # each device's running sums differ: shard_map must type them as varying
        init = jax.lax.pcast(init, axes, to="varying")
    return jax.lax.fori_loop(0, rounds, chunk, init)


_STATIC = ("logits_fn", "num_classes", "split", "num", "chunk_size", "pair_moments")


@functools.partial(jax.jit, static_argnames=_STATIC)
def counting_pass(logits_fn, params, x, keys, sigma, bound, *, num_classes, split, num,
                 chunk_size, pair_moments=False):
    """The jitted pass on one device: `num` samples in chunks of `chunk_size` lanes.

    keys: (2, ...) or (1, ...) PRNG keys; samples j < split draw from keys[0],
    the others from keys[-1] (see `_chunk_sums`). Returns int32 counts and
    float32 clipped-logit sums, both (2, B, K), one row per part (and, with
    `pair_moments`, the (2, B, K, K) sums of squared pairwise differences).

    jit caches one executable per (logits_fn, shapes, num_classes, split, num,
    chunk_size); sigma and bound are traced, so changing them does not
    recompile.
    """
    return _chunk_sums(logits_fn, params, x, keys, sigma, bound, num_classes=num_classes,
                       split=split, num=num, chunk_size=chunk_size, first=0, stride=1,
                       rounds=-(-num // chunk_size), pair_moments=pair_moments)


@functools.partial(jax.jit, static_argnames=_STATIC + ("mesh",))
def _monte_carlo_sharded(logits_fn, params, x, keys, sigma, bound, *, num_classes, split, num,
                         chunk_size, mesh, pair_moments=False):
    """`counting_pass` with the chunks dealt round-robin over every device of `mesh`.

    Device d runs chunks d, d + D, ...; the int32 counts are summed across
    devices (exact), so they equal the one-device counts for the same keys.
    """
    axes, devices = tuple(mesh.axis_names), mesh.size
    rounds = -(-(-(-num // chunk_size)) // devices)

    def local(params, x, keys, sigma, bound):
        out = _chunk_sums(
            logits_fn, params, x, keys, sigma, bound, num_classes=num_classes, split=split,
            num=num, chunk_size=chunk_size, first=jax.lax.axis_index(axes), stride=devices,
            rounds=rounds, axes=axes, pair_moments=pair_moments)
        return tuple(jax.lax.psum(v, axes) for v in out)

    replicated = jax.sharding.PartitionSpec()
    outs = 3 if pair_moments else 2
    return jax.shard_map(local, mesh=mesh, in_specs=(replicated,) * 5,
                         out_specs=(replicated,) * outs)(params, x, keys, sigma, bound)


def _sum_error_bound(num: int, chunk_size: int, bound: float, devices: int = 1,
                     total: int | None = None) -> float:
    """Bound on |float32 sum - exact sum| of `num` terms in [-bound, bound], summed
    by a pass of `total` (default `num`) samples.

    Each term passes through at most (chunk_size - 1) additions inside its chunk,
    one per chunk its device runs in the carry, and (devices - 1) in the sum
    across devices, whatever order XLA reduces in, so the classic bound
    gamma_k * sum|v| with k = chunk_size + chunks per device + devices - 1 holds.
    """
    total = num if total is None else total
    if total == 1:  # one term: every addition adds an exact zero
        return 0.0
    return _gamma(chunk_size, total, devices) * num * bound


def _gamma(chunk_size: int, total: int, devices: int) -> float:
    """gamma_k = k u / (1 - k u) for the k additions a term passes through (above)."""
    k = chunk_size + -(-(-(-total // chunk_size)) // devices) + devices - 1
    return k * _F32_UNIT_ROUNDOFF / (1.0 - k * _F32_UNIT_ROUNDOFF)


def _square_sum_factor(chunk_size: int, total: int, devices: int) -> float:
    """F with (exact sum of squared differences) <= F * (float32 sum).

    A term is t = (a - b)^2 of two float32 clipped logits; the device computes
    fl(fl(a - b)^2) >= t (1 - u)^3. The terms are nonnegative, so the summed
    float32 value S satisfies |S - sum fl(t)| <= gamma_k sum fl(t), hence
    sum t <= S / ((1 - gamma_k) (1 - u)^3)."""
    u = _F32_UNIT_ROUNDOFF
    return 1.0 / ((1.0 - _gamma(chunk_size, total, devices)) * (1.0 - u) ** 3)


def run_passes(logits_fn, params, x, keys, nums, *, num_classes, sigma, chunk_size,
               logit_bound=math.inf, mesh=None,
               pair_moments: bool = False) -> tuple[MonteCarloStats, ...]:
    """One or two Monte Carlo passes (sample counts `nums`, keys `keys[i]`) as ONE
    jitted call, so a certification compiles a single executable. Inputs are
    already validated (x float32). `pair_moments`: also the sums of squared
    pairwise differences of the clipped logits (a finite `logit_bound` needed)."""
    total = sum(nums)
    split = nums[0]
    chunk_size = min(chunk_size, total)
    bound = float(np.float32(logit_bound))  # the clip really applied on device
    args = (logits_fn, params, x, keys, jnp.float32(sigma), jnp.float32(bound))
    static = dict(num_classes=num_classes, split=split, num=total, chunk_size=chunk_size,
                  pair_moments=bool(pair_moments))
    devices = 1 if mesh is None else mesh.size
    if mesh is None:
        out = counting_pass(*args, **static)
    else:
        params, x, keys = distributed.replicate((params, x, keys), mesh)
        out = _monte_carlo_sharded(logits_fn, params, x, keys, *args[4:], mesh=mesh, **static)
    counts, sums = np.asarray(out[0], np.int64), np.asarray(out[1], np.float64)
    squares = np.asarray(out[2], np.float64) if pair_moments else None
    factor = _square_sum_factor(chunk_size, total, devices)
    return tuple(MonteCarloStats(counts[i], sums[i],
                                 _sum_error_bound(num, chunk_size, bound, devices, total), num,
                                 None if squares is None else squares[i], factor)
                 for i, num in enumerate(nums))


def two_pass_stats(logits_fn: LogitsFn, params, x, key, *, num_classes: int, sigma: float,
                   num_first: int, num_second: int, chunk_size: int,
                   logit_bound: float = math.inf, mesh=None, pair_moments: bool = False):
    """Two independent Monte Carlo passes in one jitted call (one executable).

    With (k1, k2) = split(key), the result equals
    (sample_stats(..., k1, num=num_first), sample_stats(..., k2, num=num_second))
    in counts exactly (sums up to float32 rounding): Cohen's selection and
    estimation samples. Arguments as in `sample_stats`; `pair_moments` as in
    `run_passes`.
    """
    checks.validate_count(num_classes, "num_classes", 2)
    if not float(logit_bound) > 0.0:
        raise ValueError(f"logit_bound must be > 0, got {logit_bound}")
    nums = (checks.validate_count(num_first, "num_first"), checks.validate_count(num_second, "num_second"))
    return run_passes(logits_fn, params, checks.validate_images(x), jax.random.split(key), nums,
                      num_classes=num_classes, sigma=checks.validate_sigma(sigma, allow_zero=True),
                      chunk_size=checks.validate_count(chunk_size, "chunk_size"),
                      logit_bound=logit_bound, mesh=mesh, pair_moments=pair_moments)


def sample_stats(logits_fn: LogitsFn, params, x, key, *, num_classes: int, sigma: float,
                 num: int, chunk_size: int, logit_bound: float = math.inf,
                 mesh=None) -> MonteCarloStats:
    """Monte Carlo class counts and clipped-logit sums for a batch, in one pass.

    x: float (B, H, W, C) raw pixels in [0, 1]. Sample j adds its own noise
    N(0, sigma^2) (sigma = 0: no input noise) and runs the classifier with its
    own key, both from `fold_in(key, j)`. `chunk_size` samples are vmapped at a
    time, all chunks looped inside one jitted call; `num` need not be a
    multiple of `chunk_size`. `logit_bound` clips the logits to
    [-b, b] (b rounded to float32) before summing; inf sums raw logits.
    `mesh` (a `jax.sharding.Mesh`, None: one device) spreads the chunks over
    all its devices, across processes too; counts are then identical to the
    one-device counts and sums equal up to float32 rounding. On several
    processes, all must call with the same arguments.
    """
    checks.validate_count(num_classes, "num_classes", 2)
    if not float(logit_bound) > 0.0:
        raise ValueError(f"logit_bound must be > 0, got {logit_bound}")
    return run_passes(
        logits_fn, params, checks.validate_images(x), key[None], (checks.validate_count(num, "num"),),
        num_classes=num_classes, sigma=checks.validate_sigma(sigma, allow_zero=True),
        chunk_size=checks.validate_count(chunk_size, "chunk_size"), logit_bound=logit_bound,
        mesh=mesh)[0]


def sample_counts(logits_fn: LogitsFn, params, x, key, *, num_classes: int, sigma: float,
                  num: int, chunk_size: int, mesh=None) -> np.ndarray:
    """Monte Carlo class counts, int64 (B, num_classes); see `sample_stats`."""
    return sample_stats(logits_fn, params, x, key, num_classes=num_classes, sigma=sigma,
                        num=num, chunk_size=chunk_size, mesh=mesh).counts

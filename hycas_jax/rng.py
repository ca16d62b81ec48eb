"""Standard normals that equal `jax.random.normal` bit for bit, generated faster.

Every HyCAS forward pass draws one normal per feature (RANI) and per pixel
(input noise), so random-number generation is a first-order cost of Monte
Carlo certification and of training. JAX lowers its Threefry-2x32 hash on CPU
as a rolled loop (5 iterations of 4 rounds) to keep compile times small; the
loop cannot fuse with what consumes the bits, so every round reads and writes
whole arrays. `normal` below computes the same hash with the rounds unrolled
as plain uint32 arithmetic, which XLA fuses into the consumer and LLVM
vectorizes: about 6x faster per normal on a 2-core CPU (benchmarks/).

The result is identical to `jax.random.normal(key, shape, dtype)`: the same
hash (Threefry-2x32, 20 rounds), the same counters (the row-major element
index, as JAX's partitionable mode uses), the same bits-to-float map and the
same inverse-error-function transform. `tests/test_rng.py` checks equality
bit for bit. Where that cannot hold (a non-Threefry key, the legacy
non-partitionable Threefry mode, a non-float32 dtype, more than 2**32
elements) the call is simply forwarded to `jax.random.normal`.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)


def _rotl(x: jax.Array, d: int) -> jax.Array:
    return (x << np.uint32(d)) | (x >> np.uint32(32 - d))


def threefry2x32(k0: jax.Array, k1: jax.Array, x0: jax.Array, x1: jax.Array):
    """The Threefry-2x32 block cipher (20 rounds) of Salmon et al. (2011), unrolled.

    k0, k1: uint32 key words; x0, x1: uint32 counter words (broadcastable).
    Returns the two uint32 output words, equal to `jax.extend.random.threefry_2x32`.
    """
    ks = (k0, k1, k0 ^ k1 ^ _PARITY)
    x0, x1 = x0 + ks[0], x1 + ks[1]
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            x0 = x0 + x1
            x1 = _rotl(x1, r) ^ x0
        x0 = x0 + ks[(i + 1) % 3]
        x1 = x1 + ks[(i + 2) % 3] + np.uint32(i + 1)
    return x0, x1


def _fast_path(key, shape, dtype) -> bool:
    return (jnp.dtype(dtype) == jnp.float32
            and jax.dtypes.issubdtype(getattr(key, "dtype", None), jax.dtypes.prng_key)
            and jax.random.key_impl(key) == "threefry2x32"
            and bool(jax.config.jax_threefry_partitionable)
            and math.prod(shape) < 2 ** 32)


def bits(key: jax.Array, shape) -> jax.Array:
    """uint32 random bits, equal to `jax.random.bits(key, shape, jnp.uint32)` for a
    Threefry key in partitionable mode (the caller checks that)."""
    size = math.prod(shape)
    data = jax.random.key_data(key)
    lo = jax.lax.iota(jnp.uint32, size).reshape(shape)  # the element index; its high word is 0
    b0, b1 = threefry2x32(data[0], data[1], jnp.zeros_like(lo), lo)
    return b0 ^ b1


def normal(key: jax.Array, shape=(), dtype=jnp.float32, *, fusible: bool = True) -> jax.Array:
    """Standard normals of `shape`, equal to `jax.random.normal(key, shape, dtype)`.

    key: a single typed PRNG key (use `jax.vmap` for a batch of keys).
    fusible: False draws with `jax.random.normal` itself (the same numbers),
      whose rolled loop XLA's CPU backend keeps as a separate, materialized
      result. Use it for small arrays read many times (filters): XLA would
      otherwise fuse the hash into each consumer and recompute it per use.
    """
    shape = tuple(int(s) for s in shape)
    if not fusible or getattr(key, "shape", None) != () or not _fast_path(key, shape, dtype):
        return jax.random.normal(key, shape, dtype)
    # jax.random.uniform(key, shape, float32, nextafter(-1, 0), 1): 23 random
    # mantissa bits under exponent 0 give a float in [1, 2), shifted and scaled.
    mantissa = (bits(key, shape) >> np.uint32(32 - 23)) | np.float32(1.0).view(np.uint32)
    floats = jax.lax.bitcast_convert_type(mantissa, jnp.float32) - np.float32(1.0)
    lo = jnp.float32(np.nextafter(np.float32(-1.0), np.float32(0.0)))
    hi = jnp.float32(1.0)
    uniform = jax.lax.max(lo, floats * (hi - lo) + lo)
    return np.float32(np.sqrt(2)) * jax.lax.erf_inv(uniform)

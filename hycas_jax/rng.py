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

`quantile16` is the cheap draw for noise whose exact distribution no certificate
relies on (RANI's omega; never the input noise): two values per 32-bit random
word (its 16-bit halves) instead of one, and a short polynomial instead of the
inverse error function. Each value is the
standard normal quantile of a 16-bit uniform's midpoint, to within the
polynomial's error: its distribution is within 1e-5 of N(0, 1) in Kolmogorov
distance (7.6e-6 of it is the 16-bit grid), checked exhaustively over all 65,536
values by the tests. `internal_normal(key, shape, noise)` picks the form a model
config names (`NOISES`).
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


NOISES = ("normal", "quantile16")
# The quantile map of a 16-bit value (sign bit, 15-bit j): x = (2j + 1) / 65536,
# w = -log2(1 - x^2) with log2 from the float's exponent plus a degree-5 polynomial in
# its mantissa (no transcendental call), |omega| = x * R(sqrt(w)), R of degree 8. The
# product form keeps full relative accuracy near x = 0. Coefficients: least-squares
# fits reweighted toward the smallest largest error (log2 on [1, 2); R on the normal
# CDF at the result, over all 32,768 x, evaluated in float32 as below).
QUANTILE16_LOG2 = (1.4419656991958618, -0.7096642851829529, 0.41760125756263733,
                   -0.19627733528614044, 0.04638899862766266)
QUANTILE16_R = (1.253213882446289, 0.0015289266593754292, 0.21917511522769928,
                0.021904170513153076, -0.024346135556697845, 0.027262093499302864,
                -0.014056500978767872, 0.0030127849895507097, -0.00023110455367714167)


def check_noise(noise: str) -> None:
    if noise not in NOISES:
        raise ValueError(f"unknown internal noise {noise!r}; known: {list(NOISES)}")


def words(key: jax.Array, count: int) -> jax.Array:
    """`count` uint32 random words from a single key, equal to
    `jax.random.bits(key, (count,), jnp.uint32)` (the unrolled hash where it applies)."""
    if getattr(key, "shape", None) == () and _fast_path(key, (count,), jnp.float32):
        return bits(key, (count,))
    return jax.random.bits(key, (count,), jnp.uint32)


def _horner(coefficients, v, p=None):
    for c in coefficients[::-1]:
        p = np.float32(c) if p is None else p * v + np.float32(c)
    return p


def quantile16_map(h: jax.Array) -> jax.Array:
    """float32 omega of 16-bit values `h` (an unsigned integer array holding 0..65535):
    the top bit is the sign, the low 15 bits j give |omega| ~ Phi^-1((1 + x) / 2) with
    x = (2j + 1) / 65536. Elementwise arithmetic only (it fuses with the consumer)."""
    h = h.astype(jnp.uint32)
    x = ((h & np.uint32(0x7FFF)) * np.uint32(2) + np.uint32(1)).astype(jnp.float32)
    x = x * np.float32(2.0 ** -16)
    t = jax.lax.bitcast_convert_type(np.float32(1.0) - x * x, jnp.uint32)
    exponent = (t >> np.uint32(23)).astype(jnp.float32) - np.float32(127.0)
    mantissa = jax.lax.bitcast_convert_type((t & np.uint32(0x7FFFFF)) | np.uint32(0x3F800000),
                                            jnp.float32) - np.float32(1.0)
    w = -(exponent + _horner(QUANTILE16_LOG2, mantissa) * mantissa)  # -log2(1 - x^2) >= 0
    magnitude = x * _horner(QUANTILE16_R, jnp.sqrt(jnp.maximum(w, np.float32(0.0))))
    sign = (h >> np.uint32(15)) << np.uint32(31)
    return jax.lax.bitcast_convert_type(
        jax.lax.bitcast_convert_type(magnitude, jnp.uint32) | sign, jnp.float32)


def quantile16(key: jax.Array, shape=()) -> jax.Array:
    """float32 values of `shape`, two from each 32-bit random word (its 16-bit halves):
    within 1e-5 of N(0, 1) in Kolmogorov distance (module docstring). Not for input
    noise. A batch of keys: use `jax.vmap`."""
    shape = tuple(int(s) for s in shape)
    size = math.prod(shape)
    # XLA counts a remainder as expensive and does not duplicate an expensive producer
    # into a consumer that reads each of its elements twice (the 16-bit halves): the
    # words stay one materialized array, hashed once. Fused into the consumer instead,
    # each word's hash would run once per half. x % (2^32 - 1) changes one word of 2^32
    # (0xFFFFFFFF -> 0); LLVM lowers it without a division.
    w = jax.lax.rem(words(key, -(-size // 2)), np.uint32(0xFFFFFFFF))
    halves = jax.lax.bitcast_convert_type(w, jnp.uint16)
    return quantile16_map(halves.reshape(-1)[:size]).reshape(shape)


def internal_normal(key: jax.Array, shape, noise: str = "normal") -> jax.Array:
    """A model's internal noise of `shape` in the form its config names: 'normal'
    (`normal`, exactly N(0, 1)) or 'quantile16' (`quantile16`)."""
    if noise == "quantile16":
        return quantile16(key, shape)
    return normal(key, shape, jnp.float32)


# Key implementations a run may choose (config `prng_impl`): threefry2x32 gives the same
# numbers on every backend; rbg / unsafe_rbg use XLA's RngBitGenerator, fast on GPUs and
# TPUs, whose numbers depend on the backend (and, for unsafe_rbg, on how XLA compiles).
IMPLS = ("threefry2x32", "rbg", "unsafe_rbg")
DEFAULT_IMPL = "threefry2x32"


def check_impl(impl: str) -> str:
    if impl not in IMPLS:
        raise ValueError(f"unknown prng_impl {impl!r}; known: {list(IMPLS)}")
    return impl


def config_impl(config) -> str:
    """An experiment config's key implementation (a config from before the choice existed
    names none and used threefry2x32)."""
    return check_impl(config.get("prng_impl", DEFAULT_IMPL))


def key(seed: int, impl: str = DEFAULT_IMPL) -> jax.Array:
    """A typed PRNG key of implementation `impl` (`IMPLS`) from an integer seed."""
    return jax.random.key(seed, impl=check_impl(impl))

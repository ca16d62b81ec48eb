"""Training-time augmentation on the device, drawn from the training step's key.

`crop_flip` is the CIFAR recipe of the randomized-smoothing literature (Cohen et
al. included): a random 32x32 crop of the image zero-padded by 4 pixels, and a
horizontal flip with probability 1/2, drawn per image. It runs inside the jitted
step, so a resumed run draws exactly what an uninterrupted one would, and the
draws are made for the global batch, so they do not depend on the device count.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

AUGMENTATIONS = ("none", "crop_flip")


def check_augmentation(name: str) -> None:
    if name not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {name!r}; known: {list(AUGMENTATIONS)}")


def crop_flip(key: jax.Array, x: jax.Array, pad: int = 4) -> jax.Array:
    """Per image of NHWC `x`: a random crop of the `pad`-zero-padded image to x's size,
    then a horizontal flip with probability 1/2."""
    b, h, w, c = x.shape
    row_key, col_key, flip_key = jax.random.split(key, 3)
    padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    rows = jax.random.randint(row_key, (b,), 0, 2 * pad + 1)
    cols = jax.random.randint(col_key, (b,), 0, 2 * pad + 1)
    crop = jax.vmap(lambda image, i, j: jax.lax.dynamic_slice(image, (i, j, 0), (h, w, c)))(
        padded, rows, cols)
    flip = jax.random.bernoulli(flip_key, 0.5, (b,))
    return jnp.where(flip[:, None, None, None], crop[:, :, ::-1, :], crop)


def augment(name: str, key: jax.Array, x: jax.Array) -> jax.Array:
    """`x` augmented by the named augmentation ('none': unchanged)."""
    check_augmentation(name)
    return x if name == "none" else crop_flip(key, x)

"""Where certification time goes: the share of random-number generation.

Every RANI draws one standard normal per feature, and the input noise one per
pixel. This times a jitted chunk that draws exactly those normals (shapes
recorded from the model's own trace) against the full noisy forward chunk,
interleaved.
"""
from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp

import common
from hycas_jax import functional


@contextlib.contextmanager
def recorded_normal_shapes(shapes: list):
    """Appends the shape of every `jax.random.normal` call made inside the block."""
    normal = jax.random.normal

    def recording(key, shape=(), *args, **kwargs):
        shapes.append(tuple(shape))
        return normal(key, shape, *args, **kwargs)

    jax.random.normal = recording
    try:
        yield shapes
    finally:
        jax.random.normal = normal


def rng_share(name: str, *, chunk: int, repeats: int) -> dict:
    config, _, _, _, model = common.jax_model(name)
    logits_fn, params = functional(model)
    image = jnp.asarray(common.images(config.model.image_shape, 1))
    with recorded_normal_shapes([]) as shapes:
        jax.eval_shape(logits_fn, params, image, jax.random.key(0))
    shapes = [image.shape] + shapes  # the input noise

    def forward(params, keys):
        one = lambda k: logits_fn(params, image + 0.25 * jax.random.normal(k, image.shape), k)
        return jax.vmap(one)(keys)

    def draws(keys):
        one = lambda k: sum(jax.random.normal(jax.random.fold_in(k, i), s).sum()
                            for i, s in enumerate(shapes))
        return jax.vmap(one)(keys)

    keys = jax.random.split(jax.random.key(1), chunk)
    forward, draws = jax.jit(forward), jax.jit(draws)
    t = common.interleaved({"forward": lambda: forward(params, keys).block_until_ready(),
                            "normals": lambda: draws(keys).block_until_ready()}, repeats)
    per_sample = sum(int(jnp.prod(jnp.array(s))) for s in shapes)
    return {"model": name, "chunk": chunk, "normals_per_sample": per_sample,
            "forward_s": t["forward"], "normals_s": t["normals"],
            "rng_share_of_forward": t["normals"] / t["forward"],
            "ns_per_normal": t["normals"] / (chunk * per_sample) * 1e9}

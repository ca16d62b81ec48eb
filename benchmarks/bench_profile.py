"""Where certification time goes: the share of random-number generation.

Every RANI draws one standard normal per feature, and the input noise one per
pixel. This times a jitted chunk that draws exactly those normals (shapes
recorded from the model's own trace) against the full noisy forward chunk,
interleaved; the normals are drawn both with `hycas_jax.rng.normal` (what the
model uses) and with `jax.random.normal` (the same numbers, JAX's CPU lowering).
"""
from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp

import common
from hycas_jax import functional, rng


@contextlib.contextmanager
def recorded_normal_shapes(shapes: list):
    """Appends the shape of every `hycas_jax.rng.normal` call made inside the block."""
    normal = rng.normal

    def recording(key, shape=(), *args, **kwargs):
        shapes.append(tuple(shape))
        return normal(key, shape, *args, **kwargs)

    rng.normal = recording
    try:
        yield shapes
    finally:
        rng.normal = normal


def rng_share(name: str, *, chunk: int, repeats: int) -> dict:
    config, _, _, _, model = common.jax_model(name)
    logits_fn, params = functional(model)
    image = jnp.asarray(common.images(config.model.image_shape, 1))
    with recorded_normal_shapes([]) as shapes:
        jax.eval_shape(logits_fn, params, image, jax.random.key(0))
    shapes = [image.shape] + shapes  # the input noise

    def forward(params, keys):
        one = lambda k: logits_fn(params, image + 0.25 * rng.normal(k, image.shape), k)
        return jax.vmap(one)(keys)

    def draws(normal):
        def run(keys):
            one = lambda k: sum(normal(jax.random.fold_in(k, i), s).sum() for i, s in enumerate(shapes))
            return jax.vmap(one)(keys)
        return jax.jit(run)

    keys = jax.random.split(jax.random.key(1), chunk)
    forward, ours, jaxs = jax.jit(forward), draws(rng.normal), draws(jax.random.normal)
    t = common.interleaved({"forward": lambda: forward(params, keys).block_until_ready(),
                            "normals": lambda: ours(keys).block_until_ready(),
                            "jax_normals": lambda: jaxs(keys).block_until_ready()}, repeats)
    per_sample = sum(int(jnp.prod(jnp.array(s))) for s in shapes)
    return {"model": name, "chunk": chunk, "normals_per_sample": per_sample,
            "forward_s": t["forward"], "normals_s": t["normals"],
            "rng_share_of_forward": t["normals"] / t["forward"],
            "ns_per_normal": t["normals"] / (chunk * per_sample) * 1e9,
            "jax_random_ns_per_normal": t["jax_normals"] / (chunk * per_sample) * 1e9}

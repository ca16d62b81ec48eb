"""1-Lipschitz, gradient-norm-preserving activations (Anil et al., 2019)."""
import jax
import jax.numpy as jnp


def group_sort(x: jax.Array, group_size: int = 2) -> jax.Array:
    """Sorts each group of `group_size` consecutive channels (last axis).

    A permutation of the input on every linear piece, so the map is 1-Lipschitz
    and preserves gradient norm. group_size=2 is MaxMin.
    """
    channels = x.shape[-1]
    if channels % group_size:
        raise ValueError(f"channel count {channels} is not divisible by group_size {group_size}")
    grouped = x.reshape(*x.shape[:-1], channels // group_size, group_size)
    return jnp.sort(grouped, axis=-1).reshape(x.shape)


def max_min(x: jax.Array) -> jax.Array:
    """MaxMin: GroupSort with groups of two, written without a sort."""
    a, b = jnp.split(x.reshape(*x.shape[:-1], -1, 2), 2, axis=-1)
    return jnp.concatenate([jnp.maximum(a, b), jnp.minimum(a, b)], axis=-1).reshape(x.shape)


ACTIVATIONS = {"maxmin": max_min, "groupsort4": lambda x: group_sort(x, 4), "relu": jax.nn.relu}


def get_activation(name: str):
    """Looks up an activation by name; all of them are 1-Lipschitz."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]

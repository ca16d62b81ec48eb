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


def _max_min_primal(x: jax.Array) -> jax.Array:
    # Pairwise max and min as windowed reductions: XLA materializes their input
    # once. The slice-and-concatenate form made XLA fuse each block's whole
    # producer chain (random-number generation included) into the activation
    # and evaluate it twice per element, unvectorized.
    window = (1,) * (x.ndim - 1) + (2,)
    hi = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, window, window, "VALID")
    lo = jax.lax.reduce_window(x, jnp.inf, jax.lax.min, window, window, "VALID")
    return jnp.stack([hi, lo], axis=-1).reshape(x.shape)


def _max_min_slices(x: jax.Array) -> jax.Array:
    a, b = jnp.split(x.reshape(*x.shape[:-1], -1, 2), 2, axis=-1)
    return jnp.concatenate([jnp.maximum(a, b), jnp.minimum(a, b)], axis=-1).reshape(x.shape)


@jax.custom_jvp
def max_min(x: jax.Array) -> jax.Array:
    """MaxMin: GroupSort with groups of two (each consecutive channel pair sorted
    in descending order), written without a sort."""
    if x.shape[-1] % 2:
        raise ValueError(f"MaxMin needs an even channel count, got {x.shape[-1]}")
    return _max_min_primal(x)


@max_min.defjvp
def _max_min_jvp(primals, tangents):
    # The tangent of the elementwise form (selects, ties split as jnp.maximum
    # does); its transpose is elementwise too, where the windowed reductions'
    # would be a select-and-scatter, the slow backward of max pooling.
    (x,), (t,) = primals, tangents
    return max_min(x), jax.jvp(_max_min_slices, (x,), (t,))[1]


ACTIVATIONS = {"maxmin": max_min, "groupsort4": lambda x: group_sort(x, 4), "relu": jax.nn.relu}


def get_activation(name: str):
    """Looks up an activation by name; all of them are 1-Lipschitz."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]

"""Devices and hosts: JAX multi-process start-up, the device mesh, and moving
host data onto it.

One code path serves one CPU, one accelerator host and a multi-host pod: the
mesh spans `jax.devices()` (all processes' devices), batches are sharded along
its `data` axis, parameters are replicated. On one device every sharding is
trivial and the results match a run that never heard of meshes.
"""
from __future__ import annotations

from typing import Mapping, Optional

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA = "data"


def initialize(coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
               process_id: Optional[int] = None, *, auto: bool = False) -> None:
    """Starts `jax.distributed` for a multi-process run; call before any JAX computation.

    With any explicit argument, they are passed on (the rest is auto-detected,
    as is `JAX_COORDINATOR_ADDRESS`). With none, `auto=True` lets JAX detect
    the cluster (Cloud TPU pod slices, SLURM, Open MPI, ...); otherwise this
    is a single-process run and nothing happens.
    """
    explicit = (coordinator_address, num_processes, process_id) != (None, None, None)
    if explicit or auto:
        jax.distributed.initialize(coordinator_address, num_processes, process_id)


def make_mesh(axes: Mapping[str, int], devices=None) -> Mesh:
    """A mesh from {axis name: size}, e.g. {'data': -1, 'model': 1}.

    One size may be -1: it takes the devices the others leave. The product
    must divide the device count; a smaller mesh uses the first devices
    (handy for comparing against fewer devices). Axes are `Auto`, so jit
    propagates shardings (the default, Explicit, would change array typing).
    """
    devices = jax.devices() if devices is None else list(devices)
    names, sizes = tuple(axes), [int(s) for s in axes.values()]
    if DATA not in names:
        raise ValueError(f"the mesh needs a {DATA!r} axis, got axes {names}")
    if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
        raise ValueError(f"mesh sizes must be positive, at most one -1; got {dict(axes)}")
    known = int(np.prod([s for s in sizes if s != -1]))
    if len(devices) % known:
        raise ValueError(f"mesh {dict(axes)} does not fit {len(devices)} devices")
    sizes = [len(devices) // known if s == -1 else s for s in sizes]
    return jax.make_mesh(tuple(sizes), names, axis_types=(AxisType.Auto,) * len(names),
                         devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the mesh's data axis."""
    return NamedSharding(mesh, P(DATA))


def replicate(tree, mesh: Mesh):
    """Puts a pytree of arrays, equal on every process, on every device of `mesh`.

    Built from each process's own copy (no cross-host transfer), which is
    why every process must hold the same values, e.g. from the same seed.
    """
    sharding = replicated(mesh)

    def put(x):
        if isinstance(x, jax.Array) and x.sharding == sharding:
            return x  # already there: no host round trip
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            impl = jax.random.key_impl(x)
            return jax.random.wrap_key_data(put(jax.random.key_data(x)), impl=impl)
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put, tree)


def local_copy(tree):
    """Replicated global arrays -> this process's copy on its first device.

    For host-side work such as the Lipschitz bound's many small eager ops,
    which on a mesh would each compile for every device.
    """
    return jax.tree.map(lambda x: x.addressable_data(0), tree)


def global_batch(local: Mapping[str, np.ndarray], mesh: Mesh) -> dict:
    """This process's share of a batch -> global arrays sharded over `data`.

    Process p's rows land on p's devices; the global batch is the processes'
    shares in mesh order (process order for `jax.make_mesh` on CPU and GPU).
    """
    sharding = data_sharded(mesh)
    out = {}
    for name, x in local.items():
        x = np.asarray(x)
        shape = (x.shape[0] * jax.process_count(), *x.shape[1:])
        out[name] = jax.make_array_from_process_local_data(sharding, x, shape)
    return out


def check_divisible(batch_size: int, mesh: Mesh, what: str = "batch_size") -> None:
    """A global batch must split evenly over the data axis and the processes."""
    parts = int(np.lcm(mesh.shape[DATA], jax.process_count()))
    if batch_size % parts:
        raise ValueError(f"{what} {batch_size} must be a multiple of {parts} (data axis "
                         f"{mesh.shape[DATA]}, {jax.process_count()} processes)")


def local_model(model):
    """A model whose arrays are global (replicated over a multi-process mesh) -> the same
    model on this process's first device, for host-side work (freezing, bounds)."""
    from flax import nnx
    graphdef, state = nnx.split(model)
    return nnx.merge(graphdef, local_copy(state))


def from_process_zero(tree):
    """Process 0's value of a pytree of numpy arrays, on every process (identity on one)."""
    if jax.process_count() == 1:
        return tree
    from jax.experimental import multihost_utils
    return multihost_utils.broadcast_one_to_all(tree)

"""Device mesh and shardings for data-parallel training on one or many hosts.

The mesh has one axis, ``data``: batches are split along it and the train state is
replicated.  Arrays are built from process-local data, so each host loads only its own
slice of every global batch.
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over all devices."""
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def check_global_batch(global_batch: int, mesh: Mesh) -> int:
    """Validate the global batch against the devices and hosts; returns the per-host batch."""
    n_dev, n_proc = mesh.devices.size, jax.process_count()
    if global_batch <= 0:
        raise ValueError(f"batch_size must be positive, got {global_batch}")
    if global_batch % n_dev:
        raise ValueError(f"batch_size={global_batch} is not divisible by the number of devices "
                         f"({n_dev}); use a multiple of {n_dev}")
    return global_batch // n_proc


def host_slice(global_batch: int) -> slice:
    """The contiguous part of a global batch that this process loads."""
    per_host = global_batch // jax.process_count()
    start = jax.process_index() * per_host
    return slice(start, start + per_host)


def global_array(local: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """Assemble a global array from this process's slice of the leading axis."""
    return jax.make_array_from_process_local_data(sharding, local)


def replicate(tree, mesh: Mesh):
    return jax.device_put(tree, replicated(mesh))

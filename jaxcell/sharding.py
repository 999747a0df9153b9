"""Multi-device runs: split the fields along the grid's first axis with JAX's own sharding."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxcell._node import replace
from jaxcell.model import State


def _auto_mesh(mesh: Mesh) -> Mesh:
    """The same devices and axis names with automatic axis types.

    Meshes from ``jax.make_mesh`` may carry explicit axis types, under which some
    resharding inside the solvers (the transposes for the solves along the split axis)
    is refused; sharding propagation needs the automatic kind.
    """
    return Mesh(np.asarray(mesh.devices), tuple(mesh.axis_names))


def shard(state: State, mesh: Mesh, axis: str | None = None) -> State:
    """Place ``state`` on ``mesh``: fields split along the grid's first axis, the rest replicated.

    Args:
        state: from ``model.init``.
        mesh: a ``jax.sharding.Mesh`` or a mesh from ``jax.make_mesh`` (explicit
            axis types are accepted).
        axis: mesh axis to split over (default: the mesh's first axis).

    :func:`jaxcell.simulate` then runs with XLA's sharding propagation, which
    inserts the halo exchanges of the stencils; line solves and transforms
    along the split axis run on the field transposed to a split along axis 1
    (all-to-all each way), so no device ever holds the whole field. Results
    equal the single-device run to round-off. When the grid's
    first axis does not divide by the number of devices, the fields are stored
    replicated between calls (an array cannot be placed unevenly) and split
    inside :func:`jaxcell.simulate`, where XLA pads the axis.
    """
    if not isinstance(state, State):
        raise ValueError("shard(state, mesh) needs the jc.State from model.init()")
    if not hasattr(mesh, "axis_names") or not mesh.axis_names:
        raise ValueError("mesh must be a jax.sharding.Mesh, e.g. jax.make_mesh((jax.device_count(),), ('x',))")
    mesh = _auto_mesh(mesh)
    name = axis or mesh.axis_names[0]
    if name not in mesh.axis_names:
        raise ValueError(f"axis {name!r} is not an axis of the mesh {tuple(mesh.axis_names)}")
    n_dev = mesh.shape[name]
    split = state.fields.shape[1] % n_dev == 0
    spec = PartitionSpec(None, name) if split else PartitionSpec()
    fields = jax.device_put(state.fields, NamedSharding(mesh, spec))
    rep = NamedSharding(mesh, PartitionSpec())
    rest = jax.tree_util.tree_map(lambda x: jax.device_put(jnp.asarray(x), rep),
                                  (state.t, state.cells, state.totals, state.steps, state.compartments,
                                   state.compartment_volumes))
    matrix = None if state.matrix is None else jax.device_put(state.matrix, NamedSharding(mesh, spec))
    return replace(state, fields=fields, t=rest[0], cells=rest[1], totals=rest[2], steps=rest[3], matrix=matrix,
                   compartments=rest[4], compartment_volumes=rest[5],
                   sharding=NamedSharding(mesh, PartitionSpec(None, name)))

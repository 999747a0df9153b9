"""Cell exchange: what the cells secrete into and take up from each voxel.

The cells' per-cell rates (``Cells.secretion``, ``uptake``, ``saturation``,
``saturation_rate``) are deposited on the grid with the coupling weights as
per-voxel rates (:class:`Exchange`). The solvers then integrate them together
with transport (implicit, explicit, lod) or in exact local half-steps around
it (spectral, :func:`exact_exchange`). The step recomputes the exchange
whenever a stage before it may have changed rates, positions or ``alive``
(:mod:`jaxcell.step`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxcell.cells import Cells, deposit
from jaxcell.operators import phi1, phi2


class Exchange(NamedTuple):
    """Per-voxel cell exchange of one substrate (all ``grid.shape``).

    clearance: 1/s (uptake + saturation rate, summed over cells / voxel volume);
    sat_source: amount/(µm^ndim·s) (saturation rate × target density);
    export: amount/(µm^ndim·s) zero-order secretion.
    """

    clearance: jax.Array
    sat_source: jax.Array
    export: jax.Array


def cell_exchange(model: Any, cells: Cells, idx: jax.Array, w: jax.Array) -> list[Exchange]:
    """Per-substrate :class:`Exchange` of ``cells`` coupled to the grid by ``(idx, w)``."""
    grid = model.grid
    vol = grid.voxel_volume
    clear = deposit(grid, idx, w, cells.uptake + cells.saturation_rate) / vol
    sat = deposit(grid, idx, w, cells.saturation_rate * cells.saturation) / vol
    export = deposit(grid, idx, w, cells.secretion) / vol
    return [Exchange(clear[i], sat[i], export[i]) for i in range(model.n_substrates)]


def exact_exchange(c: jax.Array, ex: Exchange, dt: jax.Array, vol: float) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Exact solution of dc/dt = −λc + s over dt per voxel; returns (c', secreted, uptake) amounts."""
    lam = ex.clearance
    s = ex.sat_source + ex.export
    z = -lam * dt
    p1 = phi1(z)  # accurate at any z (1 + z·φ2 cancels in float32 at large −z and can turn negative)
    # φ2 derived from φ1 (= (φ1 − 1)/z) so that the amounts balance exactly
    small = jnp.abs(z) < 1e-2
    p2 = jnp.where(small, phi2(z), (p1 - 1) / jnp.where(small, 1.0, z))
    integral = c * dt * p1 + s * dt**2 * p2  # ∫ c dt over the step
    new = c + dt * p1 * (s - lam * c)
    return new, jnp.sum(s) * dt * vol, jnp.sum(lam * integral) * vol

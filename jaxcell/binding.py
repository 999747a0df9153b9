"""Ligand-receptor binding as an exact local step, and responses of cells to it.

Over a step of length dt the ligand concentration seen by a cell is frozen at
the backward-Euler estimate ``L* = (L + dt·Σ koff·C/V) / (1 + dt·Σ kon·R/V)``
(exact at binding equilibrium, damped where receptors would deplete the voxel
within the step), and the linear
receptor system

    d/dt [R, C] = A [R, C] + [synthesis, 0],
    A = [[−(kon L* + turnover), koff], [kon L*, −(koff + kint)]]

is integrated exactly with the matrix φ-functions of A (real eigenvalues, see
Lauffenburger & Linderman, *Receptors*, ch. 2). The ligand taken from the voxel
is ``kon L* ∫R − koff ∫C``, so ligand and receptors are conserved to round-off.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcell._node import as_float, is_concrete, node, replace, static_field
from jaxcell.cells import Cells, Receptors, deposit, gather
from jaxcell.grid import Grid
from jaxcell.operators import phi2


def _phi2_prime(z: jax.Array) -> jax.Array:
    """d/dz of (e^z − 1 − z)/z²."""
    small = jnp.abs(z) < 5e-2
    zs = jnp.where(small, 1.0, z)
    p2 = phi2(zs)
    p1 = 1 + zs * p2
    d1 = (jnp.exp(zs) - p1) / zs
    series = 1 / 6 + z / 12 + z**2 / 40 + z**3 / 180 + z**4 / 1008 + z**5 / 6720
    return jnp.where(small, series, (d1 - p2) / zs)


def _phi2_matrix(a11: jax.Array, a12: jax.Array, a21: jax.Array, a22: jax.Array,
                 t: jax.Array) -> tuple[jax.Array, ...]:
    """φ2(tA) for a batch of real 2×2 matrices with real eigenvalues (entries of the result)."""
    s = (a11 + a22) / 2
    q = jnp.sqrt(jnp.maximum(((a11 - a22) / 2) ** 2 + a12 * a21, 0.0))
    l1, l2 = (s + q) * t, (s - q) * t
    gap = l1 - l2
    close = gap < 1e-4 * (1 + jnp.abs(l2))
    f2 = phi2(l2)
    dd = jnp.where(close, _phi2_prime((l1 + l2) / 2), (phi2(l1) - f2) / jnp.where(close, 1.0, gap))
    # XLA's CPU fusion would otherwise recompute the transcendental part once per
    # output entry (measured 2x slower at 1e6 cells)
    f2, dd, l2 = jax.lax.optimization_barrier((f2, dd, l2))
    # Newton form: f(tA) = f(l2) I + f[l1, l2] (tA − l2 I)
    return (f2 + dd * (t * a11 - l2), dd * t * a12, dd * t * a21, f2 + dd * (t * a22 - l2))


def receptor_step(rec: Receptors, ligand: jax.Array, dt: jax.Array) -> tuple[Receptors, jax.Array]:
    """Advance receptors exactly at frozen ligand ``ligand`` (N, S); returns (receptors, ligand taken (N, S))."""
    a11 = -(rec.kon * ligand + rec.turnover)
    a12 = rec.koff
    a21 = rec.kon * ligand
    a22 = -(rec.koff + rec.kint)
    r0, c0 = rec.free, rec.bound
    g1 = a11 * r0 + a12 * c0 + rec.synthesis  # A x0 + b
    g2 = a21 * r0 + a22 * c0
    p11, p12, p21, p22 = _phi2_matrix(a11, a12, a21, a22, dt)
    ir = dt * r0 + dt**2 * (p11 * g1 + p12 * g2)  # ∫R dt
    ic = dt * c0 + dt**2 * (p21 * g1 + p22 * g2)  # ∫C dt
    # x' = x0 + A∫x + b dt (φ1 = I + tAφ2, so this is the exact solution)
    taken = rec.kon * ligand * ir - rec.koff * ic
    internal = rec.kint * ic
    turned = rec.turnover * ir
    made = rec.synthesis * dt
    free = r0 - taken + made - turned
    bound = c0 + taken - internal
    new = replace(rec, free=jnp.maximum(free, 0.0), bound=jnp.maximum(bound, 0.0),
                  internalised=rec.internalised + internal, synthesised=rec.synthesised + made,
                  turned_over=rec.turned_over + turned)
    return new, taken


def binding_step(grid: Grid, fields: jax.Array, cells: Cells, idx: jax.Array, w: jax.Array,
                 dt: jax.Array) -> tuple[jax.Array, Cells, jax.Array]:
    """One binding step for all cells; returns (fields, cells, ligand internalised (S,)).

    The frozen ligand is the backward-Euler estimate ``L* = (L + dt·Σkoff·C/V) /
    (1 + dt·Σkon·R/V)``: equal to L at binding equilibrium, damped where receptors
    would deplete the voxel within the step. Should the exact receptor update
    still ask a voxel for (nearly) all it holds, its taking cells take a mix of
    their step without ligand and their full step, scaled to what the voxel holds
    plus what its cells release (:func:`_capped`): no concentration turns
    negative and molecules still balance.
    """
    rec = cells.receptors
    vol = grid.voxel_volume
    n_sub = fields.shape[0]
    alive = cells.alive[:, None]
    aw = w * cells.alive[:, None].astype(w.dtype)
    # one scatter for both per-voxel sums (scatters dominate the cost of this step)
    sums = deposit(grid, idx, aw, jnp.concatenate([rec.kon * rec.free, rec.koff * rec.bound], axis=1)) / vol
    load, release = sums[:n_sub], sums[n_sub:]  # 1/s and amount/(µm^ndim s) per voxel
    lig = gather(grid, idx, aw, (fields + dt * release) / (1 + dt * load))
    new, taken = receptor_step(rec, lig, dt)
    taken = jnp.where(alive, taken, 0.0)
    new = jax.tree_util.tree_map(lambda n, o: jnp.where(alive, n, o), new, rec)
    # what each voxel gives up (amount); the cap below is needed only where that comes close to all it
    # holds, which is rare: one scatter and a test instead of two scatters and a gather every step
    net = deposit(grid, idx, aw, taken)
    # (a voxel already below zero, from an undershooting transport step, takes the capped path
    # whenever its cells move ligand at all: there the cap lets takers have only what others release)
    close = jnp.any((net != 0) & (net > (1 - 1e-4) * fields * vol))

    def uncapped(_: None) -> tuple[jax.Array, Receptors]:
        return fields - net / vol, new

    def capped(_: None) -> tuple[jax.Array, Receptors]:
        return _capped(grid, fields, rec, new, taken, idx, aw, dt)

    fields, new = jax.lax.cond(close, capped, uncapped, None)
    internal = jnp.sum(new.internalised - rec.internalised, axis=0)
    return fields, replace(cells, receptors=new), internal


def _capped(grid: Grid, fields: jax.Array, rec: Receptors, new: Receptors, taken: jax.Array, idx: jax.Array,
            aw: jax.Array, dt: jax.Array) -> tuple[jax.Array, Receptors]:
    """Fields and receptors after binding when some voxel is asked for (nearly) all it holds.

    Each cell's step is a mix of two exact steps that both balance molecules:
    the step without ligand (complexes already bound still dissociate and are
    internalised) and the full step at frozen ligand, ``zero + g·(full − zero)``
    for every receptor quantity and for the ligand taken. ``g`` is 1 except in a
    voxel whose cells' extra demand (full − zero) exceeds what it holds plus what
    they release; there it is that voxel's ratio (with several voxels per cell,
    the smallest of them). With nearest coupling such a voxel ends at exactly 0.
    """
    vol = grid.voxel_volume
    n_sub = fields.shape[0]
    alive = aw.sum(axis=1, keepdims=True) > 0
    zero, taken0 = receptor_step(rec, jnp.zeros_like(taken), dt)  # taken0 <= 0: only release
    zero = jax.tree_util.tree_map(lambda z, o: jnp.where(alive, z, o), zero, rec)
    taken0 = jnp.where(alive, taken0, 0.0)
    extra = taken - taken0  # what the ligand adds to each cell's uptake (>= 0 up to round-off)
    flows = deposit(grid, idx, aw, jnp.concatenate([jnp.maximum(extra, 0.0), -taken0], axis=1))
    demand, given = flows[:n_sub], flows[n_sub:]
    supply = jnp.maximum(fields * vol + given, 0.0)
    ratio = jnp.where(demand > supply, supply / jnp.where(demand > 0, demand, 1.0), 1.0)
    flat = ratio.reshape(n_sub, -1)
    g = jnp.min(jnp.where(aw[None] > 0, flat[:, idx], 1.0), axis=-1).T  # (N, S)
    g = jnp.where(extra > 0, g, 1.0)
    new = replace(new, **{k: getattr(zero, k) + g * (getattr(new, k) - getattr(zero, k))
                          for k in ("free", "bound", "internalised", "synthesised", "turned_over")})
    emptied = (demand > supply) & (fields * vol + given >= 0)
    if idx.shape[1] == 1:
        # nearest voxel: every cell of a voxel is cut by that voxel's ratio, so the net removal is known
        # per voxel without another scatter, and a capped voxel gives exactly its supply: emptied exactly
        return jnp.where(emptied, 0.0, fields - (ratio * demand - given) / vol), new
    # several voxels per cell: a cell is cut by the smallest ratio of its voxels, so a capped voxel gives
    # at most its supply (all of it only when every cell in it was cut by its own ratio); only round-off
    # can take it below zero, which is not kept (no clamp elsewhere: it would create molecules)
    after = fields - deposit(grid, idx, aw, taken0 + g * extra) / vol
    return jnp.where(emptied, jnp.maximum(after, 0.0), after), new


@node
class Response:
    """Cells answer a signal by changing a rate: a Hill function.

    ``rate[:, target] = basal + max · x^n / (K^n + x^n)`` where ``x`` is, per
    cell, the number of bound receptors of substrate ``signal`` (``kind =
    "bound"``) or the local concentration of it (``kind = "concentration"``).

    Args:
        target: substrate whose ``parameter`` is set (name).
        signal: substrate sensed (name).
        parameter: ``"secretion"`` (amount/s) or ``"uptake"`` (µm^ndim/s).
        basal, max: in the units of ``parameter``. K: units of x. n: Hill exponent.
        cell_type: only cells of this type respond (None: all).
    """

    basal: jax.Array
    max: jax.Array
    K: jax.Array
    n: jax.Array
    target: str = static_field()
    signal: str = static_field()
    parameter: str = static_field()
    kind: str = static_field()
    cell_type: int | None = static_field()

    def __init__(self, target: str, signal: str, max: Any, K: Any, n: Any = 1.0, basal: Any = 0.0,
                 parameter: str = "secretion", kind: str = "bound", cell_type: int | None = None) -> None:
        if parameter not in ("secretion", "uptake"):
            raise ValueError(f"Response.parameter must be 'secretion' or 'uptake', got {parameter!r}")
        if kind not in ("bound", "concentration"):
            raise ValueError(f"Response.kind must be 'bound' or 'concentration', got {kind!r}")
        from jaxcell._node import check_nonneg

        for name, v in (("basal", basal), ("max", max), ("K", K), ("n", n)):
            arr = as_float(v, f"Response.{name}")
            check_nonneg(arr, f"Response.{name}", "see the docstring")
            object.__setattr__(self, name, arr)
        if is_concrete(self.K) and np.any(np.asarray(self.K) <= 0):
            raise ValueError(f"Response.K must be > 0 (the half-maximal signal, in the signal's units), got "
                             f"{np.min(np.asarray(self.K))!r}: K = 0 makes the Hill function 0/0 at zero signal")
        object.__setattr__(self, "target", str(target))
        object.__setattr__(self, "signal", str(signal))
        object.__setattr__(self, "parameter", parameter)
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "cell_type", None if cell_type is None else int(cell_type))

    def apply(self, cells: Cells, names: tuple[str, ...], local: jax.Array) -> Cells:
        """Cells with the target rate set from the signal; ``local`` is (N, S) concentrations."""
        si, ti = names.index(self.signal), names.index(self.target)
        if self.kind == "bound":
            if cells.receptors is None:
                raise ValueError("a Response with kind='bound' needs cells with receptors")
            x = cells.receptors.bound[:, si]
        else:
            x = local[:, si]
        x = jnp.maximum(x, 0.0)
        xn = x**self.n
        rate = self.basal + self.max * xn / (self.K**self.n + xn)
        old = getattr(cells, self.parameter)
        if self.cell_type is not None:
            rate = jnp.where(cells.type == self.cell_type, rate, old[:, ti])
        return replace(cells, **{self.parameter: old.at[:, ti].set(rate)})

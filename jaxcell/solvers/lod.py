"""``solver="lod"``: BioFVM's backward-Euler LOD (Ghaffarizadeh et al. 2016).

One implicit sweep per axis with ``k/ndim`` of the decay in each, then the
per-voxel secretion/uptake update ``ρ ← (ρ + dt·S ρ*)/(1 + dt(S + U))``,
``ρ += dt·E``. First order in time, monotone; reproduces PhysiCell/BioFVM.

Held voxels (``dirichlet_mask``, ``Dirichlet(at="voxel")`` layers) are BioFVM's
Dirichlet nodes: their values are imposed before every sweep and after the
last, and each sweep solves the whole line (held voxels included) with
no-flux ends, exactly as ``diffusion_decay_solver__constant_coefficients_LOD_*``
does; what an imposition adds or removes is booked as inflow or outflow.
Unlike BioFVM, cells in a held voxel do not change it after the sweeps (BioFVM
lets them until its next step's imposition; every other voxel is the same).
"""

from __future__ import annotations

import functools
from collections.abc import Hashable
from typing import Any

import jax
import jax.numpy as jnp

from jaxcell.operators import Layout, along_axis, rate_sum, split_signed
from jaxcell.solvers.base import MEDIUM, Amounts, Exchange, Params, Solver, operator, production, register
from jaxcell.solvers.implicit import refuse_held_on_periodic, refuse_periodic_medium


@register
class LOD(Solver):
    """BioFVM's locally one-dimensional backward Euler, then BioFVM's per-voxel cell exchange."""

    name = "lod"
    medium = frozenset(MEDIUM)
    scratch_fields = 3.0  # measured: "tmp B/vox" of bench_transport in float32 / 4 B
    exact_steady_state = False

    def check(self, model: Any) -> None:
        refuse_held_on_periodic(model, self.name)
        refuse_periodic_medium(model, self.name)

    def init(self, model: Any, p: Params, dt: jax.Array, plan: Hashable) -> Any:
        grid = model.grid
        rho = dt * p.k / grid.ndim
        # a decay map makes every line's system different: the per-line operator
        op = operator(grid, p, lines_alike=p.k.ndim == 0)
        # held voxels are unknowns of the line solves too (BioFVM's nodes), imposed around each sweep
        return op, [op.axis_solver(a, dt, rho, None) for a in range(grid.ndim)]

    def step(self, model: Any, p: Params, setup: Any, c: jax.Array, ex: Exchange | None, dt: jax.Array,
             plan: Hashable, layout: Layout | None) -> tuple[jax.Array, Amounts]:
        grid = model.grid
        op, solvers = setup
        vol = grid.voxel_volume
        free = 1.0 if p.mask is None else ~p.mask
        ceff = []
        decayed = inflow = outflow = jnp.zeros((), c.dtype)
        rho = dt * p.k / grid.ndim

        def impose(c: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
            gain, loss = split_signed(jnp.where(p.mask, p.hold - c, 0) * vol)
            return jnp.where(p.mask, p.hold, c), gain, loss

        for a, solve in enumerate(solvers):
            if p.mask is not None:
                c, gain, loss = impose(c)
                inflow, outflow = inflow + gain, outflow + loss
            rhs = op.add_source(c, dt, axes=(a,))
            # delta form: M y = rhs as y = rhs + M⁻¹(rhs − M rhs), so that the round-off
            # in M⁻¹'s column sums acts on a small correction, not on the whole field
            # (the direct form drifts the mass by ~1e-12 per 1e4 steps in 3D).
            res = dt * op.axis_rate(rhs, a) - rho * rhs
            c = rhs + along_axis(functools.partial(solve, axis=a), res, a, layout)
            ceff.append(c)
            decayed = decayed + vol * rate_sum(rho, c)
        if p.mask is not None:
            c, gain, loss = impose(c)
            inflow, outflow = inflow + gain, outflow + loss
        # every sweep's face flux acted on that sweep's own result
        face_in, face_out = op.face_amounts(ceff, dt, None)
        inflow, outflow = inflow + face_in, outflow + face_out
        secreted = uptake = produced = jnp.zeros((), c.dtype)
        if ex is not None:
            clear, sat = ex.clearance * free, ex.sat_source * free
            export = ex.export * free
            c = (c + dt * sat) / (1 + dt * clear)
            uptake = dt * vol * jnp.sum(clear * c)
            c = c + dt * export
            secreted = dt * vol * jnp.sum(sat + export)
        q = production(p, grid.shape)
        if q is not None:  # the tissue's zero-order supply, added as BioFVM adds cells' export
            c = c + dt * q
            produced = dt * vol * jnp.sum(q)
        return c, Amounts(secreted, inflow, outflow, uptake, decayed, produced)

"""``solver="implicit"``: Douglas ADI in delta form with all linear terms implicit.

Douglas (1962); Hundsdorfer & Verwer (2003), §IV.3. The pointwise reaction
(decay + cell clearance) is a fourth, diagonal operator:
``Y = c + dt(Ac + s)``, ``(I − θdt A_j)(Y_j − c) = Y_{j−1} − c``. A steady state
``Ac + s = 0`` is a fixed point for every ``dt``; θ = 1/2 (``Model(theta=)``) is
second order in time, θ = 1 first order. Unconditionally stable for θ ≥ 1/2.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Hashable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcell._node import is_concrete
from jaxcell.medium import max_speed
from jaxcell.operators import Layout, along_axis, rate_sum, split_signed
from jaxcell.solvers.base import MEDIUM, Amounts, Exchange, Params, Solver, operator, production, register


def _max_reaction(model: Any, cells: Any) -> float | None:
    """Largest decay + cell clearance per voxel (1/s) over the substrates, or None when traced.

    ``cells`` are the state's cells (per-substrate rates ``(N, S)``) or None.
    """
    clear = np.zeros(model.n_substrates)
    if cells is not None:
        rate = cells.uptake + cells.saturation_rate
        if not (is_concrete(rate) and is_concrete(cells.alive)):
            return None
        r = np.where(np.asarray(cells.alive)[:, None], np.asarray(rate).reshape(cells.n, -1), 0.0)
        clear = np.max(r, axis=0, initial=0.0) / model.grid.voxel_volume
    worst = 0.0
    for s, c in zip(model.substrates, np.broadcast_to(clear, (model.n_substrates,))):
        if not is_concrete(s.decay):
            return None
        worst = max(worst, float(np.max(np.asarray(s.decay))) + float(c))
    return worst


def refuse_held_on_periodic(model: Any, name: str) -> None:
    """Line solves cannot hold interior voxels on a periodic axis (shared by implicit and lod)."""
    if not model.has_held:
        return
    for s in model.substrates:
        if any(f.periodic for f in s.faces(model.grid.ndim)):
            raise ValueError(f"held voxels (dirichlet_mask or Dirichlet(at='voxel')) with a periodic axis "
                             f"(substrate {s.name!r}) are "
                             f"not supported by solver={name!r}; use solver='explicit' or drop Periodic")


def refuse_periodic_medium(model: Any, name: str) -> None:
    """Line solves of a per-voxel medium need non-periodic axes (shared by implicit and lod)."""
    for s in model.substrates:
        if not s.uniform and any(f.periodic for f in s.faces(model.grid.ndim)):
            raise ValueError(f"solver={name!r} cannot combine a periodic axis with a diffusion map or flow "
                             f"(substrate {s.name!r}); use solver='explicit'")


@register
class Implicit(Solver):
    """Douglas ADI (θ from ``Model(theta=)``); cell secretion and uptake inside the implicit operator."""

    name = "implicit"
    medium = frozenset(MEDIUM)
    scratch_fields = 2.0  # measured: "tmp B/vox" of bench_transport in float32 / 4 B

    def check(self, model: Any) -> None:
        refuse_held_on_periodic(model, self.name)
        refuse_periodic_medium(model, self.name)

    def time_order(self, model: Any) -> int:
        return 2 if model.theta == 0.5 else 1  # Crank–Nicolson-weighted Douglas ADI; θ = 1 backward Euler

    def init(self, model: Any, p: Params, dt: jax.Array, plan: Hashable) -> Any:
        op = operator(model.grid, p)
        zero = jnp.zeros((), dt.dtype)
        return op, [op.axis_solver(a, model.theta * dt, zero, p.mask) for a in range(model.grid.ndim)]

    def step(self, model: Any, p: Params, setup: Any, c: jax.Array, ex: Exchange | None, dt: jax.Array,
             plan: Hashable, layout: Layout | None) -> tuple[jax.Array, Amounts]:
        grid, theta = model.grid, model.theta
        op, solvers = setup
        vol = grid.voxel_volume
        jump_in = jump_out = jnp.zeros((), c.dtype)
        if p.mask is not None:  # a held voxel not yet at its value (Model.init(held_at_start=False)) is set now
            jump_in, jump_out = split_signed(jnp.where(p.mask, p.hold - c, 0) * vol)
            c = jnp.where(p.mask, p.hold, c)
        react = p.k + (0 if ex is None else ex.clearance)
        rate = op.rate(c) - react * c
        q = production(p, grid.shape)
        if ex is not None:
            rate = rate + ex.sat_source + ex.export
        if q is not None:
            rate = rate + q
        rate = op.add_source(rate)
        if p.mask is not None:
            rate = jnp.where(p.mask, 0, rate)
            react = jnp.where(p.mask, 0, react)
        delta = dt * rate / (1 + theta * dt * react)
        c0 = c + theta * delta
        ceff = []
        for a, solve in enumerate(solvers):
            delta = along_axis(functools.partial(solve, axis=a), delta, a, layout)
            ceff.append(c + theta * delta)
        new = c + delta
        free = 1.0 if p.mask is None else ~p.mask
        inflow, outflow = op.face_amounts(ceff, dt, p.mask)
        if p.mask is not None:
            hi, ho = op.held_amounts(ceff, dt, p.mask)
            inflow, outflow = inflow + hi + jump_in, outflow + ho + jump_out
        decayed = dt * vol * rate_sum(p.k, c0 * free)
        if ex is None:
            secreted = uptake = jnp.zeros((), c.dtype)
        else:
            secreted = dt * vol * jnp.sum((ex.sat_source + ex.export) * free)
            uptake = dt * vol * jnp.sum(ex.clearance * c0 * free)
        produced = jnp.zeros((), c.dtype) if q is None else dt * vol * jnp.sum(q)
        return new, Amounts(secreted, inflow, outflow, uptake, decayed, produced)

    def before_run(self, model: Any, cells: Any, dt: float) -> None:
        """Warn when the θ-weighted reaction overshoots (below), or when flow moves more than a voxel per step.

        With flow, the ADI factors no longer commute: modes that are both carried
        and diffused are damped by a factor that tends to 1 as the Courant number
        ``|u|·dt/h`` grows (measured: a 2D channel flow at Courant 2 was still 3e-5
        from its steady state after 300 steps, at 0.5 it converged to round-off),
        so transients linger. The reaction factor is (1 − (1−θ)z)/(1 + θz), z = dt·(k + λ).

        At θ = 1/2 it is negative beyond z = 2 (−0.996 at z = 1000): a transient
        then swings to the other side of its target (a source reached twice the
        true value in one step). Checked on concrete decay and cells; skipped
        under tracing.
        """
        for s in model.substrates:
            speed = max_speed(s.velocity)
            if speed is None:
                continue
            courant = max(float(u) * dt / h for u, h in zip(speed, model.grid.spacing))
            if courant > 1.0:
                warnings.warn(f"solver='implicit' with flow at Courant number |u|·dt/h = {courant:.3g} > 1 "
                              f"(substrate {s.name!r}): the ADI step stays stable but is not monotone: values "
                              "can turn negative next to sharp fronts (measured: -0.67 of a unit pulse at Courant "
                              "10) and transients damp slowly; use dt <= h/|u|, solver='lod' (positive at any "
                              "dt, first order), 'explicit' or jc.steady_state", RuntimeWarning, stacklevel=4)
        if model.theta >= 1.0:
            return
        worst = _max_reaction(model, cells)
        z = None if worst is None else worst * dt
        if z is not None and (1 - (1 - model.theta) * z) < 0:
            warnings.warn(f"solver='implicit' (theta = {model.theta}) with dt·(decay + uptake/voxel volume) = {z:.3g} "
                          f"> {1 / (1 - model.theta):.3g}: the reaction step overshoots (factor "
                          f"{(1 - (1 - model.theta) * z) / (1 + model.theta * z):.3g} per step instead of "
                          f"e^-z = {np.exp(-min(z, 700)):.3g}), so transients oscillate around their target; use "
                          "Model(theta=1.0), a smaller dt, or jc.steady_state for the end state", RuntimeWarning,
                          stacklevel=4)

    @staticmethod
    def _reaction_overshoots(model: Any, dt: float) -> bool:
        """The cause of negative values is the reaction step, not diffusion (warned in before_run)."""
        z = _max_reaction(model, None)
        return model.theta < 1.0 and z is not None and (1 - (1 - model.theta) * z * dt) < 0

    def after_run(self, model: Any, fields: jax.Array, saved: jax.Array, dt: float) -> None:
        """Warn when the run went below zero; ADI is stable for any dt but not monotone.

        Measured on a unit pulse: no negative values up to dt·D·Σ1/h² = 1 in 1D-3D,
        undershoots of 1e-3 to 1e-1 of the peak from 2. Checked once per call on the
        results (a reduction, outside the time loop); skipped under tracing.
        """
        if not (is_concrete(fields) and is_concrete(saved)):
            return
        low = min(float(jnp.min(fields)), float(jnp.min(saved)) if saved.size else 0.0)
        high = max(float(jnp.max(jnp.abs(fields))), float(jnp.max(jnp.abs(saved))) if saved.size else 0.0)
        if low < -1e-6 * high and not self._reaction_overshoots(model, dt):
            flow = any(s.velocity is not None for s in model.substrates)
            why = "with flow (not monotone at Courant numbers |u|·dt/h > 1)" if flow else \
                "near sharp sources when dt·D·Σ1/h² > 1"
            warnings.warn(f"solver='implicit' produced concentrations down to {low:.3g} (peak {high:.3g}): the ADI "
                          f"step is stable but can undershoot {why}; use a smaller dt, solver='lod' (monotone, "
                          "first order) or jc.steady_state", RuntimeWarning, stacklevel=4)

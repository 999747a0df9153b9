"""``solver="explicit"``: conservative FTCS, sub-stepped, local reactions implicit.

Each sub-step of length ``h`` is ``c' (1 + h(k + λ)) = c + h(D∇²c + s)`` with
``λ`` the cells' clearance and ``s`` their secretion (per voxel): FTCS for
diffusion (stable for ``h·rate ≤ 2`` with ``rate = 4DΣ1/Δx²`` plus the faces'
conductances), backward Euler for the local terms, so the discrete steady state
is a fixed point of every sub-step and stiff uptake cannot overshoot.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Hashable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxcell._node import concrete_max, is_concrete
from jaxcell.grid import Grid
from jaxcell.medium import max_speed
from jaxcell.operators import Layout, rate_sum, split_signed
from jaxcell.solvers.base import MEDIUM, Amounts, Exchange, Params, Solver, operator, production, register

SUBSTEPS_WARN = 1000  # sub-steps per step beyond which a unit slip is more likely than intent
SUBSTEPS_MAX = 100_000  # refused beyond: hours per step at 100³, and 4e9 overflowed a raw int32 loop count


def stability_rate(grid: Grid, D: float, speed: Any = None) -> float:
    """FTCS sub-steps need dt·rate ≤ 2 (1/s). Decay and uptake are implicit.

    Without flow, rate = 4D Σ 1/h² (stability: a Dirichlet face adds 2D/h² to its
    voxel's diagonal, which stays inside the interior voxels' 4D/h² per axis; a
    Robin face adds less). With flow (``speed``: the largest |u| per axis, µm/s)
    the limit is the stricter one that keeps every sub-step a positive combination
    of the old values: a voxel's outflow coefficients sum to at most
    Σ_a (3D/h_a + 2|u_a|)/h_a (two faces of at most D/h + |u| each, or one such face
    and a Dirichlet face's 2D/h plus the outflowing |u| at the domain's edge), so
    rate = 2 Σ_a (3D/h_a² + 2|u_a|/h_a) and no value turns negative.
    """
    if speed is None:
        return 4 * D * sum(1 / h**2 for h in grid.spacing)
    return 2 * sum(3 * D / h**2 + 2 * float(u) / h for u, h in zip(speed, grid.spacing))


def substeps(grid: Grid, D_max: float, dt: float, speed: Any = None) -> int:
    """Smallest number of FTCS sub-steps that keeps dt/n inside the stability limit."""
    return max(1, int(np.ceil(dt * stability_rate(grid, D_max, speed) / 2 * (1 - 1e-12))))


def _check_bounds(name: str, D: Any, k: Any, max_d: float | None, max_k: float | None) -> None:
    """Host-side check of traced D, k against the static bounds (the step count assumed them)."""
    for what, v, bound in (("diffusion", D, max_d), ("decay", k, max_k)):
        if bound is not None and np.any(np.asarray(v) > bound * (1 + 1e-9)):
            raise ValueError(f"Substrate {name!r} {what} {np.max(np.asarray(v))} exceeds max_{what} = {bound}: "
                             "the explicit step would be unstable; raise the bound")


@register
class Explicit(Solver):
    """FTCS with ``plan`` = the sub-step count per substrate (from ``Model(max_diffusion=)`` or a concrete D)."""

    name = "explicit"
    dt_sets_accuracy = False  # the stability sub-step, not dt, sets its error in time
    medium = frozenset(MEDIUM)
    scratch_fields = 1.0  # measured: "tmp B/vox" of bench_transport in float32 / 4 B
    needs_diffusion_bound = True

    def plan(self, model: Any, dt: float) -> tuple[Hashable, ...]:
        """FTCS sub-steps per substrate, from ``max_diffusion`` when given, else from a concrete D.

        A bound, when given, is always used, so that a run gives the same numbers
        eagerly and under jit/grad (where D is traced). Decay does not limit the
        step (it is implicit in every sub-step); ``max_decay``, if given, is checked.
        """
        out = []
        for s in model.substrates:
            for what, val, bound, unit in (("diffusion", s.diffusion, model.max_diffusion, "µm²/s"),
                                            ("decay", s.decay, model.max_decay, "1/s")):
                v = concrete_max(val)
                if bound is not None and v is not None and v > bound:
                    raise ValueError(f"Substrate {s.name!r} {what} {v} {unit} exceeds the explicit solver's "
                                     f"bound max_{what} = {bound}; raise the bound")
            d = model.max_diffusion if model.max_diffusion is not None else concrete_max(s.diffusion)
            if d is None:
                raise ValueError("solver='explicit' with a traced diffusion needs a static bound: "
                                 "Model(..., max_diffusion=<largest value in µm²/s>), or use solver='implicit'")
            speed = max_speed(s.velocity)
            if s.velocity is not None and speed is None:
                raise ValueError(f"solver='explicit' needs a concrete velocity (Substrate {s.name!r}; its sub-step "
                                 "count depends on the speed); for a traced velocity use solver='implicit'")
            n = substeps(model.grid, d, dt, speed)
            if n > SUBSTEPS_MAX:
                dt_ok = 2 * SUBSTEPS_MAX / stability_rate(model.grid, d, speed)
                flow = "" if speed is None else f", flow up to {float(max(speed)):g} µm/s"
                raise ValueError(f"solver='explicit' would take {n:.3g} FTCS sub-steps per step for Substrate "
                                 f"{s.name!r} (D = {d:g} µm²/s{flow}, spacing {model.grid.spacing} µm, dt = {dt:g} s; "
                                 f"at most {SUBSTEPS_MAX}): use dt <= {dt_ok:.3g} s or solver='implicit', and check "
                                 f"that D is in µm²/s{', the velocity in µm/s' if flow else ''} and the spacing in µm")
            if n > SUBSTEPS_WARN:
                flow = "" if speed is None else f", flow up to {float(max(speed)):g} µm/s"
                warnings.warn(f"solver='explicit' takes {n} FTCS sub-steps per step for Substrate {s.name!r} "
                              f"(D = {d:g} µm²/s{flow}, spacing {model.grid.spacing} µm, dt = {dt:g} s): check that "
                              f"D is in µm²/s{', the velocity in µm/s' if flow else ''} and the spacing in µm, or use "
                              "solver='implicit'", RuntimeWarning, stacklevel=4)
            out.append(n)
        return tuple(out)

    def init(self, model: Any, p: Params, dt: jax.Array, plan: Hashable) -> Any:
        if not (is_concrete(p.D) and is_concrete(p.k)):
            # the sub-step count assumed the static bounds: check the traced values at run time
            jax.debug.callback(functools.partial(_check_bounds, p.name, max_d=model.max_diffusion,
                                                 max_k=model.max_decay), p.D, p.k)
        return operator(model.grid, p)

    def step(self, model: Any, p: Params, setup: Any, c: jax.Array, ex: Exchange | None, dt: jax.Array,
             plan: Hashable, layout: Layout | None) -> tuple[jax.Array, Amounts]:
        grid = model.grid
        op = setup
        n_sub = int(plan)
        vol = grid.voxel_volume
        h = dt / n_sub
        react, src = p.k, production(p, grid.shape)
        produced = jnp.zeros((), c.dtype) if src is None else h * vol * jnp.sum(src) * n_sub
        lam = None
        if ex is not None:
            lam, exs = ex.clearance, ex.sat_source + ex.export
            if p.mask is not None:
                lam, exs = jnp.where(p.mask, 0, lam), jnp.where(p.mask, 0, exs)
            react = react + lam
            src = exs if src is None else src + exs
        inv = 1 / (1 + h * react)  # once per step: a multiply per voxel and sub-step, not a divide

        def sub(carry: tuple[jax.Array, Amounts], _: None) -> tuple[tuple[jax.Array, Amounts], None]:
            c, acc = carry
            rhs = c + h * op.rate(c)
            if src is not None:
                rhs = rhs + h * src
            new = op.add_source(rhs, h) * inv
            # held voxels do not evolve: no decay, no face flow of their own; they supply
            # what diffuses into their free neighbours (the same books as the implicit solver)
            inflow, outflow = op.face_amounts([c] * grid.ndim, h, p.mask)
            decayed = h * vol * rate_sum(p.k, new if p.mask is None else jnp.where(p.mask, 0, new))
            z = jnp.zeros((), c.dtype)
            secreted = uptake = z
            if lam is not None:
                secreted, uptake = h * vol * jnp.sum(exs), h * vol * jnp.sum(lam * new)
            if p.mask is not None:
                hi, ho = op.held_amounts([c] * grid.ndim, h, p.mask)
                ji, jo = split_signed((p.hold - c) * vol * p.mask)  # a held voxel not yet at its value
                inflow, outflow = inflow + hi + ji, outflow + ho + jo
                new = jnp.where(p.mask, p.hold, new)
            return (new, acc + Amounts(secreted, inflow, outflow, uptake, decayed, z)), None

        if n_sub == 1:
            (c, acc), _ = sub((c, Amounts.zero(c.dtype)), None)
        else:
            (c, acc), _ = lax.scan(sub, (c, Amounts.zero(c.dtype)), None, length=n_sub)
        return c, acc._replace(produced=produced)

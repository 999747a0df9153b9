"""Steady states of linear models: (−D∇² + k + clearance) c = source, per substrate."""

from __future__ import annotations

import functools
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.sparse.linalg import cg, gmres

from jaxcell._node import concrete_max, float_dtype, is_concrete
from jaxcell.cells import Cells, coupling_weights
from jaxcell.exchange import cell_exchange
from jaxcell.model import Model, check_model_values
from jaxcell.operators import from_spectral, spectral_axes, spectral_eigenvalues, to_spectral
from jaxcell.solvers import Params
from jaxcell.solvers.base import operator, production


def steady_state(model: Model, cells: Cells | None = None, *, tol: float | None = None,
                 maxiter: int = 2000) -> jax.Array:
    """Steady concentrations ``(S, *grid.shape)`` (amount/µm^ndim) of a linear model.

    Solves ``∇·(D∇c) − ∇·(uc) − (k + clearance)c + production + source = 0``
    with the model's faces and held voxels, on the same finite-volume operator as
    the time steppers (so a long ``implicit`` run converges to it): in closed form
    with DCT/FFT when the coefficients are uniform (one D and k, no flow, no cell
    uptake, no face with a conductance such as Dirichlet or Robin, no held
    voxels), else by preconditioned conjugate gradients (the operator is
    symmetric positive definite, diffusion and decay maps included) or, with
    flow (non-symmetric), by restarted GMRES, to relative residual ``tol``
    (default 1e-11 in float64, 1e-6 in float32). Gradients come from implicit
    differentiation of the linear solve (``custom_linear_solve``), not from
    unrolling iterations. A substrate that leaks into a compartment
    (:class:`jaxcell.Leak`) is solved with the compartment's concentration as one
    more unknown (two linear solves and a scalar Schur complement); the
    compartment's steady value is then ``Σ vol·rate·c / (k_c·V + Σ vol·rate)``.
    Models with receptors, responses or an extracellular matrix (saturable) are
    nonlinear and refused; a model with no decay, no uptake and no Dirichlet or
    Robin condition (or compartment clearance) has no steady state and is refused.

    Args:
        model: a :class:`jaxcell.Model`; D, k and face values may be traced.
        cells: :class:`jaxcell.Cells` (secretion amount/s, uptake µm^ndim/s) or None.
        tol: relative residual of the conjugate-gradient solve.
        maxiter: iteration cap of the conjugate-gradient (or GMRES) solve.

    Returns:
        ``(S, *grid.shape)`` concentrations, amount/µm^ndim.
    """
    if not isinstance(model, Model):
        raise ValueError(f"steady_state(model, cells) needs a jc.Model, got {type(model).__name__}")
    check_model_values(model)
    grid = model.grid
    dtype = float_dtype()
    if cells is not None:
        if not isinstance(cells, Cells):
            raise ValueError(f"cells must be jc.Cells or None, got {type(cells).__name__}")
        cells = cells.conform(grid, model.n_substrates)
        if cells.receptors is not None or model.responses:
            raise ValueError("steady_state handles linear models only; receptor binding and responses are "
                             "nonlinear: run jc.simulate to a late time instead")
    if model.has_matrix:
        raise ValueError("steady_state handles linear models only; binding to the extracellular matrix "
                         "(jc.Matrix) saturates, so it is nonlinear: run jc.simulate to a late time instead")
    tol = float(tol) if tol is not None else (1e-11 if dtype == jnp.float64 else 1e-6)
    if not (np.isfinite(tol) and tol > 0) or int(maxiter) < 1:
        raise ValueError(f"tol must be > 0 and maxiter >= 1, got tol={tol!r}, maxiter={maxiter!r}")
    clear_max = _max_clearance(cells, model.n_substrates)
    uniform = []
    for i, s in enumerate(model.substrates):
        faces = s.faces(grid.ndim)
        # a face with a conductance (Dirichlet, Robin) removes mass in proportion to c
        conducting = any(not f.periodic and f.conductance(1.0, 1.0) is not None for f in faces)
        removing = conducting or model.has_held
        if s.leak is not None:  # what leaks out leaves for good only through the compartment's clearance
            removing = removing or concrete_max(model.compartment(s.leak.compartment).clearance) != 0.0
        no_clearance = clear_max[i] == 0.0  # False when unknown (traced cells)
        if not removing and no_clearance and concrete_max(s.decay) == 0.0:
            raise ValueError(f"substrate {model.names[i]!r} has no decay, uptake, Dirichlet or Robin condition"
                             f"{' and its compartment no clearance' if s.leak is not None else ''}: it has no "
                             "steady state (its mass grows or stays constant)")
        uniform.append(not removing and no_clearance and s.uniform and jnp.ndim(s.decay) == 0 and s.leak is None)
    c, resid = solve_linear(model, cells, uniform=tuple(uniform), tol=tol, maxiter=int(maxiter))
    if is_concrete(resid) and np.any(np.asarray(resid) > 100 * tol):
        warnings.warn(f"steady_state: conjugate gradients stopped at relative residual "
                      f"{float(np.max(np.asarray(resid))):.2e} > tol = {tol:.1e} after maxiter = {maxiter}; "
                      "raise maxiter or check the model", RuntimeWarning, stacklevel=2)
    return c


def _max_clearance(cells: Cells | None, n_substrates: int) -> list[float | None]:
    """Largest per-cell clearance (uptake + saturation rate, µm^ndim/s) of live cells, per substrate."""
    if cells is None:
        return [0.0] * n_substrates
    rate = cells.uptake + cells.saturation_rate
    if not (is_concrete(rate) and is_concrete(cells.alive)):
        return [None] * n_substrates
    r = np.where(np.asarray(cells.alive)[:, None], np.asarray(rate), 0.0)
    return [float(r[:, i].max()) if r.shape[0] else 0.0 for i in range(n_substrates)]


@functools.partial(jax.jit, static_argnames=("uniform", "tol", "maxiter"))
def solve_linear(model: Model, cells: Cells | None, *, uniform: tuple[bool, ...], tol: float,
           maxiter: int) -> tuple[jax.Array, jax.Array]:
    """Steady fields and, per substrate, the final relative residual of the linear solve."""
    grid = model.grid
    dtype = float_dtype()
    if cells is not None:
        idx, w = coupling_weights(grid, cells.position, cells.alive, model.coupling)
        exchanges = cell_exchange(model, cells, idx, w)
    else:
        exchanges = [None] * model.n_substrates
    out, resid = [], []
    for i in range(model.n_substrates):
        p = model.params(i, dtype)
        ex = exchanges[i]
        top = operator(grid, p)
        src = top.add_source(jnp.zeros(grid.shape, dtype))
        q = production(p, grid.shape)
        if q is not None:
            src = src + q
        clear = jnp.zeros(grid.shape, dtype)
        if ex is not None:
            src = src + ex.sat_source + ex.export
            clear = ex.clearance
        if uniform[i]:
            cos_axes, fft_axes = spectral_axes(grid, p.faces)
            lam = p.D * spectral_eigenvalues(grid, cos_axes, dtype) - p.k
            # round-off in the transforms leaves ~1e-16·peak of either sign far from sources
            src = jax.lax.optimization_barrier(src)  # no compile-time folding of a constant source
            out.append(jnp.maximum(from_spectral(to_spectral(src, cos_axes, fft_axes) / -lam, cos_axes, fft_axes),
                                   0.0))
            resid.append(jnp.zeros((), dtype))
            continue
        react = p.k + clear
        mask = p.mask
        s = model.substrates[i]
        leak = None
        if s.leak is not None:  # −rate·(c − c_b): rate joins the removal, rate·c_b is solved for below
            leak = s.leak.per_voxel(grid.shape, dtype)
            if mask is not None:
                leak = jnp.where(mask, 0, leak)
            react = react + leak

        def op(c: jax.Array, top: Any = top, react: jax.Array = react, mask: Any = mask) -> jax.Array:
            if mask is None:
                return react * c - top.rate(c)
            free = jnp.where(mask, 0, c)
            return jnp.where(mask, c, react * free - top.rate(free))

        rhs = src
        if mask is not None:
            # held voxels: identity rows; their values enter the free rows as a known source
            held = jnp.where(mask, p.hold, 0)
            rhs = jnp.where(mask, p.hold, src + top.rate(held))
        precond = _preconditioner(model, p, react, dtype)

        def solve(b: jax.Array, op: Any = op, precond: Any = precond, flow: bool = p.velocity is not None) -> Any:
            if not flow:  # symmetric positive definite (harmonic-mean faces keep it symmetric)
                return cg(op, b, tol=tol, atol=0.0, maxiter=maxiter, M=precond)[0]
            # flow makes the operator non-symmetric (still an M-matrix)
            return gmres(op, b, tol=tol, atol=0.0, restart=50, maxiter=-(-maxiter // 50), M=precond,
                         solve_method="batched")[0]

        c = solve(rhs)
        if leak is not None:
            # c = u + c_b·w with u = A⁻¹·rhs, w = A⁻¹·rate; the compartment's balance
            # Σ vol·rate·(c − c_b) = k_c·V·c_b then fixes c_b (one scalar: a Schur complement)
            cp = model.compartment(s.leak.compartment)
            w = solve(leak)
            vol = grid.voxel_volume
            cb = vol * jnp.sum(leak * c) / (jnp.asarray(cp.clearance, dtype) * jnp.asarray(cp.volume, dtype)
                                            + vol * jnp.sum(leak * (1 - w)))
            c = c + cb * w
            rhs = rhs + cb * leak  # for the residual below
        out.append(c)
        res = jax.lax.stop_gradient(op(c) - rhs)
        resid.append(jnp.linalg.norm(res) / jnp.maximum(jnp.linalg.norm(jax.lax.stop_gradient(rhs)), 1e-300))
    return jnp.stack(out), jnp.stack(resid)


def _preconditioner(model: Model, p: Params, react: jax.Array, dtype: Any) -> Any:
    """Inverse of the uniform-coefficient operator with closed faces (DCT/FFT), mean removal rate."""
    grid = model.grid
    fft_axes = [a for a in range(grid.ndim) if p.faces[2 * a].periodic]
    cos_axes = [a for a in range(grid.ndim) if a not in fft_axes]
    D = jnp.mean(p.D)  # a diffusion map: its mean is a good enough spectral approximation
    lam = D * spectral_eigenvalues(grid, cos_axes, dtype)
    shift = jnp.mean(react)
    for a in range(grid.ndim):  # a conducting face acts like extra removal near it
        for f in p.faces[2 * a: 2 * a + 2]:
            g = None if f.periodic else f.conductance(D, grid.spacing[a])
            if g is not None:
                shift = shift + g / grid.spacing[a] / grid.shape[a]
    denom = shift - lam
    denom = jnp.where(denom > 0, denom, jnp.min(jnp.where(denom > 0, denom, jnp.inf)))

    def apply(r: jax.Array) -> jax.Array:
        return from_spectral(to_spectral(r, cos_axes, fft_axes) / denom, cos_axes, fft_axes)

    return apply

"""Steady states of linear models: (−D∇² + k + clearance) c = source, per substrate."""

from __future__ import annotations

import functools
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.sparse.linalg import cg

from jaxcell._node import concrete_float, float_dtype, is_concrete
from jaxcell.cells import Cells, coupling_weights
from jaxcell.diffusion import (
    Params,
    _spectral_axes,
    boundary_source,
    from_spectral,
    laplacian,
    spectral_eigenvalues,
    to_spectral,
)
from jaxcell.model import Model, check_model_values
from jaxcell.simulate import _exchange


def steady_state(model: Model, cells: Cells | None = None, *, tol: float | None = None,
                 maxiter: int = 2000) -> jax.Array:
    """Steady concentrations ``(S, *grid.shape)`` (amount/µm^ndim) of a linear model.

    Solves ``D∇²c − (k + clearance)c + source = 0`` with the model's faces and
    held voxels, on the same finite-volume operator as the time steppers (so a
    long ``implicit`` run converges to it): in closed form with DCT/FFT when the
    coefficients are uniform (no cell uptake, no Dirichlet faces or held
    voxels), else by preconditioned conjugate gradients (the operator is
    symmetric positive definite) to relative residual ``tol`` (default 1e-11
    in float64, 1e-6 in float32). Gradients come from implicit differentiation
    of the linear solve (``custom_linear_solve``), not from unrolling
    iterations. Models with receptors or responses are nonlinear and refused; a
    model with no decay, no uptake and no Dirichlet condition has no steady
    state and is refused.

    Args:
        model: a :class:`jaxcell.Model`; D, k and face values may be traced.
        cells: :class:`jaxcell.Cells` (secretion amount/s, uptake µm^ndim/s) or None.
        tol: relative residual of the conjugate-gradient solve.
        maxiter: iteration cap of the conjugate-gradient solve.

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
    tol = float(tol) if tol is not None else (1e-11 if dtype == jnp.float64 else 1e-6)
    if not (np.isfinite(tol) and tol > 0) or int(maxiter) < 1:
        raise ValueError(f"tol must be > 0 and maxiter >= 1, got tol={tol!r}, maxiter={maxiter!r}")
    clear_max = _max_clearance(cells, model.n_substrates)
    uniform = []
    for i, s in enumerate(model.substrates):
        kinds = model.params(i, dtype).faces.kinds
        has_dirichlet = "dirichlet" in kinds or model.dirichlet_mask is not None
        no_clearance = clear_max[i] == 0.0  # False when unknown (traced cells)
        if not has_dirichlet and no_clearance and concrete_float(s.decay) == 0.0:
            raise ValueError(f"substrate {model.names[i]!r} has no decay, uptake or Dirichlet condition: "
                             "it has no steady state (its mass grows or stays constant)")
        uniform.append(not has_dirichlet and no_clearance)
    c, resid = _solve(model, cells, uniform=tuple(uniform), tol=tol, maxiter=int(maxiter))
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
def _solve(model: Model, cells: Cells | None, *, uniform: tuple[bool, ...], tol: float,
           maxiter: int) -> tuple[jax.Array, jax.Array]:
    """Steady fields and, per substrate, the final relative residual of the linear solve."""
    grid = model.grid
    dtype = float_dtype()
    if cells is not None:
        idx, w = coupling_weights(grid, cells.position, cells.alive, model.coupling)
        exchanges = _exchange(model, cells, idx, w)
    else:
        exchanges = [None] * model.n_substrates
    out, resid = [], []
    for i in range(model.n_substrates):
        p = model.params(i, dtype)
        ex = exchanges[i]
        kinds = p.faces.kinds
        src = boundary_source(grid, p.D, p.faces, dtype=dtype)
        clear = jnp.zeros(grid.shape, dtype)
        if ex is not None:
            src = src + ex.sat_source + ex.export
            clear = ex.clearance
        if uniform[i]:
            cos_axes, fft_axes = _spectral_axes(grid, kinds)
            lam = p.D * spectral_eigenvalues(grid, kinds, dtype) - p.k
            # round-off in the transforms leaves ~1e-16·peak of either sign far from sources
            src = jax.lax.optimization_barrier(src)  # no compile-time folding of a constant source
            out.append(jnp.maximum(from_spectral(to_spectral(src, cos_axes, fft_axes) / -lam, cos_axes, fft_axes),
                                   0.0))
            resid.append(jnp.zeros((), dtype))
            continue
        react = p.k + clear
        mask = p.mask

        def op(c: jax.Array, p: Params = p, react: jax.Array = react, mask: Any = mask,
               kinds: tuple[str, ...] = kinds) -> jax.Array:
            if mask is None:
                return react * c - p.D * laplacian(c, grid, kinds)
            free = jnp.where(mask, 0, c)
            return jnp.where(mask, c, react * free - p.D * laplacian(free, grid, kinds))

        rhs = src
        if mask is not None:
            # held voxels: identity rows; their values enter the free rows as a known source
            held = jnp.where(mask, p.hold, 0)
            rhs = jnp.where(mask, p.hold, src + p.D * laplacian(held, grid, kinds))
        precond = _preconditioner(model, p, kinds, react, dtype)
        c, _ = cg(op, rhs, tol=tol, atol=0.0, maxiter=maxiter, M=precond)
        out.append(c)
        res = jax.lax.stop_gradient(op(c) - rhs)
        resid.append(jnp.linalg.norm(res) / jnp.maximum(jnp.linalg.norm(jax.lax.stop_gradient(rhs)), 1e-300))
    return jnp.stack(out), jnp.stack(resid)


def _preconditioner(model: Model, p: Params, kinds: tuple[str, ...], react: jax.Array,
                    dtype: Any) -> Any:
    """Inverse of the uniform-coefficient operator with no-flux faces (DCT), mean reaction rate."""
    grid = model.grid
    nkinds = tuple("periodic" if k == "periodic" else "flux" for k in kinds)
    cos_axes, fft_axes = _spectral_axes(grid, nkinds)
    lam = p.D * spectral_eigenvalues(grid, nkinds, dtype)
    shift = jnp.mean(react)
    for a in range(grid.ndim):  # a Dirichlet face acts like extra removal near it
        if "dirichlet" in kinds[2 * a: 2 * a + 2]:
            shift = shift + 2 * p.D / grid.spacing[a] ** 2 / grid.shape[a]
    denom = shift - lam
    denom = jnp.where(denom > 0, denom, jnp.min(jnp.where(denom > 0, denom, jnp.inf)))

    def apply(r: jax.Array) -> jax.Array:
        return from_spectral(to_spectral(r, cos_axes, fft_axes) / denom, cos_axes, fft_axes)

    return apply

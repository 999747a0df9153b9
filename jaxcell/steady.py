"""Steady states of linear models: (−D∇² + k + clearance) c = source, per substrate."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.sparse.linalg import cg

from jaxcell._node import float_dtype
from jaxcell.cells import Cells, coupling_weights
from jaxcell.diffusion import (boundary_source, from_spectral, laplacian, spectral_eigenvalues, to_spectral,
                               _spectral_axes)
from jaxcell.model import Model, check_model_values
from jaxcell.simulate import _exchange


def steady_state(model: Model, cells: Cells | None = None, *, tol: float | None = None,
                 maxiter: int = 2000) -> jax.Array:
    """Steady concentrations ``(S, *grid.shape)`` (amount/µm^ndim) of a linear model.

    Solves ``D∇²c − (k + clearance)c + source = 0`` with the model's faces and
    held voxels: in closed form with DCT/FFT when the coefficients are uniform
    (no cell uptake, no Dirichlet faces or held voxels), else by preconditioned
    conjugate gradients (the operator is symmetric positive definite). Gradients
    come from implicit differentiation of the linear solve (``custom_linear_solve``),
    not from unrolling iterations. Models with receptors or responses are
    nonlinear and refused; a model with no decay, no uptake and no Dirichlet
    condition has no steady state and is refused.
    """
    check_model_values(model)
    grid = model.grid
    dtype = float_dtype()
    if cells is not None:
        cells = cells.conform(grid, model.n_substrates)
        if cells.receptors is not None or model.responses:
            raise ValueError("steady_state handles linear models only; receptor binding and responses are "
                             "nonlinear: run jc.simulate to a late time instead")
        idx, w = coupling_weights(grid, cells.position, cells.alive, model.coupling)
        exchanges = _exchange(model, cells, idx, w)
    else:
        exchanges = [None] * model.n_substrates
    tol = tol if tol is not None else (1e-11 if dtype == jnp.float64 else 1e-6)
    out = []
    for i in range(model.n_substrates):
        p = model.params(i, dtype)
        ex = exchanges[i]
        kinds = p.faces.kinds
        src = boundary_source(grid, p.D, p.faces, dtype=dtype)
        clear = jnp.zeros(grid.shape, dtype)
        if ex is not None:
            src = src + ex.sat_source + ex.export
            clear = ex.clearance
        has_dirichlet = "dirichlet" in kinds or p.mask is not None
        from jaxcell._node import concrete_float

        k_val = concrete_float(p.k)
        if not has_dirichlet and k_val == 0.0 and (ex is None or concrete_float(jnp.max(clear)) == 0.0):
            raise ValueError(f"substrate {model.names[i]!r} has no decay, uptake or Dirichlet condition: "
                             "it has no steady state (its mass grows or stays constant)")
        uniform = not has_dirichlet and (ex is None or concrete_float(jnp.max(clear)) == 0.0)
        if uniform:
            cos_axes, fft_axes = _spectral_axes(grid, kinds)
            lam = p.D * spectral_eigenvalues(grid, kinds, dtype) - p.k
            out.append(from_spectral(to_spectral(src, cos_axes, fft_axes) / -lam, cos_axes, fft_axes))
            continue
        react = p.k + clear
        mask = p.mask

        def op(c: jax.Array, p=p, react=react, mask=mask) -> jax.Array:
            if mask is None:
                return react * c - p.D * laplacian(c, grid, kinds)
            free = jnp.where(mask, 0, c)
            return jnp.where(mask, c, react * free - p.D * laplacian(free, grid, kinds))

        rhs = src
        if mask is not None:
            held = jnp.where(mask, p.hold, 0)
            rhs = jnp.where(mask, p.hold, src + p.D * laplacian(held, grid, kinds) - react * held)
            rhs = jnp.where(mask, p.hold, rhs)
        precond = _preconditioner(model, p, kinds, react, dtype)
        c, _ = cg(op, rhs, tol=tol, atol=0.0, maxiter=maxiter, M=precond)
        out.append(c)
    return jnp.stack(out)


def _preconditioner(model: Model, p, kinds, react, dtype):  # noqa: ANN001, ANN202
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

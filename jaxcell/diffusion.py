"""Diffusion-decay steppers on cell-centred finite volumes.

Every stepper advances one substrate's field ``c`` (``grid.shape``,
amount/µm^ndim) by ``dt`` seconds for

    dc/dt = D ∇²c − k c − clearance·c + source      (+ boundary terms)

and returns the new field together with the amounts (not rates) that each
process moved during the step, so the budget closes to round-off.

Boundary faces: ``flux`` (inward flux j, amount/(µm^(ndim−1)·s), ``Flux(0)`` is
no-flux), ``dirichlet`` (value v held at the face, half a voxel from the
outermost centre: face flux ``2D(v − c₀)/h``) and ``periodic``. Interior
Dirichlet voxels (``mask``) are held at ``hold`` and exchange with their free
neighbours through ordinary face fluxes.

Schemes (``solver=`` of :class:`jaxcell.Model`):

* ``implicit`` — Douglas ADI in delta form (Douglas 1962; Hundsdorfer &
  Verwer 2003, §IV.3) with the pointwise reaction as a fourth, diagonal
  operator: ``Y = c + dt(Ac + s)``, ``(I − θdt A_j)(Y_j − c) = Y_{j−1} − c``.
  A steady state ``Ac + s = 0`` is a fixed point for every ``dt``; θ = 1/2 is
  second order in time, θ = 1 first order and monotone. Unconditionally stable
  for θ ≥ 1/2.
* ``lod`` — BioFVM's backward-Euler LOD (Ghaffarizadeh et al. 2016): one
  implicit sweep per axis with ``k/ndim`` of the decay in each, then the
  per-voxel secretion/uptake update ``ρ ← (ρ + dt·S ρ*)/(1 + dt(S + U))``,
  ``ρ += dt·E``.
* ``explicit`` — FTCS on the conservative stencil, sub-stepped so that
  ``dt_sub·4D Σ 1/h² ≤ 2``; decay and cell exchange backward Euler in every
  sub-step (no stability limit from them; steady states are fixed points).
* ``spectral`` — exponential integrator, exact in time for the uniform linear
  part: DCT-II on no-flux/flux axes, FFT on periodic axes; cell exchange as
  exact local half-steps around it (Strang splitting, second order in dt).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxcell._node import is_concrete
from jaxcell.grid import Grid

HIGHEST = lax.Precision.HIGHEST


class Faces(NamedTuple):
    """Static face kinds and traced face values of one substrate."""

    kinds: tuple[str, ...]  # per face, x-, x+, y-, ...: "flux" | "dirichlet" | "periodic"
    values: jax.Array  # (2*ndim,) flux (amount/(µm^(ndim-1) s)) or held value


class Exchange(NamedTuple):
    """Per-voxel cell exchange of one substrate (all ``grid.shape``).

    clearance: 1/s (uptake + saturation rate, summed over cells / voxel volume);
    sat_source: amount/(µm^ndim·s) (saturation rate × target density);
    export: amount/(µm^ndim·s) zero-order secretion.
    """

    clearance: jax.Array
    sat_source: jax.Array
    export: jax.Array


class Amounts(NamedTuple):
    """Amounts moved during one step, scalars (amount)."""

    secreted: jax.Array
    inflow: jax.Array
    outflow: jax.Array
    uptake: jax.Array
    decayed: jax.Array


def _zero_amounts(dtype: Any) -> Amounts:
    z = jnp.zeros((), dtype)
    return Amounts(z, z, z, z, z)


def _add(a: Amounts, b: Amounts) -> Amounts:
    return Amounts(*(x + y for x, y in zip(a, b)))


class Layout(NamedTuple):
    """Shardings of one field on a mesh: as stored (split along axis 0) and split along axis 1."""

    split: Any
    across: Any


def along_axis(fn: Any, x: jax.Array, axis: int, layout: Layout | None) -> jax.Array:
    """``fn(x)`` for line work (solves, transforms) along ``axis``.

    When the field is split along that axis, ``fn`` runs on the field split
    along axis 1 instead: two all-to-alls of 1/devices of the field, where
    sharding propagation would gather the whole field on every device (memory
    and traffic that grow with the grid, not with the shard).
    """
    if layout is None or x.ndim < 2:
        return fn(x)
    if axis != 0:  # local in the stored layout; pinned so that no other layout leaks in
        return lax.with_sharding_constraint(fn(lax.with_sharding_constraint(x, layout.split)), layout.split)
    # pinned on both sides of each reshard: otherwise layouts propagate through it
    # and the partitioner gathers fn's input, or reshards the inputs of x piecewise
    x = lax.with_sharding_constraint(x, layout.split)
    out = fn(lax.with_sharding_constraint(x, layout.across))
    return lax.with_sharding_constraint(lax.with_sharding_constraint(out, layout.across), layout.split)


def _split(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(inflow, outflow) of an array of signed amounts."""
    return jnp.sum(jnp.maximum(x, 0)), jnp.sum(jnp.maximum(-x, 0))


def _slab(c: jax.Array, axis: int, end: int) -> jax.Array:
    return lax.index_in_dim(c, 0 if end == 0 else c.shape[axis] - 1, axis, keepdims=False)


# ---------------------------------------------------------------------------
# Operators


def laplacian_axis(c: jax.Array, axis: int, h: float, kinds: tuple[str, str]) -> jax.Array:
    """(1/h²)·(second difference of c along ``axis``) with homogeneous face conditions.

    ``dirichlet`` faces contribute ``−2c₀/h²`` (value 0 at the face), ``flux``
    faces nothing, ``periodic`` wraps. The inhomogeneous parts live in
    :func:`boundary_source`.
    """
    n = c.shape[axis]
    if kinds[0] == "periodic":
        return (jnp.roll(c, 1, axis) + jnp.roll(c, -1, axis) - 2 * c) / h**2
    if n == 1:
        lo = hi = jnp.zeros_like(c)
    else:
        d = jnp.diff(c, axis=axis)
        pad = [(0, 0)] * c.ndim
        pad[axis] = (1, 0)
        lo = jnp.pad(d, pad)  # c[i] - c[i-1], zero on the lower face
        pad[axis] = (0, 1)
        hi = jnp.pad(d, pad)  # c[i+1] - c[i], zero on the upper face
    out = hi - lo
    for end, kind in enumerate(kinds):
        if kind == "dirichlet":
            idx = [slice(None)] * c.ndim
            idx[axis] = slice(0, 1) if end == 0 else slice(n - 1, n)
            out = out.at[tuple(idx)].add(-2 * c[tuple(idx)])
    return out / h**2


def laplacian(c: jax.Array, grid: Grid, kinds: tuple[str, ...]) -> jax.Array:
    """Σ over axes of :func:`laplacian_axis` (µm⁻² × c)."""
    return sum(laplacian_axis(c, a, grid.spacing[a], kinds[2 * a: 2 * a + 2]) for a in range(grid.ndim))


def add_boundary_source(x: jax.Array, grid: Grid, D: jax.Array, faces: Faces, scale: Any = 1.0,
                        axes: tuple[int, ...] | None = None) -> jax.Array:
    """``x`` plus ``scale`` × the constant face source, touching only the face slabs.

    The source (amount/(µm^ndim·s)) is ``j/h`` in voxels next to a flux face and
    ``2Dv/h²`` next to a Dirichlet face. Each slab is read, shifted and written
    back in place (a dynamic-update-slice, not a scatter: the partitioner keeps
    a field split over devices split for it, where a scatter made it reshard
    the whole field), so no grid-sized source array exists.
    """
    for a in range(grid.ndim) if axes is None else axes:
        n, h = grid.shape[a], grid.spacing[a]
        for end in (0, 1):
            kind, v = faces.kinds[2 * a + end], faces.values[2 * a + end]
            if kind == "periodic":
                continue
            rate = (scale * (v / h if kind == "flux" else 2 * D * v / h**2)).astype(x.dtype)
            i = 0 if end == 0 else n - 1
            x = lax.dynamic_update_slice_in_dim(x, lax.slice_in_dim(x, i, i + 1, axis=a) + rate, i, axis=a)
    return x


def boundary_source(grid: Grid, D: jax.Array, faces: Faces, axes: tuple[int, ...] | None = None,
                    dtype: Any = None) -> jax.Array:
    """The constant face source of :func:`add_boundary_source` as a ``grid.shape`` field."""
    return add_boundary_source(jnp.zeros(grid.shape, dtype or faces.values.dtype), grid, D, faces, axes=axes)


def face_amounts(grid: Grid, D: jax.Array, faces: Faces, ceff: list[jax.Array], dt: jax.Array,
                 mask: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """(inflow, outflow) through the faces during a step.

    ``ceff[a]`` is the concentration at which axis ``a``'s operator acted (the
    scheme decides). Face voxels that are held (``mask``) exchange nothing.
    """
    inflow = outflow = jnp.zeros((), dt.dtype)
    vol = grid.voxel_volume
    for a in range(grid.ndim):
        h = grid.spacing[a]
        area = vol / h
        for end in (0, 1):
            kind, v = faces.kinds[2 * a + end], faces.values[2 * a + end]
            if kind == "periodic":
                continue
            free = 1.0 if mask is None else 1.0 - _slab(mask, a, end).astype(dt.dtype)
            if kind == "flux":
                amt = v * area * dt * free
            else:
                amt = 2 * D / h**2 * (v - _slab(ceff[a], a, end)) * vol * dt * free
            i, o = _split(jnp.broadcast_to(amt, _slab(ceff[a], a, end).shape))
            inflow, outflow = inflow + i, outflow + o
    return inflow, outflow


def held_amounts(grid: Grid, D: jax.Array, kinds: tuple[str, ...], ceff: list[jax.Array],
                 dt: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(inflow, outflow) supplied by held interior voxels: the flux out of them.

    Sums ``−D·lap_a(ceff[a])`` over held voxels; fluxes between two held voxels
    cancel pairwise, so what remains is what crossed into free voxels.
    """
    open_kinds = tuple("flux" if k == "dirichlet" else k for k in kinds)
    total = jnp.zeros(grid.shape, dt.dtype)
    for a in range(grid.ndim):
        total = total - D * laplacian_axis(ceff[a], a, grid.spacing[a], open_kinds[2 * a: 2 * a + 2])
    per_voxel = jnp.where(mask, total, 0) * grid.voxel_volume * dt
    return _split(per_voxel)


# ---------------------------------------------------------------------------
# One-dimensional implicit solves


@functools.lru_cache(maxsize=256)
def axis_laplacian(n: int, kinds: tuple[str, str]) -> np.ndarray:
    """Unscaled 1D second-difference matrix ``(n, n)`` with the axis' face conditions.

    No-flux/flux faces drop the outer neighbour, a Dirichlet face adds ``−2``
    on the outer diagonal (value 0 at the face, half a voxel away), periodic wraps.
    Symmetric; read-only.
    """
    lap = np.zeros((n, n))
    for i in range(n - 1):
        lap[i, i + 1] = lap[i + 1, i] = 1.0
        lap[i, i] -= 1.0
        lap[i + 1, i + 1] -= 1.0
    if kinds[0] == "periodic" and n > 1:
        lap[0, n - 1] += 1.0
        lap[n - 1, 0] += 1.0
        lap[0, 0] -= 1.0
        lap[n - 1, n - 1] -= 1.0
    for end, kind in enumerate(kinds):
        if kind == "dirichlet":
            i = 0 if end == 0 else n - 1
            lap[i, i] -= 2.0
    lap.flags.writeable = False
    return lap


@functools.lru_cache(maxsize=256)
def _axis_eigh(n: int, kinds: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    w, v = np.linalg.eigh(axis_laplacian(n, kinds))
    w.flags.writeable = False
    v.flags.writeable = False
    return w, v


def axis_matrix(n: int, h: float, kinds: tuple[str, str], alpha: jax.Array, rho: jax.Array) -> jax.Array:
    """Dense ``I − alpha·h²·L₁ + rho·I`` for one axis, ``(n, n)``.

    ``alpha = γD/h²`` (γ = θdt or dt), ``rho`` the reaction share (γk/ndim).
    """
    lap = jnp.asarray(axis_laplacian(n, kinds), alpha.dtype)
    return (1 + rho) * jnp.eye(n, dtype=alpha.dtype) - alpha * lap


def axis_inverse(n: int, h: float, kinds: tuple[str, str], alpha: jax.Array, rho: jax.Array) -> jax.Array:
    """Inverse of :func:`axis_matrix`, ``(n, n)``.

    Built from the (static, NumPy) eigendecomposition ``L₁ = V diag(w) Vᵀ`` as
    ``V diag(1/(1 + rho − alpha·w)) Vᵀ``: no LU in the compiled program (faster
    to compile), smooth in the traced ``alpha`` and ``rho``, and accurate to
    round-off for any ``alpha ≥ 0``.
    """
    w, v = _axis_eigh(n, kinds)
    dtype = jnp.result_type(alpha, rho)
    vj = jnp.asarray(v, dtype)
    scale = 1.0 / (1 + rho - alpha * jnp.asarray(w, dtype))
    return jnp.matmul(vj * scale[None, :], vj.T, precision=HIGHEST)


def apply_axis(minv: jax.Array, x: jax.Array, axis: int) -> jax.Array:
    """Multiply every line of ``x`` along ``axis`` by ``minv``.

    Written as one GEMM on a reshaped view (batched over the leading axes for a
    middle axis), so that no transpose of the field is materialised.
    """
    shape, n = x.shape, x.shape[axis]
    lead, trail = int(np.prod(shape[:axis])), int(np.prod(shape[axis + 1:]))
    if trail == 1:  # last axis: X (lead, n) · Mᵀ
        y = lax.dot_general(x.reshape(lead, n), minv, (((1,), (1,)), ((), ())), precision=HIGHEST)
    elif lead == 1:  # first axis: M · X (n, trail)
        y = lax.dot_general(minv, x.reshape(n, trail), (((1,), (0,)), ((), ())), precision=HIGHEST)
    else:
        m = jnp.broadcast_to(minv, (lead, n, n))
        y = lax.dot_general(m, x.reshape(lead, n, trail), (((2,), (1,)), ((0,), (0,))), precision=HIGHEST)
    return y.reshape(shape)


def thomas_factor(n: int, kinds: tuple[str, str], alpha: jax.Array, rho: jax.Array,
                  free: jax.Array, axis: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Factor the per-line tridiagonal systems of a sweep with held voxels.

    Rows of held voxels (``free == 0``) are identity rows. Returns
    ``(lower, inv_pivot, upper)`` with ``axis`` moved first, ready for
    :func:`thomas_solve`.
    """
    f = jnp.moveaxis(free, axis, 0).astype(alpha.dtype)
    diag = np.full(n, 2.0)
    diag[0] = diag[-1] = 1.0
    if n == 1:
        diag[0] = 0.0
    for end, kind in enumerate(kinds):
        if kind == "dirichlet":
            diag[0 if end == 0 else n - 1] += 2.0
    diag = jnp.asarray(diag, alpha.dtype).reshape((n,) + (1,) * (f.ndim - 1))
    b = f * (1 + rho + alpha * diag) + (1 - f)
    off = -alpha * f  # both off-diagonals of a free row; zero on held rows
    lower = off.at[0].set(0.0)
    upper = off.at[n - 1].set(0.0)

    def fwd(cp: jax.Array, row: tuple[jax.Array, jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        lo, bi, up = row
        piv = 1.0 / (bi - lo * cp)
        return up * piv, piv

    _, inv_pivot = lax.scan(fwd, jnp.zeros_like(b[0]), (lower, b, upper))
    return lower, inv_pivot, upper


def thomas_solve(factors: tuple[jax.Array, jax.Array, jax.Array], r: jax.Array, axis: int) -> jax.Array:
    """Solve the factored systems of :func:`thomas_factor` for right-hand side ``r``.

    The factors may be per voxel (held voxels) or one scalar per row, broadcast
    over every line.
    """
    lower, inv_pivot, upper = factors
    cprime = upper * inv_pivot
    rr = jnp.moveaxis(r, axis, 0)

    def fwd(dp: jax.Array, row: Any) -> tuple[jax.Array, jax.Array]:
        lo, piv, ri = row
        d = (ri - lo * dp) * piv
        return d, d

    z = jnp.zeros_like(rr[0])
    _, dp = lax.scan(fwd, z, (lower, inv_pivot, rr))

    def bwd(y: jax.Array, row: Any) -> tuple[jax.Array, jax.Array]:
        d, c = row
        y = d - c * y
        return y, y

    _, y = lax.scan(bwd, z, (dp, cprime), reverse=True)
    return jnp.moveaxis(y, 0, axis)


class AxisSolver(NamedTuple):
    """Precomputed solve of ``(I − α h² L₁ + ρ) y = r`` along one axis."""

    dense: jax.Array | None
    factors: tuple[jax.Array, jax.Array, jax.Array] | None

    def __call__(self, r: jax.Array, axis: int) -> jax.Array:
        if self.dense is not None:
            return apply_axis(self.dense, r, axis)
        return thomas_solve(self.factors, r, axis)


DENSE_MAX = 192  # longest axis solved with the dense inverse (GEMM); see axis_solver


def axis_solver(grid: Grid, axis: int, kinds: tuple[str, str], alpha: jax.Array, rho: jax.Array,
                mask: jax.Array | None) -> AxisSolver:
    """Pick how to solve one axis's tridiagonal systems.

    Short axes (n <= DENSE_MAX) and periodic ones: the dense inverse applied as a
    GEMM (2n flops per voxel, but no loop). Longer axes: a Thomas sweep whose
    factorisation is one length-n vector shared by every line (O(1) flops per
    voxel; a ``lax.scan`` over the axis). Held voxels change the rows of some
    lines only, so they get a per-voxel factorisation.
    """
    n = grid.shape[axis]
    if mask is None:
        if n <= DENSE_MAX or kinds[0] == "periodic":
            return AxisSolver(axis_inverse(n, grid.spacing[axis], kinds, alpha, rho), None)
        return AxisSolver(None, thomas_factor(n, kinds, alpha, rho, jnp.ones((n,), bool), 0))
    if kinds[0] == "periodic":
        raise ValueError("interior Dirichlet voxels on a periodic axis are not supported by the "
                         "implicit and lod solvers; use solver='explicit' or drop the periodic axis")
    return AxisSolver(None, thomas_factor(n, kinds, alpha, rho, ~mask, axis))


# ---------------------------------------------------------------------------
# Exact local exchange (explicit and spectral solvers)


def phi2(z: jax.Array) -> jax.Array:
    """(e^z − 1 − z)/z², accurate for all z <= 0."""
    small = jnp.abs(z) < 1e-2
    zs = jnp.where(small, 1.0, z)  # keep the closed form away from z = 0 (and its gradient finite)
    series = 1 / 2 + z / 6 + z**2 / 24 + z**3 / 120 + z**4 / 720
    return jnp.where(small, series, (jnp.expm1(zs) - zs) / zs**2)


def exact_exchange(c: jax.Array, ex: Exchange, dt: jax.Array, vol: float) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Exact solution of dc/dt = −λc + s over dt per voxel; returns (c', secreted, uptake)."""
    lam = ex.clearance
    s = ex.sat_source + ex.export
    z = -lam * dt
    p2 = phi2(z)
    p1 = 1 + z * p2  # φ1 derived from φ2 so that the amounts balance exactly
    integral = c * dt * p1 + s * dt**2 * p2  # ∫ c dt over the step
    new = c + dt * p1 * (s - lam * c)
    return new, jnp.sum(s) * dt * vol, jnp.sum(lam * integral) * vol


# ---------------------------------------------------------------------------
# Steppers for one substrate


class Params(NamedTuple):
    """Traced parameters of one substrate for a step."""

    D: jax.Array
    k: jax.Array
    faces: Faces
    mask: jax.Array | None  # grid.shape bool, held voxels
    hold: jax.Array | None  # grid.shape, held values


def douglas_setup(grid: Grid, p: Params, dt: jax.Array, theta: float) -> list[AxisSolver]:
    return [axis_solver(grid, a, p.faces.kinds[2 * a: 2 * a + 2], theta * dt * p.D / grid.spacing[a]**2,
                        jnp.zeros((), dt.dtype), p.mask) for a in range(grid.ndim)]


def douglas_step(grid: Grid, p: Params, solvers: list[AxisSolver], c: jax.Array, ex: Exchange | None,
                 dt: jax.Array, theta: float, layout: Layout | None = None) -> tuple[jax.Array, Amounts]:
    """One Douglas-ADI step (θ-weighted), all linear terms implicit."""
    vol = grid.voxel_volume
    react = p.k + (0 if ex is None else ex.clearance)
    rate = p.D * laplacian(c, grid, p.faces.kinds) - react * c
    if ex is not None:
        rate = rate + ex.sat_source + ex.export
    rate = add_boundary_source(rate, grid, p.D, p.faces)
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
    inflow, outflow = face_amounts(grid, p.D, p.faces, ceff, dt, p.mask)
    if p.mask is not None:
        hi, ho = held_amounts(grid, p.D, p.faces.kinds, ceff, dt, p.mask)
        inflow, outflow = inflow + hi, outflow + ho
    decayed = p.k * dt * vol * jnp.sum(c0 * free)
    if ex is None:
        secreted = uptake = jnp.zeros((), c.dtype)
    else:
        secreted = dt * vol * jnp.sum((ex.sat_source + ex.export) * free)
        uptake = dt * vol * jnp.sum(ex.clearance * c0 * free)
    return new, Amounts(secreted, inflow, outflow, uptake, decayed)


def lod_setup(grid: Grid, p: Params, dt: jax.Array) -> list[AxisSolver]:
    rho = dt * p.k / grid.ndim
    return [axis_solver(grid, a, p.faces.kinds[2 * a: 2 * a + 2], dt * p.D / grid.spacing[a]**2, rho, p.mask)
            for a in range(grid.ndim)]


def lod_step(grid: Grid, p: Params, solvers: list[AxisSolver], c: jax.Array, ex: Exchange | None,
             dt: jax.Array, layout: Layout | None = None) -> tuple[jax.Array, Amounts]:
    """BioFVM: backward-Euler sweep per axis (k/ndim each), then the per-voxel exchange."""
    vol = grid.voxel_volume
    free = 1.0 if p.mask is None else ~p.mask
    ceff = []
    decayed = jnp.zeros((), c.dtype)
    rho = dt * p.k / grid.ndim
    for a, solve in enumerate(solvers):
        rhs = add_boundary_source(c, grid, p.D, p.faces, dt, axes=(a,))
        if p.mask is not None:
            rhs = jnp.where(p.mask, c, rhs)
        # delta form: M y = rhs as y = rhs + M⁻¹(rhs − M rhs), so that the round-off
        # in M⁻¹'s column sums acts on a small correction, not on the whole field
        # (the direct form drifts the mass by ~1e-12 per 1e4 steps in 3D).
        res = dt * p.D * laplacian_axis(rhs, a, grid.spacing[a], p.faces.kinds[2 * a: 2 * a + 2]) - rho * rhs
        if p.mask is not None:
            res = jnp.where(p.mask, 0, res)
        c = rhs + along_axis(functools.partial(solve, axis=a), res, a, layout)
        ceff.append(c)
        decayed = decayed + dt * p.k / grid.ndim * vol * jnp.sum(c * free)
    # every sweep's face flux acted on that sweep's own result
    inflow, outflow = face_amounts(grid, p.D, p.faces, ceff, dt, p.mask)
    if p.mask is not None:
        hi, ho = held_amounts(grid, p.D, p.faces.kinds, ceff, dt, p.mask)
        inflow, outflow = inflow + hi, outflow + ho
    secreted = uptake = jnp.zeros((), c.dtype)
    if ex is not None:
        clear, sat = ex.clearance * free, ex.sat_source * free
        export = ex.export * free
        c = (c + dt * sat) / (1 + dt * clear)
        uptake = dt * vol * jnp.sum(clear * c)
        c = c + dt * export
        secreted = dt * vol * jnp.sum(sat + export)
    return c, Amounts(secreted, inflow, outflow, uptake, decayed)


def stability_rate(grid: Grid, D: float) -> float:
    """FTCS diffusion needs dt·rate ≤ 2 (1/s): rate = 4D Σ 1/h². Decay and uptake are implicit."""
    return 4 * D * sum(1 / h**2 for h in grid.spacing)


def substeps(grid: Grid, D_max: float, dt: float) -> int:
    """Smallest number of FTCS sub-steps that keeps dt/n inside the stability limit."""
    return max(1, int(np.ceil(dt * stability_rate(grid, D_max) / 2 * (1 - 1e-12))))


def ftcs_step(grid: Grid, p: Params, c: jax.Array, ex: Exchange | None, dt: jax.Array,
              n_sub: int) -> tuple[jax.Array, Amounts]:
    """``n_sub`` sub-steps of dt/n_sub: explicit diffusion, implicit local reactions.

    Each sub-step of length ``h`` is ``c' (1 + h(k + λ)) = c + h(D∇²c + s)`` with
    ``λ`` the cells' clearance and ``s`` their secretion (per voxel): FTCS for
    diffusion (stable for ``h·4DΣ1/Δx² ≤ 2``, whatever ``k`` and ``λ``), backward
    Euler for the local terms, so the discrete steady state ``D∇²c − (k+λ)c + s
    = 0`` is a fixed point of every sub-step and stiff uptake cannot overshoot.
    """
    vol = grid.voxel_volume
    h = dt / n_sub
    react, src = p.k, None
    if ex is not None:
        lam, src = ex.clearance, ex.sat_source + ex.export
        if p.mask is not None:
            lam, src = jnp.where(p.mask, 0, lam), jnp.where(p.mask, 0, src)
        react = react + lam
    inv = 1 / (1 + h * react)  # once per step: a multiply per voxel and sub-step, not a divide

    def sub(carry: tuple[jax.Array, Amounts], _: None) -> tuple[tuple[jax.Array, Amounts], None]:
        c, acc = carry
        rhs = c + h * p.D * laplacian(c, grid, p.faces.kinds)
        if src is not None:
            rhs = rhs + h * src
        new = add_boundary_source(rhs, grid, p.D, p.faces, h) * inv
        # held voxels do not evolve: no decay, no face flow of their own; they supply
        # what diffuses into their free neighbours (the same books as the implicit solver)
        inflow, outflow = face_amounts(grid, p.D, p.faces, [c] * grid.ndim, h, p.mask)
        decayed = p.k * h * vol * jnp.sum(new if p.mask is None else jnp.where(p.mask, 0, new))
        z = jnp.zeros((), c.dtype)
        secreted = uptake = z
        if src is not None:
            secreted, uptake = h * vol * jnp.sum(src), h * vol * jnp.sum(lam * new)
        if p.mask is not None:
            hi, ho = held_amounts(grid, p.D, p.faces.kinds, [c] * grid.ndim, h, p.mask)
            ji, jo = _split((p.hold - c) * vol * p.mask)  # a held voxel not yet at its value
            inflow, outflow = inflow + hi + ji, outflow + ho + jo
            new = jnp.where(p.mask, p.hold, new)
        return (new, _add(acc, Amounts(secreted, inflow, outflow, uptake, decayed))), None

    if n_sub == 1:
        (c, acc), _ = sub((c, _zero_amounts(c.dtype)), None)
    else:
        (c, acc), _ = lax.scan(sub, (c, _zero_amounts(c.dtype)), None, length=n_sub)
    return c, acc


def _spectral_axes(grid: Grid, kinds: tuple[str, ...]) -> tuple[list[int], list[int]]:
    cos_axes, fft_axes = [], []
    for a in range(grid.ndim):
        k = kinds[2 * a: 2 * a + 2]
        if "dirichlet" in k:
            raise ValueError("solver='spectral' handles no-flux, flux and periodic faces only; "
                             "use solver='implicit' for Dirichlet faces")
        (fft_axes if k[0] == "periodic" else cos_axes).append(a)
    return cos_axes, fft_axes


def spectral_eigenvalues(grid: Grid, kinds: tuple[str, ...], dtype: Any) -> jax.Array:
    """Eigenvalues of the discrete Laplacian (µm⁻²) in the DCT/FFT basis, broadcasting to ``grid.shape``.

    Built as a sum of one vector per axis, so the program holds ``Σn`` numbers,
    not a grid-sized constant (512 MiB at 512³ in float32), and XLA computes
    the sum where it is used.
    """
    cos_axes, _ = _spectral_axes(grid, kinds)
    lam = jnp.zeros((), dtype)
    for a in range(grid.ndim):
        n, h = grid.shape[a], grid.spacing[a]
        m = np.arange(n)
        s = np.sin(np.pi * m / (2 * n)) if a in cos_axes else np.sin(np.pi * m / n)
        shape = [1] * grid.ndim
        shape[a] = n
        lam = lam - jnp.asarray((4 / h**2 * s**2).reshape(shape), dtype)
    return jnp.broadcast_to(lam, grid.shape)


def dct_matrix(n: int, dtype: Any) -> jax.Array:
    """Orthonormal DCT-II matrix ``(n, n)``: row k is the k-th cosine mode sampled at voxel centres."""
    k, i = np.arange(n)[:, None], np.arange(n)[None, :]
    m = np.sqrt(2.0 / n) * np.cos(np.pi * k * (i + 0.5) / n)
    m[0] /= np.sqrt(2.0)
    return jnp.asarray(m, dtype)


def to_spectral(c: jax.Array, cos_axes: list[int], fft_axes: list[int], layout: Layout | None = None) -> jax.Array:
    """Coefficients in the no-flux cosine basis (cos axes) and Fourier basis (periodic axes).

    The cosine transform is a GEMM with the DCT-II matrix per axis: on CPU it is
    several times faster than XLA's FFT-based DCT and needs no full-grid
    complex twiddle constant. With a ``layout``, axis 0 is transformed last,
    on the field split along axis 1 (see :func:`along_axis`); the result is
    left in that layout for :func:`from_spectral`.
    """
    last = 0 if layout is not None and c.ndim > 1 else None
    for a in cos_axes:
        if a != last:
            c = apply_axis(dct_matrix(c.shape[a], c.dtype), c, a)
    rest = [a for a in fft_axes if a != last]
    c = jnp.fft.fftn(c, axes=rest) if rest else c
    if last is not None:
        # pinned on both sides of the reshard (as in along_axis): otherwise the
        # transforms above run on the across layout, along the axis it splits
        c = lax.with_sharding_constraint(lax.with_sharding_constraint(c, layout.split), layout.across)
        c = apply_axis(dct_matrix(c.shape[0], c.dtype), c, 0) if 0 in cos_axes else jnp.fft.fft(c, axis=0)
        c = lax.with_sharding_constraint(c, layout.across)
    return c


def from_spectral(x: jax.Array, cos_axes: list[int], fft_axes: list[int], layout: Layout | None = None) -> jax.Array:
    """Inverse of :func:`to_spectral` (real output, in the stored layout)."""
    first = 0 if layout is not None and x.ndim > 1 else None
    if first is not None:
        x = lax.with_sharding_constraint(x, layout.across)
        x = apply_axis(dct_matrix(x.shape[0], x.dtype).T, x, 0) if 0 in cos_axes else jnp.fft.ifft(x, axis=0)
        x = lax.with_sharding_constraint(lax.with_sharding_constraint(x, layout.across), layout.split)
    rest = [a for a in fft_axes if a != first]
    if rest:
        x = jnp.fft.ifftn(x, axes=rest)
    if jnp.iscomplexobj(x):
        x = x.real
    for a in cos_axes:
        if a != first:
            x = apply_axis(dct_matrix(x.shape[a], x.dtype).T, x, a)
    return x


def spectral_step(grid: Grid, p: Params, c: jax.Array, ex: Exchange | None,
                  dt: jax.Array, layout: Layout | None = None) -> tuple[jax.Array, Amounts]:
    """Exact step of dc/dt = D∇²c − kc + boundary source between two exact half-steps of cell exchange.

    The symmetric (Strang) splitting is second order in dt; the exchange
    half-steps are exact local solutions, so stiff uptake stays positive.
    """
    if p.mask is not None:
        raise ValueError("solver='spectral' cannot hold interior voxels; use solver='implicit'")
    cos_axes, fft_axes = _spectral_axes(grid, p.faces.kinds)
    vol = grid.voxel_volume
    secreted = uptake = jnp.zeros((), c.dtype)
    if ex is not None:
        c, secreted, uptake = exact_exchange(c, ex, dt / 2, vol)
    z = (p.D * spectral_eigenvalues(grid, p.faces.kinds, c.dtype) - p.k) * dt
    p2 = phi2(z)
    p1 = 1 + z * p2
    ch = to_spectral(c, cos_axes, fft_axes, layout)
    # e^z = 1 + z·φ1(z): the homogeneous part of the exact step
    rhs = (1 + z * p1) * ch
    zero_faces = all(k == "periodic" or (is_concrete(v) and float(np.asarray(v)) == 0.0)
                     for k, v in zip(p.faces.kinds, p.faces.values))
    if zero_faces:
        # no face source (statically known): skip its transform
        src_total = jnp.zeros((), c.dtype)
    else:
        # the barrier keeps XLA from constant-folding the transform of a constant source
        src = lax.optimization_barrier(boundary_source(grid, p.D, p.faces, dtype=c.dtype))
        rhs = rhs + dt * p1 * to_spectral(src, cos_axes, fft_axes, layout)
        src_total = jnp.sum(src) * vol
    new = from_spectral(rhs, cos_axes, fft_axes, layout)
    # total mass obeys dM/dt = −kM + Σsrc exactly: integrate it in closed form, and
    # put the transforms' round-off in the zero mode back (it would random-walk the mass)
    zk = -p.k * dt
    q2 = phi2(zk)
    q1 = 1 + zk * q2
    mass = jnp.sum(c) * vol
    decayed = p.k * (dt * q1 * mass + dt**2 * q2 * src_total)
    target = (1 + zk * q1) * mass + dt * q1 * src_total
    new = new + (target - jnp.sum(new) * vol) / (vol * new.size)
    inflow, outflow = face_amounts(grid, p.D, p.faces, [c] * grid.ndim, dt, None)
    if ex is not None:
        new, s2, u2 = exact_exchange(new, ex, dt / 2, vol)
        secreted, uptake = secreted + s2, uptake + u2
    return new, Amounts(secreted, inflow, outflow, uptake, decayed)

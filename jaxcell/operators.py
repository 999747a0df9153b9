"""Finite-volume operators shared by the solvers and :func:`jaxcell.steady_state`.

Fields are cell-centred (``grid.shape``, amount/µm^ndim). The diffusion operator
of one substrate is ``D∇²c`` with each face's homogeneous law
(``−conductance/h · c₀`` in the voxel next to it, see :mod:`jaxcell.boundary`);
the faces' inflows are a separate constant source (:func:`add_face_source`).
Nothing here knows which face condition it is handed: it asks the condition for
its ``inflow``, ``conductance``, ``fixed_ratio``, ``periodic`` and ``spectral_basis``.

Contents: axis and full diffusion operators, face sources and the amounts that
cross faces and leave held voxels (for the budget), one-dimensional implicit
solves (dense inverse from a static eigendecomposition, or a Thomas sweep), the
DCT/FFT transforms and Laplacian eigenvalues of the spectral solver, the
φ-functions, and the sharded line-work helper :func:`along_axis`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxcell.boundary import Boundary
from jaxcell.grid import Grid

HIGHEST = lax.Precision.HIGHEST
Faces = tuple[Boundary, ...]  # one condition per face: x-, x+, y-, y+, z-, z+ (up to ndim)


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


def rate_sum(k: jax.Array, x: jax.Array) -> jax.Array:
    """Σ k·x over the grid, with a scalar ``k`` taken out of the sum: then the sum of ``x`` fuses with the
    kernel that computes ``x`` (measured: a separate pass for ``k·x`` cost 20-30 % of an explicit 64³ step)."""
    return k * jnp.sum(x) if jnp.ndim(k) == 0 else jnp.sum(k * x)


def split_signed(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(inflow, outflow) of an array of signed amounts."""
    return jnp.sum(jnp.maximum(x, 0)), jnp.sum(jnp.maximum(-x, 0))


def slab(c: jax.Array, axis: int, end: int) -> jax.Array:
    """The voxel layer of ``c`` next to face ``end`` (0 lower, 1 upper) of ``axis``, keeping the axis."""
    i = 0 if end == 0 else c.shape[axis] - 1
    return lax.slice_in_dim(c, i, i + 1, axis=axis)


def add_to_slab(c: jax.Array, value: jax.Array, axis: int, end: int) -> jax.Array:
    """``c`` with ``value`` added to the layer next to face ``end`` of ``axis``.

    A dynamic-update-slice, not a scatter: the partitioner keeps a field split
    over devices split for it, where a scatter made it reshard the whole field.
    """
    i = 0 if end == 0 else c.shape[axis] - 1
    return lax.dynamic_update_slice_in_dim(c, slab(c, axis, end) + value, i, axis=axis)


def axis_faces(faces: Faces, axis: int) -> tuple[Boundary, Boundary]:
    return faces[2 * axis], faces[2 * axis + 1]


# ---------------------------------------------------------------------------
# Operators


def second_difference(c: jax.Array, axis: int, h: float, periodic: bool) -> jax.Array:
    """``∂²c/∂x²`` along ``axis`` (µm⁻² × c), conservative, closed at the faces (zero flux) unless periodic."""
    n = c.shape[axis]
    if periodic:
        return (jnp.roll(c, 1, axis) + jnp.roll(c, -1, axis) - 2 * c) / h**2
    if n == 1:
        return jnp.zeros_like(c)
    d = jnp.diff(c, axis=axis)
    pad = [(0, 0)] * c.ndim
    pad[axis] = (1, 0)
    lo = jnp.pad(d, pad)  # c[i] - c[i-1], zero on the lower face
    pad[axis] = (0, 1)
    hi = jnp.pad(d, pad)  # c[i+1] - c[i], zero on the upper face
    return (hi - lo) / h**2


def _face_terms(out: jax.Array, c: jax.Array, axis: int, h: float, D: jax.Array,
                faces: tuple[Boundary, Boundary]) -> jax.Array:
    """``out`` minus ``g/h·c₀`` in the voxels next to each face with a conductance ``g``."""
    for end, face in enumerate(faces):
        g = None if face.periodic else face.conductance(D, h)
        if g is not None:
            out = add_to_slab(out, -(g / h) * slab(c, axis, end), axis, end)
    return out


def diffuse_axis(c: jax.Array, axis: int, h: float, D: jax.Array, faces: tuple[Boundary, Boundary],
                 face_terms: bool = True) -> jax.Array:
    """``D·∂²c/∂x²`` along ``axis`` (amount/(µm^ndim·s)), conservative, with the faces' homogeneous laws.

    A face with a conductance ``g`` removes ``g/h·c₀`` from the voxel next to it;
    ``face_terms=False`` drops those (closed faces), periodic axes wrap.
    """
    out = D * second_difference(c, axis, h, faces[0].periodic)
    return _face_terms(out, c, axis, h, D, faces) if face_terms else out


def diffuse(c: jax.Array, grid: Grid, D: jax.Array, faces: Faces, face_terms: bool = True) -> jax.Array:
    """Σ over axes of :func:`diffuse_axis`, with D applied once to the sum (one multiply per voxel, not ndim)."""
    out = D * sum(second_difference(c, a, grid.spacing[a], axis_faces(faces, a)[0].periodic)
                  for a in range(grid.ndim))
    if face_terms:
        for a in range(grid.ndim):
            out = _face_terms(out, c, a, grid.spacing[a], D, axis_faces(faces, a))
    return out


def add_face_source(x: jax.Array, grid: Grid, D: jax.Array, faces: Faces, scale: Any = 1.0,
                    axes: Sequence[int] | None = None) -> jax.Array:
    """``x`` plus ``scale`` × the faces' constant inflow ``inflow/h`` (amount/(µm^ndim·s)) in the face voxels.

    Touches only the face slabs, so no grid-sized source array exists.
    """
    for a in range(grid.ndim) if axes is None else axes:
        h = grid.spacing[a]
        for end, face in enumerate(axis_faces(faces, a)):
            j = None if face.periodic else face.inflow(D, h)
            if j is not None:
                x = add_to_slab(x, (scale * j / h).astype(x.dtype), a, end)
    return x


def face_source(grid: Grid, D: jax.Array, faces: Faces, axes: Sequence[int] | None = None,
                dtype: Any = None) -> jax.Array:
    """The constant face source of :func:`add_face_source` as a ``grid.shape`` field."""
    return add_face_source(jnp.zeros(grid.shape, dtype or jnp.result_type(D)), grid, D, faces, axes=axes)


def face_amounts(grid: Grid, D: jax.Array, faces: Faces, ceff: Sequence[jax.Array], dt: jax.Array,
                 mask: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """(inflow, outflow) amounts through the faces during a step.

    ``ceff[a]`` is the concentration at which axis ``a``'s operator acted (the
    scheme decides). Face voxels that are held (``mask``) exchange nothing.
    """
    inflow = outflow = jnp.zeros((), dt.dtype)
    vol = grid.voxel_volume
    for a in range(grid.ndim):
        h = grid.spacing[a]
        area = vol / h
        for end, face in enumerate(axis_faces(faces, a)):
            if face.periodic:
                continue
            j, g = face.inflow(D, h), face.conductance(D, h)
            if j is None and g is None:
                continue
            i, o = face_layer_amounts(ceff[a], a, end, j, g, area * dt, mask)
            inflow, outflow = inflow + i, outflow + o
    return inflow, outflow


def face_layer_amounts(c: jax.Array, axis: int, end: int, j: Any, g: Any, area_dt: Any,
                       mask: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """(inflow, outflow) through one face whose law is ``J_in = j − g·c₀`` (either may be None), over a
    step: ``area_dt`` is the face area of one voxel times dt; held face voxels (``mask``) exchange nothing."""
    layer = slab(c, axis, end)
    rate = (0.0 if j is None else j) - (0.0 if g is None else g * layer)
    amt = jnp.broadcast_to(rate * area_dt, layer.shape)
    if mask is not None:
        amt = amt * (1.0 - slab(mask, axis, end).astype(layer.dtype))
    return split_signed(amt)


def held_amounts(grid: Grid, D: jax.Array, faces: Faces, ceff: Sequence[jax.Array],
                 dt: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(inflow, outflow) supplied by held interior voxels: the diffusive flux out of them.

    Sums ``−D∇²`` (closed faces) of ``ceff[a]`` over held voxels; fluxes between
    two held voxels cancel pairwise, so what remains is what crossed into free voxels.
    """
    total = jnp.zeros(grid.shape, dt.dtype)
    for a in range(grid.ndim):
        total = total - diffuse_axis(ceff[a], a, grid.spacing[a], D, axis_faces(faces, a), face_terms=False)
    per_voxel = jnp.where(mask, total, 0) * grid.voxel_volume * dt
    return split_signed(per_voxel)


# ---------------------------------------------------------------------------
# One-dimensional implicit solves

@functools.lru_cache(maxsize=256)
def axis_laplacian(n: int, ratios: tuple[float, float], periodic: bool) -> np.ndarray:
    """Unscaled 1D second-difference matrix ``(n, n)`` with static face diagonals.

    Closed faces drop the outer neighbour; ``ratios[end]`` (a face's fixed
    ``conductance·h/D``: 0 for a flux, 2 for Dirichlet) is subtracted from the
    outer diagonal; periodic axes wrap. Symmetric; read-only.
    """
    lap = np.zeros((n, n))
    for i in range(n - 1):
        lap[i, i + 1] = lap[i + 1, i] = 1.0
        lap[i, i] -= 1.0
        lap[i + 1, i + 1] -= 1.0
    if periodic and n > 1:
        lap[0, n - 1] += 1.0
        lap[n - 1, 0] += 1.0
        lap[0, 0] -= 1.0
        lap[n - 1, n - 1] -= 1.0
    if not periodic:
        lap[0, 0] -= ratios[0]
        lap[n - 1, n - 1] -= ratios[1]
    lap.flags.writeable = False
    return lap


@functools.lru_cache(maxsize=256)
def _axis_eigh(n: int, ratios: tuple[float, float], periodic: bool) -> tuple[np.ndarray, np.ndarray]:
    w, v = np.linalg.eigh(axis_laplacian(n, ratios, periodic))
    w.flags.writeable = False
    v.flags.writeable = False
    return w, v


def axis_inverse(n: int, ratios: tuple[float, float], periodic: bool, alpha: jax.Array,
                 rho: jax.Array) -> jax.Array:
    """Inverse of ``(1 + rho)·I − alpha·L₁`` (L₁ from :func:`axis_laplacian`), ``(n, n)``.

    Built from the (static, NumPy) eigendecomposition ``L₁ = V diag(w) Vᵀ`` as
    ``V diag(1/(1 + rho − alpha·w)) Vᵀ``: no LU in the compiled program (faster
    to compile), smooth in the traced ``alpha = γD/h²`` and ``rho``, and accurate
    to round-off for any ``alpha ≥ 0``.
    """
    w, v = _axis_eigh(n, ratios, periodic)
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


def thomas_factor(n: int, ratios: tuple[float, float], ends: tuple[Any, Any], alpha: jax.Array, rho: jax.Array,
                  free: jax.Array, axis: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Factor the per-line tridiagonal systems ``(1 + rho)·I − alpha·L₁`` of a sweep.

    ``ratios`` are the static face diagonals (as in :func:`axis_laplacian`),
    ``ends`` traced extra diagonals of the two end rows (γ·conductance/h of a
    face whose ratio is not fixed, or 0). Rows of held voxels (``free == 0``)
    are identity rows. Returns :func:`thomas_factors` with ``axis`` moved
    first, ready for :func:`thomas_solve`.
    """
    f = jnp.moveaxis(free, axis, 0).astype(alpha.dtype)
    diag = np.full(n, 2.0)
    diag[0] = diag[-1] = 1.0
    if n == 1:
        diag[0] = 0.0
    diag[0] += ratios[0]
    diag[n - 1] += ratios[1]
    extra = jnp.zeros((n,), alpha.dtype).at[0].add(ends[0]).at[n - 1].add(ends[1])
    tail = (1,) * (f.ndim - 1)
    diag = jnp.asarray(diag, alpha.dtype).reshape((n,) + tail)
    b = f * (1 + rho + alpha * diag + extra.reshape((n,) + tail)) + (1 - f)
    off = -alpha * f  # both off-diagonals of a free row; zero on held rows
    lower = off.at[0].set(0.0)
    upper = off.at[n - 1].set(0.0)
    return thomas_factors(lower, b, upper)


def thomas_factors(lower: jax.Array, main: jax.Array, upper: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Thomas factorisation of tridiagonal systems whose rows run along axis 0: ``(lower, inv_pivot, c')``.

    ``lower[i]``, ``main[i]``, ``upper[i]`` are row i's coefficients of y_{i−1}, y_i, y_{i+1}
    (``lower[0]`` and ``upper[n−1]`` are 0); no pivoting (the systems here are diagonally
    dominant). ``c' = upper·inv_pivot`` is kept instead of ``upper``, so that a solve
    does not recompute it.
    """

    def fwd(cp: jax.Array, row: tuple[jax.Array, jax.Array, jax.Array]) -> tuple[jax.Array, tuple]:
        lo, bi, up = row
        piv = 1.0 / (bi - lo * cp)
        c = up * piv
        return c, (piv, c)

    _, (inv_pivot, cprime) = lax.scan(fwd, jnp.zeros_like(main[0]), (lower, main, upper))
    return lower, inv_pivot, cprime


def thomas_solve(factors: tuple[jax.Array, jax.Array, jax.Array], r: jax.Array, axis: int) -> jax.Array:
    """Solve the factored systems of :func:`thomas_factors` for right-hand side ``r``.

    The factors may be per voxel (held voxels) or one scalar per row, broadcast
    over every line.
    """
    lower, inv_pivot, cprime = factors
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


def axis_solver(grid: Grid, axis: int, faces: tuple[Boundary, Boundary], D: jax.Array, gamma: jax.Array,
                rho: jax.Array, mask: jax.Array | None) -> AxisSolver:
    """Pick how to solve one axis's systems ``(1 + rho − γ(D∂² − face laws)) y = r``.

    ``gamma`` is the implicit time weight (θ·dt or dt, s). Short axes (n <=
    DENSE_MAX) and periodic ones: the dense inverse applied as a GEMM (2n flops
    per voxel, but no loop). Longer axes, and faces whose diagonal is traced
    (Robin): a Thomas sweep whose factorisation is one length-n vector shared by
    every line (O(1) flops per voxel; a ``lax.scan`` over the axis). Held voxels
    change the rows of some lines only, so they get a per-voxel factorisation.
    """
    n, h = grid.shape[axis], grid.spacing[axis]
    alpha = gamma * D / h**2
    periodic = faces[0].periodic
    if periodic and mask is not None:
        raise ValueError("interior Dirichlet voxels on a periodic axis are not supported by the "
                         "implicit and lod solvers; use solver='explicit' or drop the periodic axis")
    fixed = periodic or all(f.fixed_ratio is not None for f in faces)
    ratios = (0.0, 0.0) if periodic else tuple(f.fixed_ratio or 0.0 for f in faces)
    ends = (0.0, 0.0)
    if not fixed:
        ends = tuple(0.0 if f.fixed_ratio is not None else gamma * f.conductance(D, h) / h for f in faces)
    if mask is None:
        if fixed and (n <= DENSE_MAX or periodic):
            return AxisSolver(axis_inverse(n, ratios, periodic, alpha, rho), None)
        return AxisSolver(None, thomas_factor(n, ratios, ends, alpha, rho, jnp.ones((n,), bool), 0))
    return AxisSolver(None, thomas_factor(n, ratios, ends, alpha, rho, ~mask, axis))
class Uniform(NamedTuple):
    """Transport operator ``D∇²c`` of one substrate with one diffusivity and no flow.

    The interface the solvers use (shared with :class:`jaxcell.medium.Heterogeneous`):
    :meth:`rate`, :meth:`axis_rate` (with the faces' conductances), :meth:`add_source`
    (the faces' inflows), :meth:`face_amounts`, :meth:`held_amounts` and
    :meth:`axis_solver`. Its lines are all alike, so axis solves can share one
    dense inverse or one Thomas factorisation.
    """

    grid: Grid
    D: jax.Array
    faces: Faces

    def rate(self, c: jax.Array, face_terms: bool = True) -> jax.Array:
        return diffuse(c, self.grid, self.D, self.faces, face_terms)

    def axis_rate(self, c: jax.Array, a: int, face_terms: bool = True) -> jax.Array:
        return diffuse_axis(c, a, self.grid.spacing[a], self.D, axis_faces(self.faces, a), face_terms)

    def add_source(self, x: jax.Array, scale: Any = 1.0, axes: Sequence[int] | None = None) -> jax.Array:
        return add_face_source(x, self.grid, self.D, self.faces, scale, axes)

    def face_amounts(self, ceff: Sequence[jax.Array], dt: jax.Array, mask: jax.Array | None) -> tuple[Any, Any]:
        return face_amounts(self.grid, self.D, self.faces, ceff, dt, mask)

    def held_amounts(self, ceff: Sequence[jax.Array], dt: jax.Array, mask: jax.Array) -> tuple[Any, Any]:
        return held_amounts(self.grid, self.D, self.faces, ceff, dt, mask)

    def axis_solver(self, a: int, gamma: jax.Array, rho: jax.Array, mask: jax.Array | None) -> AxisSolver:
        return axis_solver(self.grid, a, axis_faces(self.faces, a), self.D, gamma, rho, mask)


# ---------------------------------------------------------------------------
# Spectral basis (uniform coefficients): DCT-II on closed axes, FFT on periodic ones


def spectral_axes(grid: Grid, faces: Faces) -> tuple[list[int], list[int]]:
    """(cosine axes, Fourier axes) of the faces' eigenbasis; ValueError when a face has none."""
    cos_axes, fft_axes = [], []
    for a in range(grid.ndim):
        pair = axis_faces(faces, a)
        for f in pair:
            if f.spectral_basis is None:
                raise ValueError(f"solver='spectral' handles no-flux, flux and periodic faces only, not "
                                 f"jc.{type(f).__name__}; use solver='implicit'")
        (fft_axes if pair[0].spectral_basis == "fft" else cos_axes).append(a)
    return cos_axes, fft_axes


def spectral_eigenvalues(grid: Grid, cos_axes: Sequence[int], dtype: Any) -> jax.Array:
    """Eigenvalues of the discrete Laplacian (µm⁻²) in the DCT/FFT basis, broadcasting to ``grid.shape``.

    Built as a sum of one vector per axis, so the program holds ``Σn`` numbers,
    not a grid-sized constant (512 MiB at 512³ in float32), and XLA computes
    the sum where it is used.
    """
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




# ---------------------------------------------------------------------------
# φ-functions of exponential integrators


def phi1(z: jax.Array) -> jax.Array:
    """(e^z − 1)/z, accurate (relative) for all z <= 0, also in float32.

    Computed from ``expm1`` directly: deriving it as ``1 + z·φ2(z)`` cancels
    catastrophically for large ``−z`` in float32 (6 % error at z = −1e6, which
    left the stiffest modes of the spectral step undamped).
    """
    small = jnp.abs(z) < 1e-3
    zs = jnp.where(small, 1.0, z)
    return jnp.where(small, 1 + z / 2 + z**2 / 6 + z**3 / 24, jnp.expm1(zs) / zs)


def phi2(z: jax.Array) -> jax.Array:
    """(e^z − 1 − z)/z², accurate for all z <= 0."""
    small = jnp.abs(z) < 1e-2
    zs = jnp.where(small, 1.0, z)  # keep the closed form away from z = 0 (and its gradient finite)
    series = 1 / 2 + z / 6 + z**2 / 24 + z**3 / 120 + z**4 / 720
    return jnp.where(small, series, (jnp.expm1(zs) - zs) / zs**2)

"""The tissue medium: heterogeneous diffusion, interstitial flow and the extracellular matrix.

Two parts, each used by every solver that supports it:

* :class:`Heterogeneous`, the transport operator of one substrate when its
  diffusivity changes from voxel to voxel or fluid flows through the tissue. Its
  fluxes live on the faces between voxels: the face diffusivity is the harmonic
  mean of the two voxels' (flux continuous across a change of tissue), and the
  advective-diffusive flux is the exponentially fitted (Scharfetter–Gummel,
  Il'in–Allen–Southwell) flux

      F = (D_f/h)·B(−Pe)·c_i − (D_f/h)·B(Pe)·c_{i+1},   Pe = u·h/D_f,   B(x) = x/(eˣ − 1),

  which is conservative, has both coefficients ≥ 0 (an M-matrix: a backward-Euler
  step, or a forward step within its limit, keeps values positive; the ADI of the
  implicit solver does not), reduces to central differences when
  ``|Pe| ≪ 1`` and to first-order upwind when ``|Pe| ≫ 1``, and is exact for a
  one-dimensional steady advection-diffusion profile at any Péclet number. It
  has the same methods as :class:`jaxcell.operators.Uniform`, so the solvers
  treat both alike.
* :class:`Matrix` (immobile binding sites) and :func:`matrix_step`, the local
  binding of free ligand to the matrix after each transport step.

Faces of the domain: the diffusive law of the face condition
(:mod:`jaxcell.boundary`) evaluated with the face voxel's D, plus the flow:
fluid leaving through a face carries the face voxel's concentration out; fluid
entering brings the face's inflow concentration (``Dirichlet(v)``: v;
``Robin(P, outside)``: outside; ``Robin(0.0)`` is a pure outflow face). A flux
face (no-flux included) passes no fluid: the normal velocity there is taken as
0, and :func:`check_flow` refuses a concrete velocity that crosses one.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxcell._node import as_float, check_nonneg, is_concrete, node
from jaxcell.boundary import Boundary, Flux
from jaxcell.grid import Grid
from jaxcell.operators import (
    DENSE_MAX,
    AxisSolver,
    add_to_slab,
    axis_faces,
    face_layer_amounts,
    slab,
    split_signed,
    thomas_factors,
)

__all__ = ["Heterogeneous", "Matrix", "MatrixRates", "bernoulli", "matrix_step"]

_B_CLIP = 60.0  # B(60) = 5e-25: beyond it the diffusive share of a face is 0 in any precision


def bernoulli(x: jax.Array) -> jax.Array:
    """``B(x) = x/(eˣ − 1)`` for any real x, smooth (B(0) = 1), finite gradients.

    Written as ``B(|x|) + max(−x, 0)`` (the identity ``B(−x) = B(x) + x``), so
    that only ``x ≥ 0`` reaches the exponential, clipped where B is 0 to
    round-off.
    """
    a = jnp.minimum(jnp.abs(x), _B_CLIP)
    small = a < 1e-3
    safe = jnp.where(small, 1.0, a)
    pos = jnp.where(small, 1 - a / 2 + a**2 / 12, safe / jnp.expm1(safe))
    return pos + jnp.maximum(-x, 0)


def _pair(x: jax.Array, axis: int, periodic: bool) -> tuple[jax.Array, jax.Array]:
    """The two voxels of every face along ``axis``: (x_i, x_{i+1}) (n−1 faces, or n wrapping)."""
    if periodic:
        return x, jnp.roll(x, -1, axis)
    n = x.shape[axis]
    return lax.slice_in_dim(x, 0, n - 1, axis=axis), lax.slice_in_dim(x, 1, n, axis=axis)


def _pair_shape(shape: tuple[int, ...], axis: int, periodic: bool) -> tuple[int, ...]:
    out = list(shape)
    out[axis] -= 0 if periodic else 1
    return tuple(out)


def harmonic(a: jax.Array, b: jax.Array) -> jax.Array:
    """2ab/(a + b), 0 where both are 0 (a face between two voxels of diffusivity a and b)."""
    s = a + b
    return jnp.where(s > 0, 2 * a * b / jnp.where(s > 0, s, 1.0), 0.0)


def face_velocity(velocity: jax.Array | None, ndim: int, shape: tuple[int, ...], axis: int) -> jax.Array | None:
    """Velocity component ``axis`` at the voxel centres (scalar for a uniform flow), µm/s; None: no flow."""
    if velocity is None:
        return None
    v = velocity[axis]
    return v if v.ndim == 0 else v.reshape(shape)


def inflow_concentration(face: Boundary) -> jax.Array | None:
    """Concentration that fluid entering through ``face`` carries (None: the face passes no fluid)."""
    if isinstance(face, Flux) or face.periodic:
        return None
    for attr in ("value", "outside"):  # Dirichlet's value, Robin's outside
        if hasattr(face, attr):
            return getattr(face, attr)
    return jnp.zeros(())


class Heterogeneous(NamedTuple):
    """Transport operator ``∇·(D∇c) − ∇·(uc)`` of one substrate with per-voxel D and/or flow.

    Per axis ``a``: ``fwd[a]``, ``bwd[a]`` (µm/s) are the coefficients of the
    face fluxes ``F = fwd·c_i − bwd·c_{i+1}`` on the faces between voxels
    (n − 1 along the axis, n on a periodic axis); ``g[a]``, ``j[a]`` the two
    domain faces' total conductance (µm/s) and inflow (amount/(µm^(ndim−1)·s))
    with the flow included (see the module docstring), each ``(lo, hi)`` of
    arrays broadcasting to the face layer, or None.
    """

    fwd: tuple
    bwd: tuple
    g: tuple
    j: tuple
    spacing: tuple
    periodic: tuple
    volume: float
    shape: tuple

    @classmethod
    def build(cls, grid: Grid, D: jax.Array, faces: tuple[Boundary, ...], velocity: jax.Array | None,
              dtype: Any) -> Heterogeneous:
        """The operator for diffusivity ``D`` (scalar or ``grid.shape``) and ``velocity`` (None, ``(ndim,)``
        or ``(ndim, *grid.shape)``)."""
        shape = grid.shape
        scalar_d = jnp.ndim(D) == 0
        Dm = jnp.asarray(D, dtype) if scalar_d else jnp.broadcast_to(jnp.asarray(D, dtype), shape)
        fwd, bwd, gs, js, per = [], [], [], [], []
        for a in range(grid.ndim):
            h = grid.spacing[a]
            pair = axis_faces(faces, a)
            periodic = pair[0].periodic
            per.append(periodic)
            if scalar_d:
                df = Dm
                d0 = jnp.zeros(_pair_shape(shape, a, periodic), dtype)  # only its shape is used
            else:
                d0, d1 = _pair(Dm, a, periodic)
                df = harmonic(d0, d1)
            v = face_velocity(velocity, grid.ndim, shape, a)
            if v is None:
                f = b = df / h
            else:
                v = jnp.asarray(v, dtype)
                if v.ndim:
                    v0, v1 = _pair(v, a, periodic)
                    u = (v0 + v1) / 2
                else:
                    u = v
                # the diffusive share of the fitted flux, written so that D_f = 0 gives 0 (pure upwind)
                pe = jnp.abs(u) * h / jnp.maximum(df, jnp.finfo(dtype).tiny)
                diff = df / h * bernoulli(pe)
                f, b = diff + jnp.maximum(u, 0), diff + jnp.maximum(-u, 0)
            # one D and a uniform flow: every line's coefficients are the same numbers (kept as scalars)
            alike = scalar_d and (v is None or v.ndim == 0)
            fwd.append(f if alike else jnp.broadcast_to(f, d0.shape))
            bwd.append(b if alike else jnp.broadcast_to(b, d0.shape))
            g_pair, j_pair = [], []
            for end, face in enumerate(pair):
                if periodic:
                    g_pair.append(None)
                    j_pair.append(None)
                    continue
                d_face = Dm if scalar_d else slab(Dm, a, end)
                g, j = face.conductance(d_face, h), face.inflow(d_face, h)
                cin = inflow_concentration(face)
                if v is not None and cin is not None:
                    un = slab(v, a, end) if v.ndim else v  # velocity at the face voxel, along +axis
                    inward = un if end == 0 else -un
                    g = jnp.maximum(-inward, 0) + (0.0 if g is None else g)
                    j = jnp.maximum(inward, 0) * jnp.asarray(cin, dtype) + (0.0 if j is None else j)
                g_pair.append(g)
                j_pair.append(j)
            gs.append(tuple(g_pair))
            js.append(tuple(j_pair))
        return cls(tuple(fwd), tuple(bwd), tuple(gs), tuple(js), tuple(grid.spacing), tuple(per), grid.voxel_volume,
                   tuple(grid.shape))

    # -- the interface shared with jaxcell.operators.Uniform ------------------------------------

    def axis_rate(self, c: jax.Array, a: int, face_terms: bool = True) -> jax.Array:
        """``∂/∂x_a`` part of the transport of ``c`` (amount/(µm^ndim·s)), with the faces' conductances."""
        h = self.spacing[a]
        n = c.shape[a]
        if self.periodic[a]:
            c0, c1 = _pair(c, a, True)
            F = self.fwd[a] * c0 - self.bwd[a] * c1
            return (jnp.roll(F, 1, a) - F) / h
        if n == 1:
            out = jnp.zeros_like(c)
        else:
            c0, c1 = _pair(c, a, False)
            F = self.fwd[a] * c0 - self.bwd[a] * c1
            pad = [(0, 0)] * c.ndim
            pad[a] = (1, 0)
            lo = jnp.pad(F, pad)  # flux into voxel i from below
            pad[a] = (0, 1)
            hi = jnp.pad(F, pad)  # flux out of voxel i upwards
            out = (lo - hi) / h
        if face_terms:
            for end in (0, 1):
                g = self.g[a][end]
                if g is not None:
                    out = add_to_slab(out, -(g / h) * slab(c, a, end), a, end)
        return out

    def rate(self, c: jax.Array, face_terms: bool = True) -> jax.Array:
        """Transport of ``c`` summed over the axes, amount/(µm^ndim·s), without the faces' inflows."""
        return sum(self.axis_rate(c, a, face_terms) for a in range(c.ndim))

    def add_source(self, x: jax.Array, scale: Any = 1.0, axes: Any = None) -> jax.Array:
        """``x`` plus ``scale`` × the faces' inflow ``j/h`` in the face voxels."""
        for a in range(x.ndim) if axes is None else axes:
            for end in (0, 1):
                j = self.j[a][end]
                if j is not None:
                    x = add_to_slab(x, jnp.broadcast_to(scale * j / self.spacing[a],
                                                        slab(x, a, end).shape).astype(x.dtype), a, end)
        return x

    def face_amounts(self, ceff: Any, dt: jax.Array, mask: jax.Array | None) -> tuple[jax.Array, jax.Array]:
        """(inflow, outflow) amounts through the domain's faces in a step, ``ceff[a]`` as for the uniform operator."""
        inflow = outflow = jnp.zeros((), dt.dtype)
        vol = self.volume
        for a, h in enumerate(self.spacing):
            if self.periodic[a]:
                continue
            area = vol / h
            for end in (0, 1):
                g, j = self.g[a][end], self.j[a][end]
                if g is None and j is None:
                    continue
                i, o = face_layer_amounts(ceff[a], a, end, j, g, area * dt, mask)
                inflow, outflow = inflow + i, outflow + o
        return inflow, outflow

    def held_amounts(self, ceff: Any, dt: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(inflow, outflow) supplied by held interior voxels: what their faces carry into free voxels."""
        total = jnp.zeros(mask.shape, dt.dtype)
        for a in range(mask.ndim):
            total = total - self.axis_rate(ceff[a], a, face_terms=False)
        return split_signed(jnp.where(mask, total, 0) * self.volume * dt)

    def axis_solver(self, a: int, gamma: jax.Array, rho: Any, mask: jax.Array | None) -> Any:
        """Factor ``(1 + rho)·I − γ·A_a`` per line (held rows: identity), for :func:`jaxcell.operators.thomas_solve`."""
        if self.periodic[a]:
            raise ValueError("a periodic axis with per-voxel diffusion or flow is not supported by line solves; "
                             "use solver='explicit'")
        h = self.spacing[a]
        f, b = self.fwd[a], self.bwd[a]
        n = self.shape[a]
        if f.ndim == 0 and mask is None and jnp.ndim(rho) == 0 and n <= DENSE_MAX:
            # every line is the same (non-symmetric) system: one dense inverse, applied as a GEMM
            # like the uniform operator's (an n × n LU once per call, differentiable)
            g_lo, g_hi = (0.0 if g is None else g for g in self.g[a])
            diag = jnp.full((n,), f + b).at[0].add(g_lo - b).at[n - 1].add(g_hi - f) if n > 1 else \
                jnp.full((1,), g_lo + g_hi)
            m = jnp.diag(1 + rho + gamma * diag / h)
            if n > 1:
                off = jnp.ones((n - 1,), diag.dtype)
                m = m + jnp.diag(-gamma * b / h * off, 1) + jnp.diag(-gamma * f / h * off, -1)
            return AxisSolver(jnp.linalg.inv(m), None)
        pair = _pair_shape(self.shape, a, False)
        f, b = jnp.broadcast_to(f, pair), jnp.broadcast_to(b, pair)
        shape = list(f.shape)
        shape[a] += 1
        zero_face = [(0, 0)] * len(shape)
        zero_face[a] = (1, 0)
        below_f = jnp.pad(f, zero_face)  # fwd of the face below voxel i (0 below the first)
        below_b = jnp.pad(b, zero_face)
        zero_face[a] = (0, 1)
        above_f = jnp.pad(f, zero_face)
        above_b = jnp.pad(b, zero_face)
        diag = (above_f + below_b) / h
        for end in (0, 1):
            g = self.g[a][end]
            if g is not None:
                diag = add_to_slab(jnp.broadcast_to(diag, tuple(shape)), g / h, a, end)
        rho = jnp.broadcast_to(jnp.asarray(rho, diag.dtype), tuple(shape))
        main = 1 + rho + gamma * diag
        lower = -gamma * below_f / h  # coefficient of y_{i−1} in row i
        upper = -gamma * above_b / h  # coefficient of y_{i+1} in row i
        if mask is not None:
            main = jnp.where(mask, 1.0, main)
            lower = jnp.where(mask, 0.0, lower)
            upper = jnp.where(mask, 0.0, upper)
        lower, main, upper = (jnp.moveaxis(x, a, 0) for x in (lower, main, upper))
        return AxisSolver(None, thomas_factors(lower, main, upper))


# ---------------------------------------------------------------------------
# The extracellular matrix


@node
class Matrix:
    """Immobile binding sites of the extracellular matrix that sequester a substrate.

    With L the free ligand and M the ligand on the matrix (amount/µm^ndim)::

        dL/dt = … − kon·L·(sites − M) + koff·M
        dM/dt = kon·L·(sites − M) − (koff + degradation)·M

    Args:
        sites: binding sites per µm^ndim (a number or a ``grid.shape`` array), >= 0.
        kon: association rate, µm^ndim/s per site, >= 0.
        koff: dissociation rate, 1/s, >= 0.
        degradation: rate at which bound ligand is destroyed (its site freed), 1/s, >= 0.
    """

    sites: jax.Array
    kon: jax.Array
    koff: jax.Array
    degradation: jax.Array

    def __init__(self, sites: Any, kon: Any, koff: Any = 0.0, degradation: Any = 0.0) -> None:
        for name, val, unit in (("sites", sites, "sites/µm^ndim"), ("kon", kon, "µm^ndim/s"),
                                ("koff", koff, "1/s"), ("degradation", degradation, "1/s")):
            v = as_float(val, f"Matrix {name}")
            check_nonneg(v, f"Matrix {name}", unit)
            if name != "sites" and v.ndim != 0:
                raise ValueError(f"Matrix {name} must be a number ({unit}), got shape {v.shape}")
            object.__setattr__(self, name, v)


class MatrixRates(NamedTuple):
    """A :class:`Matrix`'s four numbers as arrays broadcasting against the fields (e.g. one per substrate)."""

    sites: jax.Array
    kon: jax.Array
    koff: jax.Array
    degradation: jax.Array


def matrix_step(L: jax.Array, M: jax.Array, m: Matrix | MatrixRates, dt: jax.Array) -> tuple[jax.Array, jax.Array,
                                                                                              jax.Array]:
    """One backward-Euler step of the binding above per voxel: ``(L', M', degraded)``.

    Backward Euler of the 2×2 system conserves ``L' + (1 + dt·degradation)·M' = L + M``,
    which leaves one quadratic per voxel; both unknowns are taken from their own
    quadratic by the cancellation-free root formula (``L' = T − M'`` would lose the
    free ligand to round-off in float32 when nearly all of it is bound, and
    ``M' = T − L'`` the bound one when little binds). Unconditionally stable; keeps
    ``0 <= M' <= sites`` and ``L' >= 0`` for any ``dt`` (a negative ``L`` from an
    undershooting transport step is left as it is, unbound); reaches the local
    equilibrium when binding is fast (``kon·sites·dt ≫ 1``). The books close to
    round-off: ``L' + M' + degraded = L + M``, ``degraded`` (``grid.shape``, per unit
    volume) being ``dt·degradation·M'``.
    """
    B = jnp.asarray(m.sites, L.dtype)
    a, r, g = (jnp.asarray(x, L.dtype) for x in (m.kon, m.koff, m.degradation))
    # a transport step that undershoots (ADI) can hand over a slightly negative L: only its positive
    # part binds, the rest stays free as it was (feeding a negative L to the quadratics amplified it)
    below = jnp.minimum(L, 0)
    L = L - below
    # per-substrate numbers first, so that a voxel costs two square roots and two divisions
    da = dt * a
    eg = 1 + dt * g
    c1 = 1 + dt * (r + g)
    daB = da * B
    T = L + M
    # M': da·eg·M'² − (da·T + eg·daB + c1)·M' + (daB·T + M) = 0, smaller root
    beta = da * T + eg * daB + c1
    gamma_ = daB * T + M
    disc = jnp.maximum(beta * beta - 4 * da * eg * gamma_, 0.0)
    M_new = 2 * gamma_ / (beta + jnp.sqrt(disc))
    M_new = jnp.clip(M_new, 0.0, jnp.minimum(B, T / eg))
    # L': da·L'² + b·L' − (eg·L + dt·r·T) = 0 with b = eg + dt·r + da·(eg·B − T), positive root;
    # b may be negative (more ligand than sites), so the stable form depends on its sign
    b = eg + dt * r + eg * daB - da * T
    cc = eg * L + dt * r * T
    root = jnp.sqrt(b * b + 4 * da * cc)
    safe_da = jnp.where(da > 0, da, 1.0)
    L_new = jnp.where(b >= 0, 2 * cc / jnp.where(b + root > 0, b + root, 1.0), (root - b) / (2 * safe_da))
    L_new = jnp.clip(L_new, 0.0, T)
    degraded = dt * g * M_new
    return L_new + below, M_new, degraded


def check_map(x: Any, shape: tuple[int, ...], what: str, unit: str) -> None:
    """A per-voxel coefficient must be a number or an array of ``grid.shape`` (checked when the model is built)."""
    s = np.shape(x)
    if s != () and tuple(s) != tuple(shape):
        raise ValueError(f"{what} must be a number or an array of the grid's shape {tuple(shape)} ({unit}), "
                         f"got shape {tuple(s)}")


def check_velocity(v: Any, ndim: int, shape: tuple[int, ...], name: str) -> None:
    """``velocity`` must be ``(ndim,)`` or ``(ndim, *grid.shape)``, finite."""
    s = tuple(np.shape(v))
    if s not in ((ndim,), (ndim,) + tuple(shape)):
        raise ValueError(f"Substrate {name!r} velocity must have shape ({ndim},) (uniform flow) or "
                         f"({ndim}, *grid.shape) = {(ndim,) + tuple(shape)} (per voxel), µm/s; got {s}")
    if is_concrete(v) and not np.all(np.isfinite(np.asarray(v))):
        raise ValueError(f"Substrate {name!r} velocity must be finite (µm/s), got NaN or inf")


def check_flow(v: Any, faces: tuple[Boundary, ...], ndim: int, name: str) -> None:
    """Refuse a concrete flow through a flux (no-flux) face: a wall passes no fluid."""
    if not is_concrete(v):
        return
    va = np.asarray(v)
    for a in range(ndim):
        for end, face in enumerate(axis_faces(faces, a)):
            if not isinstance(face, Flux):
                continue
            comp = va[a]
            if comp.ndim:
                idx = [slice(None)] * comp.ndim
                idx[a] = 0 if end == 0 else -1
                comp = comp[tuple(idx)]
            if np.any(comp != 0):
                fname = "xyz"[a] + "-+"[end]
                raise ValueError(f"Substrate {name!r}: the flow crosses face {fname!r}, a no-flux (jc.Flux) wall, "
                                 f"which passes no fluid; make that face jc.Dirichlet(<inflow concentration>) "
                                 "where fluid enters, jc.Robin(0.0) where it leaves (outflow, no diffusive "
                                 "exchange), or jc.Periodic(), or set the velocity's normal component there to 0")


def max_speed(v: Any) -> np.ndarray | None:
    """Largest |velocity| per axis (µm/s) when concrete, else None."""
    if v is None:
        return None
    if not is_concrete(v):
        return None
    va = np.abs(np.asarray(v))
    return va.reshape(va.shape[0], -1).max(axis=1)

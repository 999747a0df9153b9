"""Voxel grids: geometry in µm and multilinear sampling / deposit weights."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxcell._node import is_concrete

AXES = ("x", "y", "z")
SPACING_RANGE = (1e-4, 1e7)  # µm: voxel edges whose D/h² and volumes float32 represents


def _tuple(value: float | Sequence[float], ndim: int, name: str) -> tuple[float, ...]:
    if np.ndim(value) == 0:
        out = (float(value),) * ndim
    else:
        out = tuple(float(v) for v in value)
        if len(out) != ndim:
            raise ValueError(f"{name} has {len(out)} entries but the grid has {ndim} axes; "
                             "give one per axis or a scalar")
    if not all(np.isfinite(out)):
        raise ValueError(f"{name} must be finite, got {out}")
    return out


class Grid:
    """A regular 1D/2D/3D voxel grid.

    Voxel ``i`` along an axis has its centre at ``origin + (i + 0.5) * spacing``,
    so the domain is ``[origin, origin + shape * spacing]`` (µm). A grid is
    static (hashable): it is never traced, and changing it recompiles.

    Args:
        shape: voxels per axis, 1 to 3 positive ints.
        spacing: voxel edge in µm, a scalar or one per axis (anisotropic).
        origin: lower corner in µm, a scalar or one per axis (default 0).
    """

    __slots__ = ("shape", "spacing", "origin")

    def __init__(self, shape: Sequence[int], spacing: float | Sequence[float] = 1.0,
                 origin: float | Sequence[float] = 0.0) -> None:
        try:
            shape_t = tuple(int(s) for s in shape)
        except (TypeError, ValueError):
            raise ValueError(f"shape must be a sequence of 1 to 3 ints, got {shape!r}") from None
        if not 1 <= len(shape_t) <= 3 or any(s < 1 for s in shape_t) or any(
                int(s) != s for s in shape):
            raise ValueError(f"shape must be 1 to 3 positive ints, got {shape!r}")
        spacing_t = _tuple(spacing, len(shape_t), "spacing")
        if any(h <= 0 for h in spacing_t):
            raise ValueError(f"spacing must be > 0 µm on every axis, got {spacing_t}")
        if any(not SPACING_RANGE[0] <= h <= SPACING_RANGE[1] for h in spacing_t):
            # D/h² and h^ndim must stay representable in float32 (1e-30 µm gave NaN fields);
            # a voxel below 0.1 nm or above 10 m is also no tissue scale: a unit slip
            raise ValueError(f"spacing must lie in [{SPACING_RANGE[0]:g}, {SPACING_RANGE[1]:g}] µm on every axis "
                             f"(a unit slip? lengths are in µm), got {spacing_t}")
        object.__setattr__(self, "shape", shape_t)
        object.__setattr__(self, "spacing", spacing_t)
        object.__setattr__(self, "origin", _tuple(origin, len(shape_t), "origin"))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Grid is immutable")

    def __repr__(self) -> str:
        return f"Grid(shape={self.shape}, spacing={self.spacing}, origin={self.origin})"

    def _key(self) -> tuple:
        return (self.shape, self.spacing, self.origin)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Grid) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        """Number of voxels."""
        return int(np.prod(self.shape))

    @property
    def voxel_volume(self) -> float:
        """µm^ndim."""
        return float(np.prod(self.spacing))

    @property
    def extent(self) -> tuple[float, ...]:
        """Domain length per axis, µm."""
        return tuple(n * h for n, h in zip(self.shape, self.spacing))

    def centers(self, axis: int) -> np.ndarray:
        """Voxel centres along ``axis``, µm, shape ``(shape[axis],)``."""
        n, h, o = self.shape[axis], self.spacing[axis], self.origin[axis]
        return o + (np.arange(n) + 0.5) * h

    def mesh(self) -> tuple[np.ndarray, ...]:
        """Voxel-centre coordinates, one ``grid.shape`` array per axis (µm)."""
        return tuple(np.meshgrid(*(self.centers(a) for a in range(self.ndim)), indexing="ij"))

    def check_points(self, points: jax.Array, name: str = "points") -> None:
        """Raise ValueError for concrete points that are NaN, misshapen or outside the domain."""
        if np.ndim(points) != 2 or np.shape(points)[1] != self.ndim:
            raise ValueError(f"{name} must have shape (M, {self.ndim}) in µm, got {np.shape(points)}")
        if not is_concrete(points):
            return
        p = np.asarray(points, dtype=np.float64)
        if not np.all(np.isfinite(p)):
            bad = int(np.argwhere(~np.isfinite(p).all(axis=1))[0, 0])
            raise ValueError(f"{name}[{bad}] is NaN or infinite: every position must be finite µm")
        lo = np.asarray(self.origin)
        hi = lo + np.asarray(self.extent)
        tol = 1e-9 * np.maximum(1.0, np.abs(hi))
        out = np.any((p < lo - tol) | (p > hi + tol), axis=1)
        if out.any():
            i = int(np.argmax(out))
            raise ValueError(f"{name}[{i}] = {p[i].tolist()} µm lies outside the domain "
                             f"[{lo.tolist()}, {hi.tolist()}]; move it inside or enlarge the grid")

    def voxel_index(self, points: jax.Array) -> jax.Array:
        """Flat index of the voxel holding each point, ``(M,)`` int32.

        A point exactly on the upper face belongs to the last voxel.
        """
        flat = jnp.zeros(points.shape[:-1], jnp.int32)
        for a in range(self.ndim):
            p, o, h = points[..., a], self.origin[a], self.spacing[a]
            i = jnp.floor((p - o) / h)
            # (p − o) rounds in float32 (559.99994 − (−1000) becomes 1560.0, a face): compare the
            # point with the faces of the voxel found instead, as float64 would place it
            i = jnp.where(p < o + i * h, i - 1, i)
            i = jnp.where(p >= o + (i + 1) * h, i + 1, i)
            flat = flat * self.shape[a] + jnp.clip(i.astype(jnp.int32), 0, self.shape[a] - 1)
        return flat

    def linear_weights(self, points: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Multilinear (cloud-in-cell) corners of each point.

        Returns ``(index, weight)``, each ``(M, 2**ndim)``: flat voxel indices and
        weights summing to 1. Between the outermost centre and the face the value
        is held constant (the weight goes to the outermost voxel).
        """
        corner_idx, corner_w = [], []
        for a in range(self.ndim):
            n = self.shape[a]
            u = (points[..., a] - self.origin[a]) / self.spacing[a] - 0.5
            u = jnp.clip(u, 0.0, max(n - 1, 0))
            i0 = jnp.clip(jnp.floor(u), 0, max(n - 2, 0)).astype(jnp.int32)
            f = u - i0.astype(u.dtype)
            i1 = jnp.minimum(i0 + 1, n - 1)
            corner_idx.append((i0, i1))
            corner_w.append((1.0 - f, f))
        idx, w = [], []
        for corner in itertools.product((0, 1), repeat=self.ndim):
            flat = jnp.zeros(points.shape[:-1], jnp.int32)
            wt = jnp.ones(points.shape[:-1], points.dtype)
            for a, c in enumerate(corner):
                flat = flat * self.shape[a] + corner_idx[a][c]
                wt = wt * corner_w[a][c]
            idx.append(flat)
            w.append(wt)
        return jnp.stack(idx, -1), jnp.stack(w, -1)

    def sample(self, fields: jax.Array, points: jax.Array) -> jax.Array:
        """Values of ``fields`` at arbitrary points, multilinear between voxel centres.

        Args:
            fields: ``(..., *grid.shape)`` array (e.g. ``(T, S, *shape)``).
            points: ``(M, ndim)`` positions in µm, inside the domain.

        Returns:
            ``(..., M)`` array.
        """
        fields = jnp.asarray(fields)
        if tuple(fields.shape[fields.ndim - self.ndim:]) != self.shape:
            raise ValueError(f"fields must end with the grid shape {self.shape}, got {fields.shape}")
        points = jnp.asarray(points, dtype=fields.dtype if jnp.issubdtype(fields.dtype, jnp.floating)
                             else float)
        self.check_points(points)
        return _sample(self, fields, points)


@functools.partial(jax.jit, static_argnums=0)
def _sample(grid: Grid, fields: jax.Array, points: jax.Array) -> jax.Array:
    """Compiled body of :meth:`Grid.sample` (one compilation per grid and shapes)."""
    idx, w = grid.linear_weights(points)
    flat = fields.reshape(fields.shape[: fields.ndim - grid.ndim] + (grid.size,))
    w = w.astype(flat.dtype).reshape((1,) * (flat.ndim - 1) + w.shape)
    return jnp.sum(flat[..., idx] * w, axis=-1)

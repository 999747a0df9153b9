"""Diffusing species and their boundary conditions.

Units: diffusion µm²/s, decay 1/s. The face conditions (``Flux``, ``Dirichlet``,
``Robin``, ``Periodic``) live in :mod:`jaxcell.boundary` and are re-exported here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcell._node import as_float, check_nonneg, is_concrete, node, static_field
from jaxcell.body import Leak
from jaxcell.boundary import FACES, Boundary, Dirichlet, Flux, Periodic, Robin, normalise
from jaxcell.medium import Matrix, check_flow, check_map, check_velocity

__all__ = ["FACES", "Boundary", "Dirichlet", "Flux", "Periodic", "Robin", "Substrate"]


@node
class Substrate:
    """A diffusing, decaying species in the tissue medium.

    Args:
        name: label used in outputs.
        diffusion: D, µm²/s (>= 0): a number, or an array of the grid's shape for a
            tissue in which D changes from voxel to voxel (faces between voxels use
            the harmonic mean of the two, so the flux is continuous).
        decay: k, first-order decay, 1/s (>= 0): a number or a grid-shaped array.
        boundary: ``{face: condition}`` with faces ``"x-"``, ``"x+"``, ``"y-"``,
            ... or an axis name (``"x"``) for both faces; conditions are
            :class:`Flux`, :class:`Dirichlet`, :class:`Robin` or :class:`Periodic`
            (whole axes only; see :mod:`jaxcell.boundary`). Faces not named are no-flux.
        production: production by the tissue itself (not by cells),
            amount/(µm^ndim·s) >= 0, a number or a grid-shaped array (BioFVM's
            bulk supply); booked in :func:`jaxcell.budget` as "produced".
        velocity: interstitial flow, µm/s: ``(ndim,)`` for a uniform flow or
            ``(ndim, *grid.shape)`` voxel-centre velocities (see
            :mod:`jaxcell.medium`); None: no flow.
        matrix: :class:`jaxcell.Matrix` binding sites that sequester the substrate, or None.
        leak: :class:`jaxcell.Leak` to a well-mixed compartment of the :class:`jaxcell.Model`, or None.

    Grid-shaped values are checked against the grid when the :class:`jaxcell.Model` is built.
    """

    diffusion: jax.Array
    decay: jax.Array
    boundary: dict
    production: jax.Array | None
    velocity: jax.Array | None
    matrix: Any
    leak: Any
    name: str = static_field()

    def __init__(self, name: str, diffusion: Any, decay: Any = 0.0,
                 boundary: Mapping[str, Boundary] | None = None, production: Any = 0.0,
                 velocity: Any = None, matrix: Any = None, leak: Any = None) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"Substrate name must be a non-empty string (used in outputs), got {name!r}")
        d = as_float(diffusion, f"Substrate {name!r} diffusion")
        k = as_float(decay, f"Substrate {name!r} decay")
        q = as_float(production, f"Substrate {name!r} production")
        for val, what, unit in ((d, "diffusion", "µm²/s"), (k, "decay", "1/s"), (q, "production",
                                                                                  "amount/(µm^ndim·s)")):
            check_nonneg(val, f"Substrate {name!r} {what}", unit)
        v = None if velocity is None else as_float(velocity, f"Substrate {name!r} velocity")
        if v is not None and v.ndim == 0:
            raise ValueError(f"Substrate {name!r} velocity must be a vector (ndim,) or (ndim, *grid.shape) in "
                             f"µm/s, got the number {velocity!r}")
        if matrix is not None and not isinstance(matrix, Matrix):
            raise ValueError(f"Substrate {name!r} matrix must be jc.Matrix(sites, kon, koff, degradation) or None, "
                             f"got {type(matrix).__name__}")
        if leak is not None and not isinstance(leak, Leak):
            raise ValueError(f"Substrate {name!r} leak must be jc.Leak(compartment, rate, where) or None, "
                             f"got {type(leak).__name__}")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "leak", leak)
        object.__setattr__(self, "diffusion", d)
        object.__setattr__(self, "decay", k)
        object.__setattr__(self, "boundary", normalise(dict(boundary or {}), name))
        # None when it is 0: a static fact that survives jit (no production stage, no "produced" flow)
        object.__setattr__(self, "production", None if is_concrete(q) and not np.any(np.asarray(q)) else q)
        object.__setattr__(self, "velocity", v)
        object.__setattr__(self, "matrix", matrix)

    @property
    def uniform(self) -> bool:
        """One diffusivity everywhere and no flow (the lines of an axis solve are all alike)."""
        return jnp.ndim(self.diffusion) == 0 and self.velocity is None

    def faces(self, ndim: int) -> tuple[Boundary, ...]:
        """One condition per face, ordered x-, x+, y-, y+, z-, z+ (up to ndim)."""
        out = []
        for f in FACES[: 2 * ndim]:
            out.append(self.boundary.get(f, Flux(0.0)))
        extra = set(self.boundary) - set(FACES[: 2 * ndim])
        if extra:
            raise ValueError(f"Substrate {self.name!r} names faces {sorted(extra)} but the grid has "
                             f"{ndim} axes; valid faces are {list(FACES[: 2 * ndim])}")
        return tuple(out)

    def check_grid(self, grid: Any) -> None:
        """Refuse grid-shaped values of the wrong shape and flow through a no-flux face."""
        faces = self.faces(grid.ndim)
        for what, val, unit in (("diffusion", self.diffusion, "µm²/s"), ("decay", self.decay, "1/s"),
                                ("production", 0.0 if self.production is None else self.production,
                                 "amount/(µm^ndim·s)")):
            check_map(val, grid.shape, f"Substrate {self.name!r} {what}", unit)
        if self.matrix is not None:
            check_map(self.matrix.sites, grid.shape, f"Substrate {self.name!r} matrix sites", "sites/µm^ndim")
        if self.leak is not None:
            self.leak.check_grid(grid.shape, self.name)
        if self.velocity is not None:
            check_velocity(self.velocity, grid.ndim, grid.shape, self.name)
            check_flow(self.velocity, faces, grid.ndim, self.name)

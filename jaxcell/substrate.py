"""Diffusing species and their boundary conditions.

Units: diffusion µm²/s, decay 1/s. The face conditions (``Flux``, ``Dirichlet``,
``Robin``, ``Periodic``) live in :mod:`jaxcell.boundary` and are re-exported here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax

from jaxcell._node import as_float, check_nonneg, node, static_field
from jaxcell.boundary import FACES, Boundary, Dirichlet, Flux, Periodic, Robin, normalise

__all__ = ["FACES", "Boundary", "Dirichlet", "Flux", "Periodic", "Robin", "Substrate"]


@node
class Substrate:
    """A diffusing, decaying species.

    Args:
        name: label used in outputs.
        diffusion: D, µm²/s (>= 0).
        decay: k, first-order decay, 1/s (>= 0).
        boundary: ``{face: condition}`` with faces ``"x-"``, ``"x+"``, ``"y-"``,
            ... or an axis name (``"x"``) for both faces; conditions are
            :class:`Flux`, :class:`Dirichlet`, :class:`Robin` or :class:`Periodic`
            (whole axes only; see :mod:`jaxcell.boundary`). Faces not named are no-flux.
    """

    diffusion: jax.Array
    decay: jax.Array
    boundary: dict
    name: str = static_field()

    def __init__(self, name: str, diffusion: Any, decay: Any = 0.0,
                 boundary: Mapping[str, Boundary] | None = None) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"Substrate name must be a non-empty string (used in outputs), got {name!r}")
        d = as_float(diffusion, f"Substrate {name!r} diffusion")
        k = as_float(decay, f"Substrate {name!r} decay")
        for val, what, unit in ((d, "diffusion", "µm²/s"), (k, "decay", "1/s")):
            if val.ndim != 0:
                raise ValueError(f"Substrate {name!r} {what} must be a scalar ({unit}), got shape {val.shape}")
            check_nonneg(val, f"Substrate {name!r} {what}", unit)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "diffusion", d)
        object.__setattr__(self, "decay", k)
        object.__setattr__(self, "boundary", normalise(dict(boundary or {}), name))

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


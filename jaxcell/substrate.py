"""Diffusing species and their boundary conditions.

Units: diffusion µm²/s, decay 1/s; a ``Flux`` is amount per µm^(ndim-1) per s
entering through the face; a ``Dirichlet`` value is a concentration (amount per
µm^ndim) held at the face itself (half a voxel from the outermost centre).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax

from jaxcell._node import as_float, check_nonneg, node, static_field
from jaxcell.grid import AXES


def _face_value(value: Any, kind: str, unit: str, note: str = "") -> Any:
    """A face condition's value: a finite scalar >= 0 (checked when concrete)."""
    v = as_float(value, f"{kind} value")
    if v.ndim != 0:
        raise ValueError(f"{kind} value must be a scalar ({unit}), got shape {v.shape}")
    check_nonneg(v, f"{kind} value", f"{unit}{', ' + note if note else ''}")
    return v


@node
class Flux:
    """Inward flux through a face, amount/(µm^(ndim-1)·s), >= 0; ``Flux(0.0)`` is no-flux.

    A negative (outward) flux fixed in advance would drain the face voxel below
    zero once it runs dry; model a sink with :class:`Dirichlet` instead.
    """

    value: jax.Array

    def __init__(self, value: Any = 0.0) -> None:
        object.__setattr__(self, "value", _face_value(value, "Flux", "amount/(µm^(ndim-1)·s)",
                                                      "inward; for a sink use jc.Dirichlet(0.0)"))


@node
class Dirichlet:
    """Concentration held at the face, amount/µm^ndim."""

    value: jax.Array

    def __init__(self, value: Any = 0.0) -> None:
        object.__setattr__(self, "value", _face_value(value, "Dirichlet", "amount/µm^ndim"))


@node
class Periodic:
    """Periodic axis: both faces of an axis wrap onto each other."""

    def __init__(self) -> None:
        pass


Boundary = Flux | Dirichlet | Periodic
FACES = tuple(f"{a}{s}" for a in AXES for s in "-+")


@node
class Substrate:
    """A diffusing, decaying species.

    Args:
        name: label used in outputs.
        diffusion: D, µm²/s (>= 0).
        decay: k, first-order decay, 1/s (>= 0).
        boundary: ``{face: condition}`` with faces ``"x-"``, ``"x+"``, ``"y-"``,
            ... or an axis name (``"x"``) for both faces; conditions are
            :class:`Flux`, :class:`Dirichlet` or :class:`Periodic` (whole axes
            only). Faces not named are no-flux.
    """

    diffusion: jax.Array
    decay: jax.Array
    boundary: dict
    name: str = static_field()

    def __init__(self, name: str, diffusion: Any, decay: Any = 0.0,
                 boundary: Mapping[str, Boundary] | None = None) -> None:
        d = as_float(diffusion, f"Substrate {name!r} diffusion")
        k = as_float(decay, f"Substrate {name!r} decay")
        for val, what, unit in ((d, "diffusion", "µm²/s"), (k, "decay", "1/s")):
            if val.ndim != 0:
                raise ValueError(f"Substrate {name!r} {what} must be a scalar ({unit}), got shape {val.shape}")
            check_nonneg(val, f"Substrate {name!r} {what}", unit)
        object.__setattr__(self, "name", str(name))
        object.__setattr__(self, "diffusion", d)
        object.__setattr__(self, "decay", k)
        object.__setattr__(self, "boundary", _normalise(dict(boundary or {}), name))

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


def _normalise(spec: dict, name: str) -> dict:
    out: dict[str, Boundary] = {}
    for key, cond in spec.items():
        if not isinstance(cond, (Flux, Dirichlet, Periodic)):
            raise ValueError(f"Substrate {name!r} boundary {key!r} must be jc.Flux, jc.Dirichlet or "
                             f"jc.Periodic, got {cond!r}")
        if key in AXES:
            faces = (f"{key}-", f"{key}+")
        elif key in FACES:
            faces = (key,)
            if isinstance(cond, Periodic):
                raise ValueError(f"Substrate {name!r}: Periodic() applies to a whole axis; write "
                                 f"boundary={{{key[0]!r}: jc.Periodic()}} instead of {key!r}")
        else:
            raise ValueError(f"Substrate {name!r}: unknown face {key!r}; use one of {list(FACES)} "
                             f"or an axis name {list(AXES)}")
        for f in faces:
            if f in out:
                raise ValueError(f"Substrate {name!r}: face {f!r} is given twice")
            out[f] = cond
    for a in AXES:
        lo, hi = out.get(f"{a}-"), out.get(f"{a}+")
        if isinstance(lo, Periodic) != isinstance(hi, Periodic):
            raise ValueError(f"Substrate {name!r}: axis {a!r} mixes Periodic with another condition; "
                             f"a periodic axis must be periodic on both faces")
    return out

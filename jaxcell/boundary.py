"""Face conditions: each class owns its numerics.

Every non-periodic face obeys one affine law for the inward flux through it,

    J_in = inflow − conductance · c₀          (amount/(µm^(ndim−1)·s))

with ``c₀`` the concentration of the voxel next to the face (its centre half a
voxel ``h/2`` inside). Each condition says what its ``inflow`` (amount/(µm^(ndim−1)·s))
and ``conductance`` (µm/s) are; every solver, :func:`jaxcell.steady_state` and the
budget read only those two numbers (and :attr:`Boundary.spectral_basis`), so a new
condition is one class here and nothing else:

* :class:`Flux` ``j``: ``inflow = j``, no conductance (``Flux(0)`` is no-flux);
* :class:`Dirichlet` ``v`` at the face: ``conductance = 2D/h`` (the half voxel
  between centre and face), ``inflow = 2Dv/h``; with ``at="voxel"``
  (PhysiCell/BioFVM) the outermost voxel layer is held instead and the face
  law is no-flux (:meth:`Boundary.held_layer`);
* :class:`Robin` (a permeable membrane, permeability ``P`` µm/s, outside value
  ``c_out``): the membrane ``P(c_f − c_out)`` in series with the half voxel
  ``2D(c₀ − c_f)/h`` gives ``conductance = 2DP/(2D + Ph)``, ``inflow =
  conductance·c_out``; ``P → ∞`` is Dirichlet, ``P = 0`` no-flux;
* :class:`Periodic`: the axis wraps; no face law.

In the voxel next to the face the law adds ``inflow/h`` to the source and
``conductance/h`` (1/s) to the removal rate.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from jaxcell._node import as_float, check_nonneg, is_concrete, node, static_field
from jaxcell.grid import AXES

FACES = tuple(f"{a}{s}" for a in AXES for s in "-+")
DIRICHLET_AT = ("face", "voxel")


def face_value(value: Any, what: str, unit: str, note: str = "") -> Any:
    """A face condition's value: a finite scalar >= 0 (checked when concrete)."""
    v = as_float(value, what)
    if v.ndim != 0:
        raise ValueError(f"{what} must be a scalar ({unit}), got shape {v.shape}")
    check_nonneg(v, what, f"{unit}{', ' + note if note else ''}")
    return v


def _zero(x: Any) -> bool:
    """True when ``x`` is statically known to be 0."""
    return is_concrete(x) and float(np.asarray(x)) == 0.0


class Boundary:
    """A condition on one face (see the module docstring for the face law).

    Subclasses set the class attributes and override :meth:`inflow` and
    :meth:`conductance`; values stay pytree leaves (traceable, fit-able).

    Attributes:
        periodic: the axis wraps (both faces must be periodic).
        spectral_basis: ``"cos"`` (no-flux basis, DCT-II), ``"fft"`` (periodic) or
            None when the condition has no uniform eigenbasis (the spectral
            solver refuses it).
        fixed_ratio: ``conductance·h/D`` when it is a fixed number (0 for a flux,
            2 for Dirichlet), so that solvers may precompute axis operators; None
            when it depends on traced values (Robin).
    """

    periodic: ClassVar[bool] = False
    spectral_basis: ClassVar[str | None] = "cos"
    fixed_ratio: ClassVar[float | None] = 0.0

    def inflow(self, D: jax.Array, h: float) -> jax.Array | None:
        """Inward flux with an empty face voxel, amount/(µm^(ndim−1)·s); None when it is 0."""
        return None

    def conductance(self, D: jax.Array, h: float) -> jax.Array | None:
        """Outward flux per unit face-voxel concentration, µm/s; None when there is none."""
        return None

    def check_values(self, where: str) -> None:
        """Raise ValueError if a concrete value is negative, NaN or infinite."""

    def no_inflow(self) -> bool:
        """True when the inflow is statically 0 (lets solvers skip a source)."""
        return True

    def held_layer(self) -> jax.Array | None:
        """The value the outermost voxel layer is held at (amount/µm^ndim), or None when the
        condition holds no voxel (only ``Dirichlet(at="voxel")`` does)."""
        return None


@node
class Flux(Boundary):
    """Inward flux through a face, amount/(µm^(ndim-1)·s), >= 0; ``Flux(0.0)`` is no-flux.

    A negative (outward) flux fixed in advance would drain the face voxel below
    zero once it runs dry; model a sink with :class:`Dirichlet` or :class:`Robin`.
    """

    value: jax.Array

    def __init__(self, value: Any = 0.0) -> None:
        object.__setattr__(self, "value", face_value(value, "Flux value", "amount/(µm^(ndim-1)·s)",
                                                     "inward; for a sink use jc.Dirichlet(0.0)"))

    def inflow(self, D: jax.Array, h: float) -> jax.Array | None:
        return None if _zero(self.value) else self.value

    def check_values(self, where: str) -> None:
        check_nonneg(self.value, f"{where} flux", "amount/(µm^(ndim-1)·s)")

    def no_inflow(self) -> bool:
        return _zero(self.value)


@node
class Dirichlet(Boundary):
    """Concentration held at a face, amount/µm^ndim.

    Args:
        value: the held concentration (>= 0).
        at: where it is held. ``"face"`` (default): at the face itself, half a
            voxel beyond the outermost voxel centres (``conductance = 2D/h``).
            ``"voxel"``: the outermost voxel layer is held at ``value`` and the
            face beyond it is no-flux: PhysiCell/BioFVM's convention. The layer's
            voxels are then held voxels of this substrate, exactly like the
            model's ``dirichlet_mask`` (every solver treats them as such; see
            :meth:`jaxcell.Model.held_voxels`). Where two faces' layers meet (an
            edge or corner), BioFVM's rule: the later face in the order x-, x+,
            y-, y+, z-, z+ decides that layer for every substrate of the model,
            so a substrate whose own face there is not ``at="voxel"`` leaves those
            edge voxels free even if an earlier face of its own held them.
    """

    value: jax.Array
    at: str = static_field(default="face")

    def __init__(self, value: Any = 0.0, at: str = "face") -> None:
        if at not in DIRICHLET_AT:
            raise ValueError(f"Dirichlet at must be one of {DIRICHLET_AT}, got {at!r}: 'face' holds the value at "
                             f"the face, 'voxel' holds the outermost voxel layer (PhysiCell/BioFVM)")
        object.__setattr__(self, "value", face_value(value, "Dirichlet value", "amount/µm^ndim"))
        object.__setattr__(self, "at", at)

    # the face law: a held layer leaves the face itself no-flux
    @property
    def fixed_ratio(self) -> float:  # type: ignore[override]
        return 0.0 if self.at == "voxel" else 2.0

    @property
    def spectral_basis(self) -> str | None:  # type: ignore[override]
        return None

    def conductance(self, D: jax.Array, h: float) -> jax.Array | None:
        return None if self.at == "voxel" else 2 * D / h

    def inflow(self, D: jax.Array, h: float) -> jax.Array | None:
        return None if self.at == "voxel" or _zero(self.value) else 2 * D * self.value / h

    def held_layer(self) -> jax.Array | None:
        return self.value if self.at == "voxel" else None

    def check_values(self, where: str) -> None:
        check_nonneg(self.value, f"{where} Dirichlet value", "amount/µm^ndim")

    def no_inflow(self) -> bool:
        return self.at == "voxel" or _zero(self.value)


@node
class Robin(Boundary):
    """A permeable face: outward flux ``permeability·(c_face − outside)``.

    Args:
        permeability: P, µm/s (>= 0). ``P = 0`` is no-flux; ``P → ∞`` holds the
            face at ``outside`` (Dirichlet).
        outside: concentration beyond the face, amount/µm^ndim (default 0: a sink).

    The membrane acts in series with the half voxel between the face voxel's
    centre and the face, so the face law is ``J_in = g·(outside − c₀)`` with
    ``g = 2DP/(2D + Ph)`` (µm/s).
    """

    spectral_basis: ClassVar[str | None] = None
    fixed_ratio: ClassVar[float | None] = None

    permeability: jax.Array
    outside: jax.Array

    def __init__(self, permeability: Any, outside: Any = 0.0) -> None:
        object.__setattr__(self, "permeability", face_value(permeability, "Robin permeability", "µm/s"))
        object.__setattr__(self, "outside", face_value(outside, "Robin outside", "amount/µm^ndim"))

    def conductance(self, D: jax.Array, h: float) -> jax.Array | None:
        P = jnp.asarray(self.permeability, jnp.result_type(D))
        # series law written so that D = 0 or P = 0 gives 0 without 0/0
        return 2 * D * P / jnp.maximum(2 * D + P * h, jnp.finfo(P.dtype).tiny)

    def inflow(self, D: jax.Array, h: float) -> jax.Array | None:
        return None if _zero(self.outside) else self.conductance(D, h) * self.outside

    def check_values(self, where: str) -> None:
        check_nonneg(self.permeability, f"{where} Robin permeability", "µm/s")
        check_nonneg(self.outside, f"{where} Robin outside", "amount/µm^ndim")

    def no_inflow(self) -> bool:
        return _zero(self.outside)


@node
class Periodic(Boundary):
    """Periodic axis: both faces of an axis wrap onto each other."""

    periodic: ClassVar[bool] = True
    spectral_basis: ClassVar[str | None] = "fft"
    fixed_ratio: ClassVar[float | None] = None

    def __init__(self) -> None:
        pass


def normalise(spec: Mapping[str, Boundary], name: str) -> dict[str, Boundary]:
    """``{face or axis: condition}`` as ``{face: condition}``, checked."""
    out: dict[str, Boundary] = {}
    for key, cond in spec.items():
        if not isinstance(cond, Boundary):
            raise ValueError(f"Substrate {name!r} boundary {key!r} must be jc.Flux, jc.Dirichlet, jc.Robin or "
                             f"jc.Periodic, got {cond!r}")
        if key in AXES:
            faces = (f"{key}-", f"{key}+")
        elif key in FACES:
            faces = (key,)
            if cond.periodic:
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
        if (lo is not None and lo.periodic) != (hi is not None and hi.periodic):
            raise ValueError(f"Substrate {name!r}: axis {a!r} mixes Periodic with another condition; "
                             f"a periodic axis must be periodic on both faces")
    return out

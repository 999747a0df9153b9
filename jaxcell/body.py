"""The body around the tissue: well-mixed compartments (blood, lymph, hemolymph) the tissue leaks into.

A :class:`Compartment` is one well-mixed pool of volume ``V`` (µm^ndim) cleared at
rate ``k_c`` (1/s); a substrate's :class:`Leak` exchanges free ligand between the
voxels it names and one compartment, per voxel::

    dc/dt   = … − rate·(c − c_b)
    V·dc_b/dt = Σ_voxels rate·(c − c_b)·V_voxel − k_c·V·c_b

Every leaking voxel sees the same ``c_b``: the coupling is global. It is a stage of
its own after transport (:func:`leak_step`), one backward-Euler step of the star
system "every voxel ↔ the compartment", which has a closed form (each voxel's new
value is a local formula in the compartment's new value, and that value solves one
scalar equation). So it is stable and positive at any ``dt`` with any solver,
conserves mass exactly (what the voxels lose the compartment gains, what
clearance removes is booked as "cleared"), and is first order in ``dt`` (Lie
splitting with transport).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcell._node import as_float, check_nonneg, is_concrete, node, static_field

__all__ = ["Compartment", "Leak", "leak_step"]


@node
class Compartment:
    """A well-mixed pool outside the grid (blood, lymph, hemolymph).

    Args:
        name: label, referred to by :class:`Leak`.
        volume: V, µm^ndim (> 0): in 2D an area, in 1D a length, like the voxels.
        clearance: k_c, 1/s (>= 0): first-order removal from the pool (kidney, liver).
    """

    volume: jax.Array
    clearance: jax.Array
    name: str = static_field()

    def __init__(self, name: str, volume: Any, clearance: Any = 0.0) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"Compartment name must be a non-empty string, got {name!r}")
        v = as_float(volume, f"Compartment {name!r} volume")
        kc = as_float(clearance, f"Compartment {name!r} clearance")
        for val, what, unit in ((v, "volume", "µm^ndim"), (kc, "clearance", "1/s")):
            if val.ndim != 0:
                raise ValueError(f"Compartment {name!r} {what} must be a number ({unit}), got shape {val.shape}")
            check_nonneg(val, f"Compartment {name!r} {what}", unit)
        if is_concrete(v) and float(np.asarray(v)) <= 0.0:
            raise ValueError(f"Compartment {name!r} volume must be > 0 (µm^ndim)")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "volume", v)
        object.__setattr__(self, "clearance", kc)


@node
class Leak:
    """Exchange of a substrate's free ligand with a :class:`Compartment`.

    Args:
        compartment: the compartment's name.
        rate: κ, 1/s (>= 0): a number or a ``grid.shape`` array.
        where: a ``grid.shape`` bool mask of the leaking voxels (None: every voxel).
    """

    rate: jax.Array
    where: Any
    compartment: str = static_field()

    def __init__(self, compartment: str, rate: Any, where: Any = None) -> None:
        if not isinstance(compartment, str) or not compartment.strip():
            raise ValueError(f"Leak compartment must be a compartment's name, got {compartment!r}")
        r = as_float(rate, "Leak rate")
        check_nonneg(r, "Leak rate", "1/s")
        w = None
        if where is not None:
            dtype = np.asarray(where).dtype if is_concrete(where) else jnp.result_type(where)
            if dtype != np.bool_:  # a cast would make every nonzero number "leaks"
                raise ValueError("Leak where must be a bool mask of the grid's shape (True: the voxel leaks), got "
                                 f"dtype {dtype}; write e.g. where=(x > 260.0)")
            w = jnp.asarray(where, bool)
        object.__setattr__(self, "compartment", compartment)
        object.__setattr__(self, "rate", r)
        object.__setattr__(self, "where", w)

    def per_voxel(self, shape: tuple[int, ...], dtype: Any) -> jax.Array:
        """The leak rate in every voxel (1/s), 0 outside ``where``."""
        r = jnp.broadcast_to(jnp.asarray(self.rate, dtype), shape)
        return r if self.where is None else jnp.where(self.where, r, 0)

    def check_grid(self, shape: tuple[int, ...], substrate: str) -> None:
        for what, x in (("rate", self.rate), ("where", self.where)):
            if x is not None and np.ndim(x) and tuple(np.shape(x)) != tuple(shape):
                raise ValueError(f"Substrate {substrate!r} leak {what} must be "
                                 f"{'a number or ' if what == 'rate' else ''}an array of the grid's shape "
                                 f"{tuple(shape)}, got shape {tuple(np.shape(x))}")
        if self.where is not None and np.ndim(self.where) == 0:
            raise ValueError(f"Substrate {substrate!r} leak where must be a bool mask of the grid's shape "
                             f"{tuple(shape)} (None: every voxel)")


def leak_step(c: jax.Array, cb: jax.Array, rate: jax.Array, comp: Compartment, vol: float,
              dt: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """One backward-Euler step of the leak between field ``c`` and compartment concentration ``cb``.

    With z = dt·rate per voxel: ``c' = (c + z·c_b')/(1 + z)`` and
    ``c_b' = (V·c_b + Σ vol·z·c/(1+z)) / (V·(1 + dt·k_c) + Σ vol·z/(1+z))``.

    Returns ``(c', c_b', leaked, cleared)``: the amounts that left the tissue for
    the compartment (net, may be negative) and that clearance removed.
    """
    V = jnp.asarray(comp.volume, c.dtype)
    kc = jnp.asarray(comp.clearance, c.dtype)
    z = dt * rate
    f = z / (1 + z)
    a = vol * jnp.sum(f)
    b = vol * jnp.sum(f * c)
    cb_new = (V * cb + b) / (V * (1 + dt * kc) + a)
    c_new = (c + z * cb_new) / (1 + z)
    leaked = b - a * cb_new  # Σ vol·(c − c') = Σ vol·z/(1+z)·(c − c_b')
    cleared = dt * kc * V * cb_new
    return c_new, cb_new, leaked, cleared

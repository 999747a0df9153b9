"""The solver interface and the registry that maps ``Model(solver="name")`` to a solver.

A solver advances one substrate's field by one step of transport (diffusion,
decay, faces, held voxels) together with the cells' exchange (secretion and
uptake), and reports the amounts each process moved so the budget closes.
It is a small stateless object (hashable, so it can be a static part of a
jitted :class:`jaxcell.Model`):

* :meth:`Solver.check` refuses, when the model is built, what the scheme cannot
  do, naming a solver that can;
* :meth:`Solver.plan` fixes host-side, before compiling, whatever must be
  static for a step of ``dt`` (the explicit solver's sub-step count);
* :meth:`Solver.init` precomputes per-run work inside the trace (axis inverses);
* :meth:`Solver.step` is the pure step ``(c, exchange) -> (c, Amounts)``.

To add a scheme: subclass :class:`Solver`, give it a ``name``, and
:func:`register` it (the built-in ones do so in their modules). Nothing else in
jaxcell lists solvers: :class:`jaxcell.Model`, scenarios, ``jaxcell fit``, the
tests and the scripts all ask the registry (:func:`names`, :func:`get`).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from jaxcell.exchange import Exchange
from jaxcell.medium import Heterogeneous
from jaxcell.operators import Faces, Layout, Uniform

__all__ = ["MEDIUM", "Amounts", "Exchange", "Params", "Solver", "check_medium", "get", "names", "operator",
           "production", "register"]


class Params(NamedTuple):
    """Traced parameters of one substrate for a step (cast to the field dtype)."""

    D: jax.Array  # µm²/s
    k: jax.Array  # 1/s
    faces: Faces  # one jaxcell.boundary condition per face
    mask: jax.Array | None  # grid.shape bool, held voxels
    hold: jax.Array | None  # grid.shape, held values
    name: str = ""  # the substrate's name, for messages
    q: jax.Array | None = None  # production by the tissue, amount/(µm^ndim·s); None: none
    velocity: jax.Array | None = None  # (ndim,) or (ndim, *grid.shape) µm/s; None: no flow

    @property
    def uniform(self) -> bool:
        """One D everywhere and no flow: every line of an axis is the same system."""
        return self.D.ndim == 0 and self.velocity is None


def operator(grid: Any, p: Params, lines_alike: bool = True) -> Uniform | Heterogeneous:
    """The transport operator of substrate ``p``: :class:`Uniform` when it can be, else :class:`Heterogeneous`.

    ``lines_alike=False`` asks for the per-line operator even for a uniform medium
    (a scheme whose line systems carry a per-voxel term, such as lod's decay map).
    """
    if p.uniform and lines_alike:
        return Uniform(grid, p.D, p.faces)
    return Heterogeneous.build(grid, p.D, p.faces, p.velocity, p.D.dtype)


def production(p: Params, shape: tuple[int, ...]) -> jax.Array | None:
    """The tissue's production of ``p`` per voxel (``shape``), 0 in held voxels; None when there is none."""
    if p.q is None:
        return None
    q = jnp.broadcast_to(p.q, shape)
    return q if p.mask is None else jnp.where(p.mask, 0, q)


class Amounts(NamedTuple):
    """Amounts moved during one step, scalars (amount)."""

    secreted: jax.Array
    inflow: jax.Array
    outflow: jax.Array
    uptake: jax.Array
    decayed: jax.Array
    produced: Any = 0.0  # by the tissue; a default, so that solvers written before it keep working

    @classmethod
    def zero(cls, dtype: Any) -> Amounts:
        z = jnp.zeros((), dtype)
        return cls(z, z, z, z, z, z)

    def __add__(self, other: Amounts) -> Amounts:  # type: ignore[override]
        return Amounts(*(x + y for x, y in zip(self, other)))


class Solver:
    """A time-stepping scheme for one substrate (see the module docstring).

    Attributes:
        name: the string ``Model(solver=...)`` takes.
        needs_diffusion_bound: under tracing (fits) the scheme needs the static
            bound ``Model(max_diffusion=...)`` (it fixes a step count).
        exact_steady_state: a steady state of the semi-discrete problem is a
            fixed point of every step, whatever ``dt``.
        medium: which of :data:`MEDIUM` (per-voxel diffusion or decay, production,
            flow) the scheme handles; :func:`check_medium` refuses the others when
            the model is built. The extracellular matrix is a stage of its own and
            works with every solver.
        dt_sets_accuracy: the error in time shrinks with ``dt`` (False for a scheme whose
            accuracy is set by an internal sub-step; ``dt=None`` refuses it).
        scratch_fields: field-sized buffers one step needs beside the field
            (XLA's temporaries, measured by ``scripts/bench_transport.py``); the
            memory estimate of ``Model.init`` uses it.
    """

    name: ClassVar[str] = ""
    medium: ClassVar[frozenset] = frozenset()  # the tissue medium's features it handles (see MEDIUM)
    needs_diffusion_bound: ClassVar[bool] = False
    exact_steady_state: ClassVar[bool] = True
    scratch_fields: ClassVar[float] = 2.0
    dt_sets_accuracy: ClassVar[bool] = True  # its error in time shrinks with dt (dt=None can choose a step)

    def check(self, model: Any) -> None:
        """Raise ValueError, naming a solver that can, for what this scheme cannot do."""

    def time_order(self, model: Any) -> int:
        """Order in dt of the scheme's error in time for ``model`` (the step sizes ``dt=None`` chooses
        rest on it): 1 unless a scheme says better."""
        return 1

    def exact_in_time(self, model: Any, cells: Any) -> bool:
        """Whether a step of any length is exact in time for ``model`` with ``cells`` (then ``dt=None``
        takes one step per save interval)."""
        return False

    def plan(self, model: Any, dt: float) -> tuple[Hashable, ...]:
        """Static, host-side choices for a step of ``dt`` s: one hashable per substrate."""
        return (None,) * model.n_substrates

    def before_run(self, model: Any, cells: Any, dt: float) -> None:
        """Host-side warnings about a run with concrete ``cells`` at step ``dt`` (optional)."""

    def after_run(self, model: Any, fields: jax.Array, saved: jax.Array, dt: float) -> None:
        """Host-side warnings about a finished run's concrete results (optional)."""

    def init(self, model: Any, p: Params, dt: jax.Array, plan: Hashable) -> Any:
        """Per-call precomputation for substrate parameters ``p`` at step ``dt`` (traced); a pytree."""
        return None

    def step(self, model: Any, p: Params, setup: Any, c: jax.Array, ex: Exchange | None, dt: jax.Array,
             plan: Hashable, layout: Layout | None) -> tuple[jax.Array, Amounts]:
        """Advance field ``c`` (``grid.shape``) by ``dt``; returns the new field and the amounts moved."""
        raise NotImplementedError

    # Stateless: every instance of a class is the same solver (hashable, a static part of Model).
    def __eq__(self, other: object) -> bool:
        return type(self) is type(other)

    def __hash__(self) -> int:
        return hash((type(self).__module__, type(self).__qualname__))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


MEDIUM = ("diffusion map", "decay map", "production", "flow")


def medium_features(s: Any) -> set[str]:
    """The features of :data:`MEDIUM` that substrate ``s`` uses."""
    out = set()
    if jnp.ndim(s.diffusion):
        out.add("diffusion map")
    if jnp.ndim(s.decay):
        out.add("decay map")
    if s.production is not None:
        out.add("production")
    if s.velocity is not None:
        out.add("flow")
    return out


def check_medium(scheme: Solver, model: Any) -> None:
    """Refuse, naming solvers that can, a substrate whose medium ``scheme`` cannot step."""
    for s in model.substrates:
        missing = medium_features(s) - scheme.medium
        if missing:
            able = [n for n, sv in _REGISTRY.items() if missing <= sv.medium]
            raise ValueError(f"solver={scheme.name!r} does not handle {', '.join(sorted(missing))} (substrate "
                             f"{s.name!r}); use solver={able[0] if able else 'implicit'!r}"
                             + (f" (or one of {able})" if len(able) > 1 else ""))


_REGISTRY: dict[str, Solver] = {}


def register(solver: type[Solver] | Solver) -> type[Solver] | Solver:
    """Make ``solver`` (a :class:`Solver` subclass or instance) available as ``Model(solver=solver.name)``.

    Usable as a class decorator. Registering a name again replaces the earlier solver.
    """
    inst = solver() if isinstance(solver, type) else solver
    if not isinstance(inst, Solver) or not inst.name or not isinstance(inst.name, str):
        raise ValueError(f"register needs a jaxcell.solvers.Solver with a non-empty name, got {solver!r}")
    _REGISTRY[inst.name] = inst
    return solver


def names() -> tuple[str, ...]:
    """Names of the registered solvers, built-in ones first."""
    return tuple(_REGISTRY)


def get(solver: str | Solver) -> Solver:
    """The registered solver called ``solver`` (a :class:`Solver` instance is returned as is)."""
    if isinstance(solver, Solver):
        return solver
    try:
        return _REGISTRY[solver]
    except (KeyError, TypeError):
        raise ValueError(f"solver must be one of {names()} or a jaxcell.solvers.Solver, got {solver!r}") from None

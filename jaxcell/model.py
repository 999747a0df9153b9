"""The model (grid, substrates, solver) and the simulation state."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcell._node import as_float, check_nonneg, float_dtype, is_concrete, node, static_field
from jaxcell.binding import Response
from jaxcell.body import Compartment
from jaxcell.cells import Cells, bound_ligand
from jaxcell.grid import Grid
from jaxcell.solvers import Params, Solver, get
from jaxcell.solvers.base import check_medium
from jaxcell.substrate import Substrate

BUDGET_FLOWS = ("secreted", "inflow", "outflow", "uptake", "decayed", "internalised", "produced", "matrix_degraded",
                "cleared")


@node
class Model:
    """Grid, substrates and how to step them.

    Args:
        grid: a :class:`Grid`.
        substrates: one or more :class:`Substrate`.
        solver: ``"implicit"`` (default, Douglas ADI), ``"lod"`` (BioFVM),
            ``"explicit"`` (FTCS, sub-stepped), ``"spectral"`` (exponential
            integrator), the name of a solver added with
            :func:`jaxcell.solvers.register`, or a :class:`jaxcell.solvers.Solver`;
            see :mod:`jaxcell.solvers`. The solver refuses here what it cannot do.
        coupling: ``"nearest"`` (default, BioFVM) or ``"linear"`` cell-grid coupling.
        dirichlet_mask: optional bool array of voxels held at fixed concentration
            (e.g. a blood vessel): ``grid.shape`` (held for every substrate) or
            ``(S, *grid.shape)`` (per substrate). A substrate's
            ``jc.Dirichlet(v, at="voxel")`` faces add their outermost voxel
            layers (:meth:`held_voxels`).
        dirichlet_value: held concentration(s): scalar, ``(S,)`` or ``(S, *grid.shape)``.
        responses: :class:`Response` rules applied every step.
        theta: implicit weight of the ``implicit`` solver (0.5: second order in
            time; 1: first order and monotone).
        max_diffusion: static upper bound (µm²/s) that fixes the ``explicit``
            solver's sub-step count when D is traced (fits); a larger traced D
            raises at run time.
        max_decay: optional static upper bound (1/s) on a traced decay, checked
            the same way (decay does not limit the explicit step).
        compartments: :class:`jaxcell.Compartment` pools (blood, lymph) that
            substrates leak into (``Substrate(leak=jc.Leak(name, rate))``).
    """

    substrates: tuple
    dirichlet_mask: jax.Array | None
    dirichlet_value: jax.Array | None
    responses: tuple
    compartments: tuple
    grid: Grid = static_field()
    solver: str = static_field()
    scheme: Solver = static_field()
    coupling: str = static_field()
    theta: float = static_field()
    max_diffusion: float | None = static_field()
    max_decay: float | None = static_field()

    def __init__(self, grid: Grid, substrates: Substrate | Sequence[Substrate], solver: str | Solver = "implicit",
                 coupling: str = "nearest", dirichlet_mask: Any = None, dirichlet_value: Any = 0.0,
                 responses: Sequence[Response] = (), theta: float = 0.5,
                 max_diffusion: float | None = None, max_decay: float | None = None,
                 compartments: Sequence[Compartment] = ()) -> None:
        if not isinstance(grid, Grid):
            raise ValueError(f"grid must be a jc.Grid, got {type(grid).__name__}")
        subs = (substrates,) if isinstance(substrates, Substrate) else tuple(substrates)
        if not subs or not all(isinstance(s, Substrate) for s in subs):
            raise ValueError("substrates must be a non-empty list of jc.Substrate")
        names = [s.name for s in subs]
        if len(set(names)) != len(names):
            raise ValueError(f"substrate names must be unique, got {names}")
        scheme = get(solver)
        if coupling not in ("nearest", "linear"):
            raise ValueError(f"coupling must be 'nearest' or 'linear', got {coupling!r}")
        if not 0.5 <= float(theta) <= 1.0:
            raise ValueError(f"theta must lie in [0.5, 1] for unconditional stability, got {theta}")
        for s in subs:
            s.check_grid(grid)  # faces the grid lacks, maps of the wrong shape, flow through a wall
        mask = value = None
        if dirichlet_mask is not None:
            mask = jnp.asarray(dirichlet_mask, bool)
            if mask.shape not in (grid.shape, (len(subs),) + grid.shape):
                raise ValueError(f"dirichlet_mask must have the grid shape {grid.shape} or (S, *grid.shape) = "
                                 f"{(len(subs),) + grid.shape}, got {mask.shape}")
            v = as_float(dirichlet_value, "dirichlet_value")
            check_nonneg(v, "dirichlet_value", "amount/µm^ndim", "concentrations are non-negative")
            if v.ndim == 1:
                v = v.reshape((-1,) + (1,) * grid.ndim)
            try:
                value = jnp.broadcast_to(v, (len(subs),) + grid.shape)
            except ValueError:
                raise ValueError(f"dirichlet_value must be a scalar, (S,) or (S, *grid.shape) with "
                                 f"S = {len(subs)}, got {v.shape}") from None
        for r in responses:
            if not isinstance(r, Response):
                raise ValueError("responses must be jc.Response objects")
            for nm in (r.target, r.signal):
                if nm not in names:
                    raise ValueError(f"Response names substrate {nm!r}, which the model lacks ({names})")
        comps = tuple(compartments)
        if not all(isinstance(cp, Compartment) for cp in comps):
            raise ValueError("compartments must be jc.Compartment objects")
        cnames = [cp.name for cp in comps]
        if len(set(cnames)) != len(cnames):
            raise ValueError(f"compartment names must be unique, got {cnames}")
        for s in subs:
            if s.leak is not None and s.leak.compartment not in cnames:
                raise ValueError(f"Substrate {s.name!r} leaks into compartment {s.leak.compartment!r}, which the "
                                 f"model lacks; add Model(..., compartments=[jc.Compartment({s.leak.compartment!r}, "
                                 f"volume, clearance)]) (has {cnames})")
        for name, bound in (("max_diffusion", max_diffusion), ("max_decay", max_decay)):
            if bound is not None and not (np.isfinite(bound) and bound >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {bound!r}")
        object.__setattr__(self, "substrates", subs)
        object.__setattr__(self, "dirichlet_mask", mask)
        object.__setattr__(self, "dirichlet_value", value)
        object.__setattr__(self, "responses", tuple(responses))
        object.__setattr__(self, "compartments", comps)
        object.__setattr__(self, "grid", grid)
        object.__setattr__(self, "solver", scheme.name)
        object.__setattr__(self, "scheme", scheme)
        object.__setattr__(self, "coupling", coupling)
        object.__setattr__(self, "theta", float(theta))
        object.__setattr__(self, "max_diffusion", None if max_diffusion is None else float(max_diffusion))
        object.__setattr__(self, "max_decay", None if max_decay is None else float(max_decay))
        scheme.check(self)
        check_medium(scheme, self)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.substrates)

    @property
    def has_matrix(self) -> bool:
        """Some substrate binds an extracellular matrix (the state then carries ``matrix``)."""
        return any(s.matrix is not None for s in self.substrates)

    @property
    def flows(self) -> tuple[str, ...]:
        """The budget flows (of :data:`BUDGET_FLOWS`) a step of this model can move."""
        skip = set()
        if all(s.production is None for s in self.substrates):
            skip.add("produced")
        if not self.has_matrix:
            skip.add("matrix_degraded")
        if not self.compartments:
            skip.add("cleared")
        return tuple(k for k in BUDGET_FLOWS if k not in skip)

    @property
    def has_held(self) -> bool:
        """Some voxel is held at a fixed value (``dirichlet_mask`` or a ``Dirichlet(at="voxel")`` face)."""
        return self.dirichlet_mask is not None or bool(self._layers())

    def _layers(self) -> list[tuple[tuple, list[Any]]]:
        """Per face (order x-, x+, y-, y+, z-, z+) holding a layer for some substrate: the index of
        the face's voxel layer and each substrate's held value there (None: not held by this face)."""
        ndim = self.grid.ndim
        faces = [s.faces(ndim) for s in self.substrates]
        out = []
        for j in range(2 * ndim):
            values = [f[j].held_layer() for f in faces]
            if any(v is not None for v in values):
                a, end = divmod(j, 2)
                idx = [slice(None)] * ndim
                idx[a] = -1 if end else 0
                out.append((tuple(idx), values))
        return out

    def held_voxels(self, dtype: Any, substrate: int | None = None) -> tuple[Any, Any] | tuple[None, None]:
        """The held voxels: bool mask and values (amount/µm^ndim), ``(S, *grid.shape)`` for every
        substrate or ``grid.shape`` for ``substrate`` alone; ``(None, None)`` when nothing is held.

        The ``Dirichlet(at="voxel")`` faces' outermost layers first, set up as BioFVM sets up its
        outer Dirichlet nodes: face by face in the order x-, x+, y-, y+, z-, z+, a face holding a
        layer for some substrate decides the whole layer for every substrate (held at its value
        where that substrate's face is ``at="voxel"``, not held otherwise), so where two layers
        meet (edges, corners) the later face wins; then the model's ``dirichlet_mask`` voxels
        (at ``dirichlet_value``). The layers' mask is a NumPy constant; only values are traced.
        """
        if not self.has_held:
            return None, None
        if substrate is None:
            parts = [self.held_voxels(dtype, i) for i in range(self.n_substrates)]
            return jnp.stack([jnp.asarray(m) for m, _ in parts]), jnp.stack([v for _, v in parts])
        mask = np.zeros(self.grid.shape, bool)
        value = jnp.zeros(self.grid.shape, dtype)
        for idx, values in self._layers():
            layer = np.zeros(self.grid.shape, bool)
            layer[idx] = True
            v = values[substrate]
            mask = np.where(layer, v is not None, mask)
            if v is not None:
                value = jnp.where(layer, jnp.asarray(v, dtype), value)
        if self.dirichlet_mask is None:
            return mask, value
        user = self.dirichlet_mask if self.dirichlet_mask.ndim == self.grid.ndim else self.dirichlet_mask[substrate]
        return mask | user, jnp.where(user, self.dirichlet_value[substrate].astype(dtype), value)

    @property
    def has_leak(self) -> bool:
        """Some substrate leaks into a compartment (the state then carries ``compartments``)."""
        return any(s.leak is not None for s in self.substrates)

    def compartment(self, name: str) -> Compartment:
        return next(cp for cp in self.compartments if cp.name == name)

    def compartment_volumes(self, dtype: Any) -> dict | None:
        """``{name: volume}`` (µm^ndim) of the compartments, or None; the state keeps a copy for the budget."""
        if not self.compartments:
            return None
        return {cp.name: jnp.asarray(cp.volume, dtype) for cp in self.compartments}

    @property
    def n_substrates(self) -> int:
        return len(self.substrates)

    def params(self, i: int, dtype: Any) -> Params:
        """Traced parameters of substrate ``i`` cast to the field dtype."""
        s = self.substrates[i]
        faces = tuple(jax.tree_util.tree_map(lambda v: jnp.asarray(v, dtype), f) for f in s.faces(self.grid.ndim))
        mask, hold = self.held_voxels(dtype, i)
        q = None if s.production is None else jnp.asarray(s.production, dtype)
        v = None if s.velocity is None else jnp.asarray(s.velocity, dtype)
        return Params(jnp.asarray(s.diffusion, dtype), jnp.asarray(s.decay, dtype), faces, mask, hold,
                      s.name, q, v)

    def init(self, cells: Cells | None = None, fields: Any = None, matrix: Any = None,
             compartments: Any = None, held_at_start: bool = True) -> State:
        """Initial state at t = 0.

        Args:
            cells: :class:`Cells` or None.
            fields: ``(S, *grid.shape)`` initial concentrations (default 0);
                held voxels start at their held value.
            matrix: ``(S, *grid.shape)`` ligand already bound to the extracellular
                matrix (amount/µm^ndim, at most the sites; default 0); only for a
                model with a :class:`jaxcell.Matrix`.
            compartments: ``{name: (S,)}`` concentrations in the compartments at t = 0
                (amount/µm^ndim; default 0).
            held_at_start: held voxels start at their held value (default). False
                keeps ``fields`` there too, as PhysiCell does (it first imposes its
                Dirichlet values in the first step); the first step books the
                difference as inflow or outflow.
        """
        dtype = float_dtype()
        shape = (self.n_substrates,) + self.grid.shape
        check_memory(self, dtype, 0 if cells is None else int(np.shape(cells.position)[0]))
        if fields is None:
            f = jnp.zeros(shape, dtype)
        else:
            f = as_float(fields, "fields")
            if f.shape != shape:
                if self.n_substrates == 1 and f.shape == self.grid.shape:
                    f = f[None]
                else:
                    raise ValueError(f"fields must have shape (S, *grid.shape) = {shape}, got {f.shape}")
            check_nonneg(f, "fields", "amount/µm^ndim", "concentrations are non-negative")
            f = jnp.asarray(f)
        mask, hold = self.held_voxels(dtype)
        if mask is not None and held_at_start:
            f = jnp.where(mask, hold, f)
        if cells is not None:
            if not isinstance(cells, Cells):
                raise ValueError(f"cells must be jc.Cells or None, got {type(cells).__name__}")
            cells = cells.conform(self.grid, self.n_substrates)
        m = self._initial_matrix(matrix, shape, dtype)
        zero = jnp.zeros((self.n_substrates,), dtype)
        initial = jnp.sum(f.reshape(self.n_substrates, -1), axis=1) * self.grid.voxel_volume
        if m is not None:
            initial = initial + jnp.sum(m.reshape(self.n_substrates, -1), axis=1) * self.grid.voxel_volume
        comps = self._initial_compartments(compartments, dtype)
        for cp in self.compartments:
            if comps is not None:
                initial = initial + comps[cp.name] * jnp.asarray(cp.volume, dtype)
        if cells is not None and cells.receptors is not None:
            initial = initial + bound_ligand(cells)
        # only the flows this model can move are carried (a flow that is always 0 costs nothing)
        totals = {"initial": initial, **{k: zero for k in self.flows},
                  "compensation": {k: zero for k in self.flows}}  # Kahan terms of the flows (jaxcell.step)
        return State(fields=f, t=jnp.zeros((), dtype), cells=cells, totals=totals, steps=jnp.zeros((), jnp.int32),
                     matrix=m, compartments=comps, compartment_volumes=self.compartment_volumes(dtype),
                     t_static=0.0, voxel_volume=self.grid.voxel_volume)

    def _initial_compartments(self, given: Any, dtype: Any) -> dict | None:
        if not self.compartments:
            if given:
                raise ValueError("compartments= given but the model has no jc.Compartment")
            return None
        given = dict(given or {})
        extra = set(given) - {cp.name for cp in self.compartments}
        if extra:
            raise ValueError(f"compartments= names {sorted(extra)}, which the model lacks")
        out = {}
        for cp in self.compartments:
            v = as_float(given.get(cp.name, 0.0), f"compartments[{cp.name!r}]")
            check_nonneg(v, f"compartments[{cp.name!r}]", "amount/µm^ndim", "concentrations are non-negative")
            try:
                out[cp.name] = jnp.broadcast_to(jnp.asarray(v, dtype), (self.n_substrates,))
            except ValueError:
                raise ValueError(f"compartments[{cp.name!r}] must be a number or (S,) with S = "
                                 f"{self.n_substrates}, got shape {v.shape}") from None
        return out

    def _initial_matrix(self, matrix: Any, shape: tuple[int, ...], dtype: Any) -> jax.Array | None:
        if not self.has_matrix:
            if matrix is not None:
                raise ValueError("matrix= given but no substrate has a jc.Matrix")
            return None
        if matrix is None:
            return jnp.zeros(shape, dtype)
        m = as_float(matrix, "matrix")
        if m.shape != shape:
            raise ValueError(f"matrix must have shape (S, *grid.shape) = {shape}, got {m.shape}")
        check_nonneg(m, "matrix", "amount/µm^ndim", "bound amounts are non-negative")
        for i, s in enumerate(self.substrates):
            if s.matrix is not None and not is_concrete(s.matrix.sites):
                continue  # traced sites (inside jit): not checkable here
            sites = 0.0 if s.matrix is None else np.asarray(s.matrix.sites)
            if is_concrete(m) and np.any(np.asarray(m[i]) > sites * (1 + 1e-6)):
                raise ValueError(f"matrix for substrate {s.name!r} exceeds its sites ({np.max(sites):g} "
                                 "per µm^ndim): at most every site can be occupied")
        return jnp.asarray(m, dtype)


@node
class State:
    """Simulation state (pytree).

    fields: ``(S, *grid.shape)`` amount/µm^ndim; t: time in s; cells: :class:`Cells`
    or None; totals: accumulated budget amounts, each ``(S,)``; steps: steps taken
    since t = 0 (a behaviour's random key is drawn from it); matrix: ``(S, *grid.shape)``
    ligand on the extracellular matrix (amount/µm^ndim), or None without a
    :class:`jaxcell.Matrix`; compartments: ``{name: (S,)}`` concentrations in the
    model's :class:`jaxcell.Compartment` pools (amount/µm^ndim), or None, and
    ``compartment_volumes`` their volumes (µm^ndim, for :func:`budget`). ``t_static`` is
    the host-side copy of ``t`` that lets :func:`simulate` plan its steps under jit;
    ``voxel_volume`` (µm^ndim) turns concentrations into amounts for :func:`budget`;
    ``sharding`` (set by :func:`jaxcell.shard`) is how simulate splits the fields.
    """

    fields: jax.Array
    t: jax.Array
    cells: Cells | None
    totals: dict
    steps: jax.Array
    matrix: jax.Array | None = None
    compartments: dict | None = None
    compartment_volumes: dict | None = None
    t_static: float | None = static_field(default=None)
    voxel_volume: float = static_field(default=1.0)
    sharding: Any = static_field(default=None)


CELL_FIELDS = 40  # float32 numbers per cell and substrate in the state and one step (cells, receptors, coupling)


def memory_estimate(model: Model, dtype: Any, n_cells: int) -> int:
    """Bytes a run of ``model`` needs: fields, the loop's copy, the solver's scratch, the cells."""
    item = np.dtype(dtype).itemsize
    field = model.n_substrates * model.grid.size * item
    one = model.grid.size * item
    # a heterogeneous medium keeps per-face coefficients (2 per axis) and per-line factors (3 per axis);
    # a matrix is one more carried field and its loop copy
    medium = sum((5 * model.grid.ndim if not s.uniform else 0) + (2 if s.matrix is not None else 0)
                 for s in model.substrates) * one
    return int(field * (2 + model.scheme.scratch_fields) + medium + n_cells * model.n_substrates * CELL_FIELDS * item)


def available_memory() -> int | None:
    """Bytes free for arrays on the default device: its allocator's limit, else the host's MemAvailable."""
    try:
        stats = jax.devices()[0].memory_stats() or {}
        if "bytes_limit" in stats:
            return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    except Exception:  # noqa: BLE001 - backends without memory_stats
        pass
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_memory(model: Model, dtype: Any, n_cells: int) -> None:
    """Refuse, before allocating, a model whose run cannot fit in memory ("needs X GiB")."""
    need, free = memory_estimate(model, dtype, n_cells), available_memory()
    if free is not None and need > free:
        raise MemoryError(f"a {model.solver!r} run on a grid of {model.grid.shape} voxels × {model.n_substrates} "
                          f"substrate(s) in {np.dtype(dtype).name} needs about {need / 2**30:.3g} GiB; "
                          f"{free / 2**30:.3g} GiB are free: use a coarser spacing, a smaller domain, or shard it "
                          "over several devices (jc.shard)")


def state_time(state: State) -> float:
    """Concrete start time of ``state`` (s)."""
    if state.t_static is not None:
        return float(state.t_static)
    if is_concrete(state.t):
        return float(np.asarray(state.t))
    raise ValueError("the state's time is traced; build it with model.init() or pass a concrete state")


def check_model_values(model: Model) -> None:
    """Validate concrete parameter values (NaN, negative)."""
    for cp in model.compartments:
        check_nonneg(cp.volume, f"Compartment {cp.name!r} volume", "µm^ndim")
        check_nonneg(cp.clearance, f"Compartment {cp.name!r} clearance", "1/s")
    for s in model.substrates:
        check_nonneg(s.diffusion, f"Substrate {s.name!r} diffusion", "µm²/s")
        check_nonneg(s.decay, f"Substrate {s.name!r} decay", "1/s")
        if s.production is not None:
            check_nonneg(s.production, f"Substrate {s.name!r} production", "amount/(µm^ndim·s)")
        if s.velocity is not None and is_concrete(s.velocity) and not np.all(np.isfinite(np.asarray(s.velocity))):
            raise ValueError(f"Substrate {s.name!r} velocity must be finite (µm/s), got NaN or inf")
        if s.leak is not None:
            check_nonneg(s.leak.rate, f"Substrate {s.name!r} leak rate", "1/s")
        if s.matrix is not None:
            for what in ("sites", "kon", "koff", "degradation"):
                check_nonneg(getattr(s.matrix, what), f"Substrate {s.name!r} matrix {what}", "")
        for face, cond in s.boundary.items():
            cond.check_values(f"Substrate {s.name!r} boundary {face!r}")

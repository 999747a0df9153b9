"""Time stepping: one ``lax.scan`` over steps, with saving and checkpointing as arguments."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import NamedSharding, PartitionSpec

from jaxcell import step as stages
from jaxcell import steps
from jaxcell._node import concrete_float, is_concrete, node, replace
from jaxcell.cells import Cells, bound_ligand, voxel_order
from jaxcell.model import BUDGET_FLOWS, Model, State, check_model_values, state_time
from jaxcell.operators import Layout

CHECKPOINTS = (None, "step", "sqrt")
SORT_MIN = 65536  # cell count from which simulate works on cells sorted by voxel


@node
class Trajectory:
    """Saved frames: ``times`` (T,) s, ``fields`` (T, S, *grid.shape), ``cells`` (per-frame
    :class:`Cells` with a leading T axis, or None unless ``save_cells=True``), ``matrix``
    (T, S, *grid.shape) ligand on the extracellular matrix, or None without a :class:`jaxcell.Matrix`;
    ``compartments`` ``{name: (T, S)}`` compartment concentrations, or None without compartments."""

    times: jax.Array
    fields: jax.Array
    cells: Cells | None
    matrix: jax.Array | None = None
    compartments: dict | None = None


class _Group(NamedTuple):
    frames: int  # frames saved in this group (0: an unsaved tail)
    steps: int  # full steps of dt per frame
    rest: float  # length of one final short step per frame (0: none)


def schedule(t0: float, t_end: float, dt: float, save: Sequence[float]) -> tuple[_Group, ...]:
    """Split [t0, t_end] into full steps of dt, shortening the step before each save time."""
    groups: list[_Group] = []
    prev = t0
    targets = [(t, True) for t in save]
    if not save or save[-1] < t_end:
        targets.append((t_end, False))
    for t, saved in targets:
        span = t - prev
        n = int(np.floor(span / dt * (1 + 1e-12)))
        rest = span - n * dt
        if rest >= dt * (1 - 1e-9):  # a whole step lost to the rounding of t (large t / dt): count it
            n, rest = n + 1, 0.0
        if rest <= 1e-9 * dt:
            rest = 0.0
        g = _Group(1 if saved else 0, n, rest)
        if groups and saved and groups[-1].frames and groups[-1][1:] == g[1:]:
            groups[-1] = groups[-1]._replace(frames=groups[-1].frames + 1)
        elif g.frames or n or rest:
            groups.append(g)
        prev = t
    return tuple(groups)


def _save_times(t0: float, t_end: float, save_every: Any, save_at: Any) -> list[float]:
    if save_every is not None and save_at is not None:
        raise ValueError("give save_every= or save_at=, not both")
    if save_every is not None:
        every = concrete_float(save_every)
        if every is None or not np.isfinite(every) or every <= 0:
            raise ValueError(f"save_every must be a concrete number > 0 (s), got {save_every!r}")
        n = int(np.floor((t_end - t0) / every * (1 + 1e-12)))
        times = [t0 + i * every for i in range(n + 1)]
        if t_end - times[-1] > 1e-9 * every:
            times.append(t_end)
        return times
    if save_at is not None:
        try:
            times = np.asarray(save_at, dtype=np.float64).reshape(-1)
        except (TypeError, jax.errors.TracerArrayConversionError):
            raise ValueError("save_at must be concrete numbers (a list or NumPy array of times in s), "
                             "not traced values") from None
        if not np.all(np.isfinite(times)):
            raise ValueError("save_at holds NaN or infinite times")
        if np.any(np.diff(times) < 0):
            raise ValueError("save_at must be sorted in increasing order")
        if times.size and (times[0] < t0 - 1e-9 * max(1.0, abs(t0)) or times[-1] > t_end * (1 + 1e-12) + 1e-12):
            raise ValueError(f"save_at times must lie in [t0, t_end] = [{t0}, {t_end}] s, got "
                             f"[{times[0]}, {times[-1]}]")
        return [float(max(t, t0)) for t in times]
    return []


def _repeat(step: Callable[[Any], Any], carry: Any, n: int, checkpoint: str | None) -> Any:
    """Apply ``step`` n times with a scan; checkpointing trades recompute for memory."""
    if n == 0:
        return carry

    def body(c: Any, _: None) -> tuple[Any, None]:
        return step(c), None

    if checkpoint == "step":
        body = jax.checkpoint(body)
    if checkpoint == "sqrt" and n > 3:
        inner = max(1, int(np.sqrt(n)))
        outer, tail = divmod(n, inner)

        @jax.checkpoint
        def chunk(c: Any, _: None) -> tuple[Any, None]:
            return lax.scan(body, c, None, length=inner)[0], None

        carry = lax.scan(chunk, carry, None, length=outer)[0]
        return lax.scan(body, carry, None, length=tail)[0] if tail else carry
    return lax.scan(body, carry, None, length=n)[0]


def partition(tree: Any) -> tuple[list, tuple]:
    """Split a pytree callable into its array leaves (traced arguments) and the rest (static, hashable).

    A behaviour passed as ``jax.tree_util.Partial(f, params)`` then has its
    parameters traced: new values, or values under ``jax.grad``, do not recompile.
    """
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    is_array = [isinstance(x, (jax.Array, np.ndarray, np.generic, float, int, complex)) and not isinstance(x, bool)
                for x in leaves]
    arrays = [x if a else None for x, a in zip(leaves, is_array)]
    static = tuple(None if a else x for x, a in zip(leaves, is_array))
    return arrays, (treedef, static)


def combine(arrays: list, static: tuple) -> Any:
    """Inverse of :func:`partition`."""
    treedef, rest = static
    return jax.tree_util.tree_unflatten(treedef, [a if s is None else s for a, s in zip(arrays, rest)])


def _layout(model: Model, sharding: Any) -> Layout | None:
    """Shardings of one field for line work along the split axis (see :func:`jaxcell.operators.along_axis`)."""
    if sharding is None or model.grid.ndim < 2:
        return None
    name = sharding.spec[1]
    return Layout(NamedSharding(sharding.mesh, PartitionSpec(name)),
                  NamedSharding(sharding.mesh, PartitionSpec(None, name)))


@functools.partial(jax.jit, static_argnames=("dt", "groups", "plan", "checkpoint", "save_cells", "sharding",
                                             "behaviour_static", "seed"))
def run_steps(model: Model, fields: jax.Array, cells: Cells | None, totals: dict, t: jax.Array, n: jax.Array,
              matrix: jax.Array | None = None, compartments: dict | None = None, *,
              dt: float, groups: tuple[_Group, ...], plan: tuple, checkpoint: str | None, save_cells: bool,
              sharding: Any = None, behaviour_arrays: Any = None, behaviour_static: Any = None,
              seed: int = 0, order: jax.Array | None = None) -> tuple[Any, jax.Array, Any]:
    """The compiled time loop of :func:`simulate`: ``groups`` of steps, frames saved between them.

    ``order``: the cells' voxel order (:func:`jaxcell.cells.voxel_order`) when
    :func:`sorts_cells` and it was computed outside (else XLA sorts here).

    Returns ``((fields, cells, totals, t, n, matrix, compartments), saved (fields, matrix, compartments)
    (T, ...), saved cells or None)``.
    """
    dtype = fields.dtype
    if sharding is not None:
        fields = lax.with_sharding_constraint(fields, sharding)
    layout = _layout(model, sharding)
    behaviour = None if behaviour_static is None else combine(behaviour_arrays, behaviour_static)
    step_plan = stages.plan(model, cells, behaviour)
    if sorts_cells(model, cells, behaviour):
        # scatters and gathers of cells in voxel order touch memory in order
        # (2-6x faster at 1e6 cells); sorted once per call, undone at the end.
        if order is None:  # not given by simulate (traced positions, a sharded run): XLA sorts
            order = jnp.argsort(model.grid.voxel_index(cells.position)).astype(jnp.int32)
        cells = _take(cells, order)
    else:
        order = None
    coupling, exchange = stages.loop_constants(model, cells, step_plan)

    def make(step_dt: float) -> Callable[[Any], Any]:
        h = jnp.asarray(step_dt, dtype)
        setups = tuple(model.scheme.init(model, model.params(i, dtype), h, plan[i])
                       for i in range(model.n_substrates))
        ctx = stages.Context(model, h, plan, setups, layout, coupling, exchange, seed, sharding)
        return stages.make_step(ctx, step_plan)

    full = make(dt)
    carry = (fields, cells, totals, t, n, matrix, compartments)
    frames, frame_cells = [], []
    for g in groups:
        rest = make(g.rest) if g.rest else None

        def interval(c: Any, g: _Group = g, rest: Any = rest) -> Any:
            c = _repeat(full, c, g.steps, checkpoint)
            return rest(c) if rest is not None else c

        if g.frames:
            def frame(c: Any, _: None, interval: Any = interval) -> tuple[Any, Any]:
                c = interval(c)
                return c, ((c[0], c[5], c[6]), c[1] if save_cells else None)

            carry, (f, cl) = lax.scan(frame, carry, None, length=g.frames)
            frames.append(f)
            frame_cells.append(cl)
        else:
            carry = interval(carry)
    shape = (0,) + fields.shape
    saved = jnp.concatenate([f for f, _, _ in frames]) if frames else jnp.zeros(shape, dtype)
    saved_matrix = saved_comps = None
    if matrix is not None:
        saved_matrix = jnp.concatenate([m for _, m, _ in frames]) if frames else jnp.zeros(shape, dtype)
    if compartments is not None:
        saved_comps = {k: (jnp.concatenate([c[k] for _, _, c in frames]) if frames
                           else jnp.zeros((0, fields.shape[0]), dtype)) for k in compartments}
    saved = (saved, saved_matrix, saved_comps)
    saved_cells = None
    if save_cells and frame_cells and cells is not None:
        saved_cells = jax.tree_util.tree_map(lambda *x: jnp.concatenate(x), *frame_cells)
    if order is not None:
        inverse = jnp.zeros_like(order).at[order].set(jnp.arange(order.shape[0], dtype=order.dtype))
        carry = (carry[0], _take(carry[1], inverse), *carry[2:])
        if saved_cells is not None:
            saved_cells = _take(saved_cells, inverse, axis=1)
    return carry, saved, saved_cells


def sorts_cells(model: Model, cells: Cells | None, behaviour: Any) -> bool:
    """Whether a call works on its cells in voxel order: from :data:`SORT_MIN` cells, when some stage
    works on them every step. Without per-step cell work they are deposited once per call and the sort
    would cost more than it saves; a behaviour sees cells in their own order (division fills free slots
    in index order)."""
    return (cells is not None and behaviour is None and cells.n >= SORT_MIN
            and len(stages.plan(model, cells).stages) > 1)


def _take(cells: Cells, order: jax.Array, axis: int = 0) -> Cells:
    """Cells reordered along their cell axis."""
    return jax.tree_util.tree_map(lambda x: jnp.take(x, order, axis=axis), cells)


def simulate(model: Model, state: State, t_end: float, dt: float | None, *, save_every: float | None = None,
             save_at: Sequence[float] | np.ndarray | None = None, checkpoint: str | None = None,
             save_cells: bool = False, behaviour: Callable[..., Cells] | None = None,
             seed: int = 0, rtol: float | None = None) -> tuple[State, Trajectory]:
    """Advance ``state`` to the absolute time ``t_end`` (s) in steps of ``dt`` (s).

    ``dt=None`` with ``rtol=``: jaxcell chooses the step so that every saved field
    is within ``rtol`` (relative, where the field is above 1e-4 of its maximum) of
    the exact-in-time solution of the same grid (:mod:`jaxcell.steps`: one step
    per save interval for a scheme exact in time, else step doubling over the
    whole run, on concrete values, before compiling; not with a behaviour). The
    chosen step is then a fixed ``dt``: jit-compiled runs, ``jax.grad`` and the
    trajectory are those of that ``dt`` (:func:`choose_step` gives it; under
    ``jax.jit``/``jax.vmap`` call it outside and pass ``dt``).

    The last step before each save time and before ``t_end`` is shortened to land
    on it exactly. ``save_every`` saves the start and every multiple after it (and
    ``t_end``); ``save_at`` saves at the given concrete times. ``t_end``, ``dt`` and
    save times must be concrete numbers; model parameters may be traced (jit,
    grad, vmap reach them and changing them does not recompile).

    Args:
        checkpoint: None (store every step for reverse mode), ``"step"``
            (recompute inside each step) or ``"sqrt"`` (√n recursive chunks) —
            memory for reverse-mode gradients through long runs.
        save_cells: also save cell states per frame (``traj.cells``).
        behaviour: ``f(cells, env, t) -> cells`` run at the end of every step inside
            the compiled loop (``t`` the time at the end of the step, ``env`` a
            :class:`jaxcell.step.Env`: ``concentration`` (N, S), ``gradient``
            (N, S, ndim) per µm, ``key``, ``dt``, ``names``). It may change
            positions, rates, ``alive``, ``type`` and receptors; coupling and
            exchange follow in the next step. Positions outside the domain are
            clipped to it. A function, or ``jax.tree_util.Partial(f, params)``
            whose array leaves are traced (gradients reach them; new values do
            not recompile). A behaviour object with a ``prepare(cells, model)
            -> cells`` method has it called once, before the loop (``jc.rules``
            records the cells' base values there).
        seed: the behaviour's random keys are ``fold_in(key(seed), n)`` with ``n``
            the steps taken since t = 0 (the state carries it), so repeated calls
            continue one sequence.

    Returns:
        ``(state, trajectory)``.
    """
    if not isinstance(model, Model) or not isinstance(state, State):
        raise ValueError("simulate(model, state, ...) needs a jc.Model and the jc.State from model.init()")
    t0 = state_time(state)
    if dt is None:
        if rtol is None:
            raise ValueError("give dt (s), or dt=None with rtol= (the relative accuracy jaxcell then chooses the "
                             "step for)")
        if behaviour is not None:
            raise ValueError("dt=None cannot choose a step for a run with a behaviour (its random events differ "
                             "between step sizes, so runs at two steps do not compare); give dt")
        dt = choose_step(model, state, t_end, rtol, save_every=save_every, save_at=save_at)
    elif rtol is not None:
        raise ValueError(f"rtol= applies with dt=None (jaxcell chooses the step); with dt = {dt!r} given, drop rtol")
    for name, v in (("t_end", t_end), ("dt", dt)):
        if isinstance(v, (str, bytes)) or (isinstance(v, np.ndarray) and v.dtype.kind not in "iuf"):
            raise ValueError(f"{name} must be a number of seconds, got {v!r}")
    dt_f, t_end_f = concrete_float(dt), concrete_float(t_end)
    if dt_f is None or t_end_f is None:
        raise ValueError("t_end and dt must be concrete numbers (they fix the number of steps)")
    if not np.isfinite(dt_f) or dt_f <= 0:
        raise ValueError(f"dt must be a finite number > 0 (s), got {dt!r}")
    if not np.isfinite(t_end_f) or t_end_f < t0:
        raise ValueError(f"t_end must be a finite time >= the state's time {t0} s, got {t_end!r}")
    if checkpoint not in CHECKPOINTS:
        raise ValueError(f"checkpoint must be one of {CHECKPOINTS}, got {checkpoint!r}")
    expected = (model.n_substrates,) + model.grid.shape
    if tuple(state.fields.shape) != expected:
        raise ValueError(f"state.fields has shape {tuple(state.fields.shape)} but the model expects {expected}")
    check_model_values(model)
    save = _save_times(t0, t_end_f, save_every, save_at)
    groups = schedule(t0, t_end_f, dt_f, save)
    if behaviour is not None and (state.cells is None or not callable(behaviour)):
        raise ValueError("behaviour= needs a callable f(cells, env, t) -> cells and a state with cells")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an int, got {seed!r}")
    if behaviour is not None and callable(getattr(behaviour, "prepare", None)):
        # a behaviour object may record what it needs in the cells first (jc.Rules: base values)
        state = replace(state, cells=behaviour.prepare(state.cells, model))
    arrays, static = partition(behaviour) if behaviour is not None else (None, None)
    plan = model.scheme.plan(model, dt_f)
    model.scheme.before_run(model, state.cells, dt_f)
    if model.has_matrix != (state.matrix is not None):
        raise ValueError("the state does not match the model's extracellular matrix: build it with model.init()")
    if {cp.name for cp in model.compartments} != set(state.compartments or {}):
        raise ValueError("the state does not match the model's compartments: build it with model.init()")
    totals_in = _with_flows(state.totals, model.flows)
    # the voxel order is computed here when it can be (NumPy, concrete positions), so that the compiled
    # program has no host callback (such a program is not kept in the persistent compilation cache)
    order = None
    if state.sharding is None and sorts_cells(model, state.cells, behaviour):
        order = voxel_order(model.grid, state.cells.position)
    (fields, cells, totals, _, steps, matrix, comps), saved, saved_cells = run_steps(
        model, state.fields, state.cells, totals_in, state.t, state.steps, state.matrix, state.compartments,
        dt=dt_f, groups=groups, plan=plan,
        checkpoint=checkpoint, save_cells=save_cells, sharding=state.sharding, behaviour_arrays=arrays,
        behaviour_static=static, seed=int(seed), order=order)
    saved, saved_matrix, saved_comps = saved
    model.scheme.after_run(model, fields, saved, dt_f)
    if behaviour is not None:
        _check_finite_cells(cells, fields, t_end_f)
    new = replace(state, fields=fields, cells=cells, totals=totals, steps=steps, matrix=matrix, compartments=comps,
                  compartment_volumes=model.compartment_volumes(state.fields.dtype),
                  t=jnp.asarray(t_end_f, state.t.dtype), t_static=t_end_f)
    times = jnp.asarray(np.asarray(save, dtype=np.float64), state.fields.dtype)
    return new, Trajectory(times, saved, saved_cells, saved_matrix, saved_comps)


def choose_step(model: Model, state: State, t_end: float, rtol: float, *, save_every: float | None = None,
                save_at: Sequence[float] | np.ndarray | None = None) -> float:
    """The step (s) ``simulate(..., dt=None, rtol=rtol)`` takes for this run (:mod:`jaxcell.steps`).

    Runs the model on concrete values (the values behind ``jax.grad``'s tracers;
    a ValueError under ``jax.jit`` or ``jax.vmap``); the saves are those of the run
    (``t_end`` alone when none).
    """
    r = concrete_float(rtol)
    if r is None or not (np.isfinite(r) and 0 < r < 1):
        raise ValueError(f"rtol must be a number in (0, 1), got {rtol!r}")
    t0 = state_time(state)
    t_end_f = concrete_float(t_end)
    if t_end_f is None or not np.isfinite(t_end_f) or t_end_f <= t0:
        raise ValueError(f"t_end must be a concrete time after the state's time {t0} s, got {t_end!r}")
    save = [t for t in _save_times(t0, t_end_f, save_every, save_at) if t > t0] or [t_end_f]
    points = sorted({t0, *save, t_end_f})
    gaps = [b - a for a, b in zip(points[:-1], points[1:]) if b - a > 0]
    if not model.scheme.dt_sets_accuracy:
        raise ValueError(f"dt=None cannot choose a step for solver={model.scheme.name!r}: its error in time comes "
                         "from its stability sub-step, which dt does not change; use solver='implicit' or "
                         "'spectral' with dt=None, or give dt")
    model_c, state_c = steps.concrete((model, state))
    if model.scheme.exact_in_time(model_c, state_c.cells):
        return float(max(gaps))

    def run(d: float) -> np.ndarray:
        return np.asarray(simulate(model_c, state_c, t_end_f, d, save_at=save)[1].fields)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the probe's large steps may warn (e.g. overshoot); the chosen one will not
        return steps.choose(run, gaps, steps.time_order(model_c, state_c.cells), r, model.scheme.name)


def _with_flows(totals: dict, flows: Sequence[str]) -> dict:
    """``totals`` with a zero total (and compensation) for each flow of ``flows`` it lacks: a state built for
    a model that could not move that flow."""
    missing = [k for k in flows if k not in totals]
    if not missing:
        return totals
    zero = jnp.zeros_like(totals["initial"])
    return {**totals, **{k: zero for k in missing},
            "compensation": {**totals["compensation"], **{k: zero for k in missing}}}


def _check_finite_cells(cells: Cells, fields: jax.Array, t_end: float) -> None:
    """After a run with a behaviour: refuse NaN or inf in any cell field or in the fields, naming it
    (checked on the host once per call, since errors cannot be raised inside the compiled loop; skipped
    under tracing). A NaN rate can pass into the fields and out of the cells again within one call.

    One reduction per array on the device and one small transfer; the cells come to the host only to
    name the first bad one.
    """
    paths = jax.tree_util.tree_flatten_with_path(cells)[0]
    if not is_concrete(fields) or not all(is_concrete(x) for _, x in paths):
        return
    leaves = [(p, x) for p, x in paths if jnp.issubdtype(jnp.result_type(x), jnp.floating)]
    ok = jax.device_get([jnp.all(jnp.isfinite(x)) for _, x in leaves] + [jnp.all(jnp.isfinite(fields))])
    for (path, x), good in zip(leaves, ok):
        if not good:  # named first: the cell field says what went wrong
            rows = np.unique(np.nonzero(~np.isfinite(np.asarray(x)))[0]) if jnp.ndim(x) else np.zeros(1, int)
            raise ValueError(f"the behaviour left NaN or inf in cells{jax.tree_util.keystr(path)} of {rows.size} "
                             f"cell(s) (first: index {int(rows[0])}) by t = {t_end:g} s; check what it computes "
                             "(e.g. a division by a zero gradient norm or a rate overflow)")
    if not ok[-1]:
        raise ValueError(f"the fields hold NaN or inf by t = {t_end:g} s in a run with a behaviour: a rate it "
                         "set was NaN or infinite at some step; check what it computes")


def budget(state: State) -> dict[str, jax.Array]:
    """Where every molecule went, per substrate: a dict of ``(S,)`` amounts.

    Keys: initial, secreted, produced (by the tissue), inflow, outflow, fields,
    bound (on cells' receptors), matrix (on the extracellular matrix now),
    compartments (in the well-mixed compartments now), internalised, uptake,
    decayed, matrix_degraded, cleared (by the compartments' clearance) and
    residual = initial + secreted + produced + inflow − outflow − fields − bound
    − matrix − compartments − internalised − uptake − decayed − matrix_degraded
    − cleared (round-off when the books close). The flows are accumulated step
    by step from the rates the scheme used.
    """
    if not isinstance(state, State):
        raise ValueError(f"budget(state) needs the jc.State from model.init / jc.simulate, got "
                         f"{type(state).__name__}")
    tot = state.totals
    s = state.fields.shape[0]
    vol = state.voxel_volume
    fields = jnp.sum(state.fields.reshape(s, -1), axis=1) * vol
    zero = jnp.zeros((s,), state.fields.dtype)
    bound = zero
    if state.cells is not None and state.cells.receptors is not None:
        bound = bound_ligand(state.cells)
    on_matrix = zero if state.matrix is None else jnp.sum(state.matrix.reshape(s, -1), axis=1) * vol
    pools = zero
    for name, c in (state.compartments or {}).items():
        pools = pools + c * state.compartment_volumes[name]  # amount = concentration × volume
    flow = {k: tot.get(k, zero) for k in BUDGET_FLOWS}  # a flow the model cannot move is not carried: 0
    out = {"initial": tot["initial"], "secreted": flow["secreted"], "produced": flow["produced"],
           "inflow": flow["inflow"], "outflow": flow["outflow"], "fields": fields, "bound": bound,
           "matrix": on_matrix, "compartments": pools, "internalised": flow["internalised"],
           "uptake": flow["uptake"], "decayed": flow["decayed"], "matrix_degraded": flow["matrix_degraded"],
           "cleared": flow["cleared"]}
    out["residual"] = (out["initial"] + out["secreted"] + out["produced"] + out["inflow"] - out["outflow"]
                       - out["fields"] - out["bound"] - out["matrix"] - out["compartments"] - out["internalised"]
                       - out["uptake"] - out["decayed"] - out["matrix_degraded"] - out["cleared"])
    return out

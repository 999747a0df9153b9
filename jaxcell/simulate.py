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

from jaxcell._node import concrete_float, is_concrete, node, replace
from jaxcell.binding import binding_step
from jaxcell.cells import Cells, coupling_weights, deposit, gather
from jaxcell.diffusion import (
    Exchange,
    Layout,
    _split,
    douglas_setup,
    douglas_step,
    ftcs_step,
    lod_setup,
    lod_step,
    spectral_step,
    substeps,
)
from jaxcell.model import BUDGET_FLOWS, Model, State, check_model_values, state_time

CHECKPOINTS = (None, "step", "sqrt")
SORT_MIN = 65536  # cell count from which simulate works on cells sorted by voxel


@node
class Trajectory:
    """Saved frames: ``times`` (T,) s, ``fields`` (T, S, *grid.shape), ``cells`` (per-frame
    :class:`Cells` with a leading T axis, or None unless ``save_cells=True``)."""

    times: jax.Array
    fields: jax.Array
    cells: Cells | None


class _Group(NamedTuple):
    frames: int  # frames saved in this group (0: an unsaved tail)
    steps: int  # full steps of dt per frame
    rest: float  # length of one final short step per frame (0: none)


def _schedule(t0: float, t_end: float, dt: float, save: Sequence[float]) -> tuple[_Group, ...]:
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


EXPLICIT_SUBSTEPS_WARN = 1000  # sub-steps per step beyond which a unit slip is more likely than intent


def _explicit_substeps(model: Model, dt: float) -> tuple[int, ...]:
    """FTCS sub-steps per substrate, from ``max_diffusion`` when given, else from a concrete D.

    A bound, when given, is always used, so that a run gives the same numbers
    eagerly and under jit/grad (where D is traced). Decay does not limit the
    step (it is implicit in every sub-step); ``max_decay``, if given, is checked.
    """
    out = []
    for s in model.substrates:
        for what, val, bound, unit in (("diffusion", s.diffusion, model.max_diffusion, "µm²/s"),
                                        ("decay", s.decay, model.max_decay, "1/s")):
            v = concrete_float(val)
            if bound is not None and v is not None and v > bound:
                raise ValueError(f"Substrate {s.name!r} {what} {v} {unit} exceeds the explicit solver's bound "
                                 f"max_{what} = {bound}; raise the bound")
        d = model.max_diffusion if model.max_diffusion is not None else concrete_float(s.diffusion)
        if d is None:
            raise ValueError("solver='explicit' with a traced diffusion needs a static bound: "
                             "Model(..., max_diffusion=<largest value in µm²/s>), or use solver='implicit'")
        n = substeps(model.grid, d, dt)
        if n > EXPLICIT_SUBSTEPS_WARN:
            warnings.warn(f"solver='explicit' takes {n} FTCS sub-steps per step for Substrate {s.name!r} "
                          f"(D = {d:g} µm²/s, spacing {model.grid.spacing} µm, dt = {dt:g} s): check that D is in "
                          "µm²/s and the spacing in µm, or use solver='implicit'", RuntimeWarning, stacklevel=3)
        out.append(n)
    return tuple(out)


def _check_bounds(name: str, D: Any, k: Any, max_d: float | None, max_k: float | None) -> None:
    """Host-side check of traced D, k against the static bounds (the step count assumed them)."""
    for what, v, bound in (("diffusion", D, max_d), ("decay", k, max_k)):
        if bound is not None and np.any(np.asarray(v) > bound * (1 + 1e-9)):
            raise ValueError(f"Substrate {name!r} {what} {np.max(np.asarray(v))} exceeds max_{what} = {bound}: "
                             "the explicit step would be unstable; raise the bound")


SPLIT_UPTAKE_MAX = 0.05  # dt·(uptake/voxel volume) above which split cell uptake errs by more than ~1 %


def _warn_if_split_uptake(model: Model, cells: Cells | None, dt: float) -> None:
    """Warn when the spectral solver's split cell exchange will be inaccurate at this dt.

    Spectral transport is exact in time, but cell uptake acts in half-steps
    around it. Measured (a 10 µm voxel, D = 100 µm²/s, one cell): the
    concentration at the cell is 1 % low at dt·uptake/V = 0.05, 7 % at 0.2 and
    37 % at 1. Checked on the concrete cells at the start of a call (responses
    can change uptake later); skipped under tracing.
    """
    if model.solver != "spectral" or cells is None:
        return
    rate = cells.uptake + cells.saturation_rate
    if not (is_concrete(rate) and is_concrete(cells.alive)):
        return
    alive = np.asarray(cells.alive)
    worst = float(np.max(np.asarray(rate)[alive], initial=0.0)) / model.grid.voxel_volume * dt
    if worst > SPLIT_UPTAKE_MAX:
        warnings.warn(f"solver='spectral' splits cell uptake from transport: dt·uptake/voxel volume = {worst:.3g} "
                      f"(> {SPLIT_UPTAKE_MAX}) makes concentrations at uptaking cells inaccurate (~7 % low at "
                      "0.2, ~40 % at 1); use a smaller dt or solver='implicit' (uptake inside the implicit "
                      "operator) or 'explicit'", RuntimeWarning, stacklevel=3)


def _warn_if_negative(model: Model, fields: jax.Array, saved: jax.Array) -> None:
    """Warn when an implicit (ADI) run went below zero; it is stable for any dt but not monotone.

    Measured on a unit pulse: no negative values up to dt·D·Σ1/h² = 1 in 1D-3D,
    undershoots of 1e-3 to 1e-1 of the peak from 2. Checked once per call on the
    results (a reduction, outside the time loop); skipped under tracing.
    """
    if not (is_concrete(fields) and is_concrete(saved)):
        return
    low = min(float(jnp.min(fields)), float(jnp.min(saved)) if saved.size else 0.0)
    high = max(float(jnp.max(jnp.abs(fields))), float(jnp.max(jnp.abs(saved))) if saved.size else 0.0)
    if low < -1e-6 * high:
        warnings.warn(f"solver='implicit' produced concentrations down to {low:.3g} (peak {high:.3g}): the ADI step "
                      "is stable but can undershoot near sharp sources when dt·D·Σ1/h² > 1; use a smaller dt, "
                      "solver='lod' (monotone, first order) or jc.steady_state", RuntimeWarning, stacklevel=3)


def _exchange(model: Model, cells: Cells, idx: jax.Array, w: jax.Array) -> list[Exchange]:
    vol = model.grid.voxel_volume
    clear = deposit(model.grid, idx, w, cells.uptake + cells.saturation_rate) / vol
    sat = deposit(model.grid, idx, w, cells.saturation_rate * cells.saturation) / vol
    export = deposit(model.grid, idx, w, cells.secretion) / vol
    return [Exchange(clear[i], sat[i], export[i]) for i in range(model.n_substrates)]


def _make_step(model: Model, dt: jax.Array, n_sub: tuple[int, ...], idx: Any, w: Any,
               fixed_exchange: list[Exchange] | None, sharding: Any = None) -> Callable[[Any], Any]:
    """A pure step (fields, cells, totals) -> same, for a step of length dt."""
    grid, dtype = model.grid, dt.dtype
    params = [model.params(i, dtype) for i in range(model.n_substrates)]
    layout = None
    if sharding is not None and grid.ndim > 1:
        name = sharding.spec[1]
        layout = Layout(NamedSharding(sharding.mesh, PartitionSpec(name)),
                        NamedSharding(sharding.mesh, PartitionSpec(None, name)))
    if model.solver == "implicit":
        setups = [douglas_setup(grid, p, dt, model.theta) for p in params]
    elif model.solver == "lod":
        setups = [lod_setup(grid, p, dt) for p in params]
    else:
        setups = [None] * len(params)

    def step(carry: tuple[jax.Array, Cells | None, dict]) -> tuple[jax.Array, Cells | None, dict]:
        fields, cells, totals = carry
        ex: list[Any] = [None] * model.n_substrates
        if cells is not None:
            if model.responses:
                local = gather(grid, idx, w, fields)
                for r in model.responses:
                    cells = r.apply(cells, model.names, local)
                ex = _exchange(model, cells, idx, w)
            else:
                ex = fixed_exchange
        new, amounts = [], []
        for i, p in enumerate(params):
            c = fields[i]
            if model.solver == "implicit":
                c, a = douglas_step(grid, p, setups[i], c, ex[i], dt, model.theta, layout)
            elif model.solver == "lod":
                c, a = lod_step(grid, p, setups[i], c, ex[i], dt, layout)
            elif model.solver == "explicit":
                c, a = ftcs_step(grid, p, c, ex[i], dt, n_sub[i])
            else:
                c, a = spectral_step(grid, p, c, ex[i], dt, layout)
            new.append(c)
            amounts.append(a)
        fields = jnp.stack(new)
        flows = {k: jnp.stack([getattr(a, k) for a in amounts]) for k in amounts[0]._fields}
        flows["internalised"] = jnp.zeros_like(flows["decayed"])
        if cells is not None and cells.receptors is not None:
            fields, cells, flows["internalised"] = binding_step(grid, fields, cells, idx, w, dt)
            if model.dirichlet_mask is not None:
                hold = model.dirichlet_value.astype(dtype)
                diff = jnp.where(model.dirichlet_mask, hold - fields, 0) * grid.voxel_volume
                inflow, outflow = jax.vmap(_split)(diff.reshape(diff.shape[0], -1))
                flows["inflow"] = flows["inflow"] + inflow
                flows["outflow"] = flows["outflow"] + outflow
                fields = jnp.where(model.dirichlet_mask, hold, fields)
        totals = {**totals, **{k: totals[k] + flows[k] for k in BUDGET_FLOWS}}
        if sharding is not None:
            # keeps the split through the loop; XLA pads an axis that does not divide
            fields = lax.with_sharding_constraint(fields, sharding)
        return fields, cells, totals

    return step


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


@functools.partial(jax.jit, static_argnames=("dt", "groups", "n_sub", "checkpoint", "save_cells", "sharding"))
def _run(model: Model, fields: jax.Array, cells: Cells | None, totals: dict, *, dt: float,
         groups: tuple[_Group, ...], n_sub: tuple[int, ...], checkpoint: str | None,
         save_cells: bool, sharding: Any = None) -> tuple[Any, jax.Array, Any]:
    dtype = fields.dtype
    if sharding is not None:
        fields = lax.with_sharding_constraint(fields, sharding)
    idx = w = fixed = order = None
    per_step_cells = cells is not None and (bool(model.responses) or cells.receptors is not None)
    if per_step_cells and cells.n >= SORT_MIN:
        # scatters and gathers of cells in voxel order touch memory in order
        # (2-6x faster at 1e6 cells); sorted once per call, undone at the end.
        # Without responses or receptors the cells are deposited once per call,
        # and the sort would cost more than it saves.
        order = jnp.argsort(model.grid.voxel_index(cells.position))
        cells = _take(cells, order)
    if cells is not None:
        idx, w = coupling_weights(model.grid, cells.position, cells.alive, model.coupling)
        if not model.responses:
            fixed = _exchange(model, cells, idx, w)
    if model.solver == "explicit":
        for sub in model.substrates:
            if not (is_concrete(sub.diffusion) and is_concrete(sub.decay)):
                jax.debug.callback(functools.partial(_check_bounds, sub.name, max_d=model.max_diffusion,
                                                     max_k=model.max_decay), sub.diffusion, sub.decay)
    full = _make_step(model, jnp.asarray(dt, dtype), n_sub, idx, w, fixed, sharding)
    carry = (fields, cells, totals)
    frames, frame_cells = [], []
    for g in groups:
        rest = _make_step(model, jnp.asarray(g.rest, dtype), n_sub, idx, w, fixed, sharding) if g.rest else None

        def interval(c: Any, g: _Group = g, rest: Any = rest) -> Any:
            c = _repeat(full, c, g.steps, checkpoint)
            return rest(c) if rest is not None else c

        if g.frames:
            def frame(c: Any, _: None, interval: Any = interval) -> tuple[Any, Any]:
                c = interval(c)
                return c, (c[0], c[1] if save_cells else None)

            carry, (f, cl) = lax.scan(frame, carry, None, length=g.frames)
            frames.append(f)
            frame_cells.append(cl)
        else:
            carry = interval(carry)
    shape = (0,) + fields.shape
    saved = jnp.concatenate(frames) if frames else jnp.zeros(shape, dtype)
    saved_cells = None
    if save_cells and frame_cells and cells is not None:
        saved_cells = jax.tree_util.tree_map(lambda *x: jnp.concatenate(x), *frame_cells)
    if order is not None:
        inverse = jnp.zeros_like(order).at[order].set(jnp.arange(order.shape[0], dtype=order.dtype))
        carry = (carry[0], _take(carry[1], inverse), carry[2])
        if saved_cells is not None:
            saved_cells = _take(saved_cells, inverse, axis=1)
    return carry, saved, saved_cells


def _take(cells: Cells, order: jax.Array, axis: int = 0) -> Cells:
    """Cells reordered along their cell axis."""
    return jax.tree_util.tree_map(lambda x: jnp.take(x, order, axis=axis), cells)


def simulate(model: Model, state: State, t_end: float, dt: float, *, save_every: float | None = None,
             save_at: Sequence[float] | np.ndarray | None = None, checkpoint: str | None = None,
             save_cells: bool = False) -> tuple[State, Trajectory]:
    """Advance ``state`` to the absolute time ``t_end`` (s) in steps of ``dt`` (s).

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

    Returns:
        ``(state, trajectory)``.
    """
    if not isinstance(model, Model) or not isinstance(state, State):
        raise ValueError("simulate(model, state, ...) needs a jc.Model and the jc.State from model.init()")
    t0 = state_time(state)
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
    groups = _schedule(t0, t_end_f, dt_f, save)
    n_sub = _explicit_substeps(model, dt_f) if model.solver == "explicit" else ()
    _warn_if_split_uptake(model, state.cells, dt_f)
    (fields, cells, totals), saved, saved_cells = _run(
        model, state.fields, state.cells, state.totals, dt=dt_f, groups=groups, n_sub=n_sub,
        checkpoint=checkpoint, save_cells=save_cells, sharding=state.sharding)
    if model.solver == "implicit":
        _warn_if_negative(model, fields, saved)
    new = replace(state, fields=fields, cells=cells, totals=totals,
                  t=jnp.asarray(t_end_f, state.t.dtype), t_static=t_end_f)
    times = jnp.asarray(np.asarray(save, dtype=np.float64), state.fields.dtype)
    return new, Trajectory(times, saved, saved_cells)


def budget(state: State) -> dict[str, jax.Array]:
    """Where every molecule went, per substrate: a dict of ``(S,)`` amounts.

    Keys: initial, secreted, inflow, outflow, fields, bound, internalised, uptake,
    decayed and residual = initial + secreted + inflow − outflow − fields − bound
    − internalised − uptake − decayed (round-off when the books close). The flows
    are accumulated step by step from the rates the scheme used.
    """
    if not isinstance(state, State):
        raise ValueError(f"budget(state) needs the jc.State from model.init / jc.simulate, got "
                         f"{type(state).__name__}")
    tot = state.totals
    s = state.fields.shape[0]
    vol = state.voxel_volume
    fields = jnp.sum(state.fields.reshape(s, -1), axis=1) * vol
    bound = jnp.zeros((s,), state.fields.dtype)
    if state.cells is not None and state.cells.receptors is not None:
        bound = jnp.sum(jnp.where(state.cells.alive[:, None], state.cells.receptors.bound, 0), axis=0)
    out = {"initial": tot["initial"], "secreted": tot["secreted"], "inflow": tot["inflow"],
           "outflow": tot["outflow"], "fields": fields, "bound": bound, "internalised": tot["internalised"],
           "uptake": tot["uptake"], "decayed": tot["decayed"]}
    out["residual"] = (out["initial"] + out["secreted"] + out["inflow"] - out["outflow"] - out["fields"]
                       - out["bound"] - out["internalised"] - out["uptake"] - out["decayed"])
    return out

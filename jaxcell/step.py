"""One step of a simulation as named stages with one signature.

A step is a sequence of :class:`Stage` objects, each a pure function
``stage(ctx, data) -> data`` on :class:`StepData` (fields, cells, coupling,
exchange, the amounts moved so far in this step). In order:

    responses → coupling → exchange → transport → matrix → leak → binding → held voxels → behaviour

* ``responses``: :class:`jaxcell.Response` rules set rates from the local signal.
* ``coupling``: voxel indices and weights of the cells (:func:`jaxcell.cells.coupling_weights`).
* ``exchange``: per-voxel secretion/uptake rates (:mod:`jaxcell.exchange`).
* ``transport``: the model's solver advances each substrate (:mod:`jaxcell.solvers`).
* ``matrix``: free ligand binds the extracellular matrix, per voxel (:func:`jaxcell.medium.matrix_step`).
* ``leak``: free ligand exchanged with well-mixed compartments (:func:`jaxcell.body.leak_step`).
* ``binding``: receptor binding, exact at frozen ligand (:mod:`jaxcell.binding`).
* ``held voxels``: held values re-imposed after binding, the difference booked.
* ``behaviour``: the user's ``f(cells, env, t)`` (``jc.simulate(behaviour=)``), at the end of the step.

Each stage says which parts of the cells it ``changes``; :func:`plan` puts the
coupling and exchange stages inside the step exactly when a stage may change
positions, ``alive`` or rates, and otherwise computes them once per call (they
are then loop constants, not carried: reverse-mode memory does not grow).
A new process is one more :class:`Stage` in :func:`plan`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxcell._node import node, replace, static_field
from jaxcell.binding import binding_step
from jaxcell.body import leak_step
from jaxcell.cells import Cells, bound_ligand, coupling_weights, gather
from jaxcell.exchange import Exchange, cell_exchange
from jaxcell.medium import MatrixRates, matrix_step
from jaxcell.model import BUDGET_FLOWS
from jaxcell.operators import Layout, split_signed

# what a stage may change in the cells
POSITION, ALIVE, RATES, RECEPTORS = "position", "alive", "rates", "receptors"
FLOWS = BUDGET_FLOWS


class StepData(NamedTuple):
    """What the stages of one step hand each other.

    fields: ``(S, *grid.shape)``; cells: :class:`Cells` or None; coupling:
    ``(idx, w)`` of the cells or None; exchange: one :class:`Exchange` per
    substrate or None; flows: amounts moved in this step, each ``(S,)``;
    t: time at the end of the step (s); n: steps since t = 0 (this one included);
    matrix: ``(S, *grid.shape)`` ligand on the extracellular matrix, or None;
    compartments: ``{name: (S,)}`` compartment concentrations, or None.
    """

    fields: jax.Array
    cells: Cells | None
    coupling: tuple[jax.Array, jax.Array] | None
    exchange: tuple[Exchange, ...] | None
    flows: dict
    t: jax.Array
    n: jax.Array
    matrix: jax.Array | None = None
    compartments: dict | None = None


class Context(NamedTuple):
    """What stays fixed over a call: the model, the step, the solver's setup, the loop constants."""

    model: Any
    dt: jax.Array
    plan: tuple
    setups: tuple
    layout: Layout | None
    coupling: tuple[jax.Array, jax.Array] | None  # loop constant when no stage moves cells
    exchange: tuple[Exchange, ...] | None  # loop constant when no stage changes rates
    seed: int
    sharding: Any = None  # the fields' sharding (jc.shard), kept through the loop


class Stage(NamedTuple):
    """A named part of the step: ``fn(ctx, data) -> data``; ``changes`` ⊂ {position, alive, rates, receptors}."""

    name: str
    fn: Callable[[Context, StepData], StepData]
    changes: frozenset = frozenset()


@node
class Env:
    """What a behaviour senses at each cell during one step (see :func:`jaxcell.simulate`).

    concentration: ``(N, S)`` amount/µm^ndim (the model's coupling); gradient:
    ``(N, S, ndim)`` per µm (central differences of the voxel field, one-sided
    at a face); key: a PRNG key from the run's seed and the step count; dt: the
    step (s); names: the substrate names.
    """

    concentration: jax.Array
    gradient: jax.Array
    key: jax.Array
    dt: jax.Array
    names: tuple = static_field()


# ---------------------------------------------------------------------------
# Stages


def _responses(ctx: Context, d: StepData) -> StepData:
    local = gather(ctx.model.grid, *d.coupling, d.fields)
    cells = d.cells
    for r in ctx.model.responses:
        cells = r.apply(cells, ctx.model.names, local)
    return d._replace(cells=cells)


def _coupling(ctx: Context, d: StepData) -> StepData:
    m = ctx.model
    return d._replace(coupling=coupling_weights(m.grid, d.cells.position, d.cells.alive, m.coupling))


def _exchange(ctx: Context, d: StepData) -> StepData:
    return d._replace(exchange=tuple(cell_exchange(ctx.model, d.cells, *d.coupling)))


def _transport(ctx: Context, d: StepData) -> StepData:
    model = ctx.model
    scheme = model.scheme
    new, amounts = [], []
    for i in range(model.n_substrates):
        p = model.params(i, ctx.dt.dtype)
        ex = None if d.exchange is None else d.exchange[i]
        c, a = scheme.step(model, p, ctx.setups[i], d.fields[i], ex, ctx.dt, ctx.plan[i], ctx.layout)
        new.append(c)
        amounts.append(a)
    flows = dict(d.flows)
    for k in amounts[0]._fields:
        flows[k] = flows[k] + jnp.stack([getattr(a, k) for a in amounts])
    return d._replace(fields=jnp.stack(new), flows=flows)


def _matrix(ctx: Context, d: StepData) -> StepData:
    m = ctx.model
    dtype = d.fields.dtype
    tail = (1,) * m.grid.ndim

    def per_substrate(what: str) -> jax.Array:
        # (S, 1, ...) numbers, or (S, *grid.shape) when a substrate has a map; a substrate without a
        # matrix gets 0 sites, for which the step below leaves its field unchanged exactly
        vals = [jnp.asarray(0.0 if s.matrix is None else getattr(s.matrix, what), dtype) for s in m.substrates]
        if all(v.ndim == 0 for v in vals):
            return jnp.stack(vals).reshape((-1,) + tail)
        return jnp.stack([jnp.broadcast_to(v, m.grid.shape) for v in vals])

    # all substrates in one elementwise pass over (S, *grid.shape): no per-substrate slices and restacking
    rates = MatrixRates(*(per_substrate(w) for w in MatrixRates._fields))
    L, M, deg = matrix_step(d.fields, d.matrix, rates, ctx.dt)
    held, _ = m.held_voxels(dtype)
    if held is not None:  # held voxels keep their value; their matrix does not evolve
        L, M, deg = (jnp.where(held, x0, x) for x, x0 in ((L, d.fields), (M, d.matrix), (deg, 0.0)))
    degraded = jnp.sum(deg.reshape(deg.shape[0], -1), axis=1) * m.grid.voxel_volume
    flows = {**d.flows, "matrix_degraded": d.flows["matrix_degraded"] + degraded}
    return d._replace(fields=L, matrix=M, flows=flows)


def _leak(ctx: Context, d: StepData) -> StepData:
    m = ctx.model
    dtype = d.fields.dtype
    vol = m.grid.voxel_volume
    fields = list(d.fields)
    held, _ = m.held_voxels(dtype)
    comps, cleared = {}, jnp.zeros(d.fields.shape[:1], dtype)
    for cp in m.compartments:
        V, kc = jnp.asarray(cp.volume, dtype), jnp.asarray(cp.clearance, dtype)
        cb, gone = [], []
        for i, s in enumerate(m.substrates):
            c0 = d.compartments[cp.name][i]
            if s.leak is None or s.leak.compartment != cp.name:  # nothing leaks in: clearance alone
                c1 = c0 / (1 + ctx.dt * kc)
                cb.append(c1)
                gone.append(ctx.dt * kc * V * c1)
                continue
            rate = s.leak.per_voxel(m.grid.shape, dtype)
            if held is not None:  # held voxels keep their value: they do not leak
                rate = jnp.where(held[i], 0, rate)
            fields[i], c1, _, out = leak_step(fields[i], c0, rate, cp, vol, ctx.dt)
            cb.append(c1)
            gone.append(out)
        comps[cp.name] = jnp.stack(cb)
        cleared = cleared + jnp.stack(gone)
    flows = {**d.flows, "cleared": d.flows["cleared"] + cleared}
    return d._replace(fields=jnp.stack(fields), compartments=comps, flows=flows)


def _binding(ctx: Context, d: StepData) -> StepData:
    fields, cells, internal = binding_step(ctx.model.grid, d.fields, d.cells, *d.coupling, ctx.dt)
    return d._replace(fields=fields, cells=cells, flows={**d.flows, "internalised": d.flows["internalised"] + internal})


def _held(ctx: Context, d: StepData) -> StepData:
    m = ctx.model
    held, hold = m.held_voxels(d.fields.dtype)
    diff = jnp.where(held, hold - d.fields, 0) * m.grid.voxel_volume
    inflow, outflow = jax.vmap(split_signed)(diff.reshape(diff.shape[0], -1))
    flows = {**d.flows, "inflow": d.flows["inflow"] + inflow, "outflow": d.flows["outflow"] + outflow}
    return d._replace(fields=jnp.where(held, hold, d.fields), flows=flows)


def field_gradient(fields: jax.Array, spacing: tuple[float, ...]) -> jax.Array:
    """``(S, ndim, *grid.shape)`` per-µm gradient: central differences, one-sided at the faces, 0 on 1-voxel axes."""
    out = []
    for a, h in enumerate(spacing):
        ax = a + 1
        n = fields.shape[ax]
        if n == 1:
            out.append(jnp.zeros_like(fields))
            continue
        d = jnp.diff(fields, axis=ax) / h  # (n-1) one-sided differences
        lo = lax.slice_in_dim(d, 0, 1, axis=ax)
        hi = lax.slice_in_dim(d, n - 2, n - 1, axis=ax)
        mid = (lax.slice_in_dim(d, 0, n - 2, axis=ax) + lax.slice_in_dim(d, 1, n - 1, axis=ax)) / 2
        out.append(jnp.concatenate([lo, mid, hi], axis=ax))
    return jnp.stack(out, axis=1)


def make_env(ctx: Context, d: StepData) -> Env:
    """The :class:`Env` a behaviour sees at the end of step ``d.n``."""
    m = ctx.model
    idx, w = d.coupling
    conc = gather(m.grid, idx, w, d.fields)
    grad = field_gradient(d.fields, m.grid.spacing)  # (S, ndim, *shape)
    s = d.fields.shape[0]
    g = gather(m.grid, idx, w, grad.reshape((s * m.grid.ndim,) + m.grid.shape))
    key = jax.random.fold_in(jax.random.key(ctx.seed), d.n)
    return Env(concentration=conc, gradient=g.reshape(g.shape[0], s, m.grid.ndim), key=key, dt=ctx.dt,
               names=m.names)


def check_behaviour_result(before: Cells, after: Any) -> None:
    """A behaviour must return Cells of the same structure, shapes and dtypes (checked while tracing)."""
    if not isinstance(after, Cells):
        raise ValueError(f"behaviour must return jc.Cells, got {type(after).__name__}")
    lb, tb = jax.tree_util.tree_flatten_with_path(before)
    la, ta = jax.tree_util.tree_flatten_with_path(after)
    if tb != ta:
        raise ValueError("behaviour returned cells of a different structure (receptors added or removed?); "
                         "return dataclasses.replace(cells, ...) of the cells it was given")
    for (path, x), (_, y) in zip(lb, la):
        if jnp.shape(x) != jnp.shape(y) or jnp.result_type(x) != jnp.result_type(y):
            name = jax.tree_util.keystr(path)
            raise ValueError(f"behaviour changed cells{name} from shape {jnp.shape(x)} {jnp.result_type(x)} to "
                             f"{jnp.shape(y)} {jnp.result_type(y)}; keep every field's shape and dtype (the "
                             "capacity is fixed: use alive for free slots)")


def behaviour_stage(behaviour: Callable[..., Cells]) -> Stage:
    """The user's ``behaviour(cells, env, t) -> cells`` as the last stage of a step.

    Positions it moves outside the domain are clipped to it (held at the face).
    """

    def fn(ctx: Context, d: StepData) -> StepData:
        env = make_env(ctx, d)
        new = behaviour(d.cells, env, d.t)
        check_behaviour_result(d.cells, new)
        grid = ctx.model.grid
        lo = jnp.asarray(grid.origin, new.position.dtype)
        hi = lo + jnp.asarray(grid.extent, new.position.dtype)
        flows = d.flows
        if new.receptors is not None:
            # ligand bound to cells that die leaves with them: booked as internalised, so
            # the budget closes (division splits it between two live cells: no change)
            held = bound_ligand(d.cells) - bound_ligand(new)
            flows = {**flows, "internalised": flows["internalised"] + held}
        return d._replace(cells=replace(new, position=jnp.clip(new.position, lo, hi)), flows=flows)

    return Stage("behaviour", fn, frozenset({POSITION, ALIVE, RATES, RECEPTORS}))


RESPONSES = Stage("responses", _responses, frozenset({RATES}))
COUPLING = Stage("coupling", _coupling)
EXCHANGE = Stage("exchange", _exchange)
TRANSPORT = Stage("transport", _transport)
MATRIX = Stage("matrix", _matrix)
LEAK = Stage("leak", _leak)
BINDING = Stage("binding", _binding, frozenset({RECEPTORS}))
HELD = Stage("held voxels", _held)


class Plan(NamedTuple):
    """The stages of every step of a call, what is computed once per call instead, and the budget
    flows the stages can move (the others stay 0)."""

    stages: tuple[Stage, ...]
    coupling_once: bool
    exchange_once: bool
    flows: tuple[str, ...] = FLOWS


def plan(model: Any, cells: Cells | None, behaviour: Callable[..., Cells] | None = None) -> Plan:
    """Which stages run in each step (static: fixed before compiling)."""
    medium = ((MATRIX,) if model.has_matrix else ()) + ((LEAK,) if model.compartments else ())
    if cells is None:
        return Plan((TRANSPORT, *medium), False, False, model.flows)
    before = [RESPONSES] if model.responses else []
    after = [behaviour_stage(behaviour)] if behaviour is not None else []
    changed = frozenset().union(*(s.changes for s in before + after))
    per_step_coupling = bool(changed & {POSITION, ALIVE})
    per_step_exchange = bool(changed & {POSITION, ALIVE, RATES})
    stages = list(before)
    # the responses read the local signal through the coupling, so it must exist before them
    if per_step_coupling:
        stages.insert(0, COUPLING)
    if per_step_exchange:
        stages.append(EXCHANGE)
    stages.append(TRANSPORT)
    stages.extend(medium)
    if cells.receptors is not None:
        stages.append(BINDING)
        if model.has_held:
            stages.append(HELD)
    stages.extend(after)
    return Plan(tuple(stages), not per_step_coupling, not per_step_exchange, model.flows)


def loop_constants(model: Any, cells: Cells | None, p: Plan) -> tuple[Any, Any]:
    """Coupling and exchange computed once per call where no stage changes them."""
    if cells is None:
        return None, None
    coupling = coupling_weights(model.grid, cells.position, cells.alive, model.coupling)
    exchange = tuple(cell_exchange(model, cells, *coupling)) if p.exchange_once else None
    return (coupling if p.coupling_once else None), exchange


def add_compensated(totals: dict, flows: dict) -> dict:
    """``totals[k] += flows[k]`` for every flow in ``flows``, with Kahan compensation kept in
    ``totals["compensation"]``; totals of flows not given stay as they are.

    A float32 total that grows by small per-step amounts loses their low bits at
    every addition (measured: 2.2e-4 relative drift of the budget after 36,000
    steps); the compensation carries them, so the totals stay at round-off of
    the sum however many steps are taken.
    """
    comp = totals["compensation"]
    out, new_comp = dict(totals), dict(comp)
    for k in flows:
        y = flows[k] - comp[k]
        s = totals[k] + y
        new_comp[k] = (s - totals[k]) - y
        out[k] = s
    out["compensation"] = new_comp
    return out


def make_step(ctx: Context, p: Plan) -> Callable[[Any], Any]:
    """A pure step ``(fields, cells, totals, t, n, matrix, compartments) -> same`` of length ``ctx.dt``."""

    def step(carry: tuple) -> tuple:
        fields, cells, totals, t, n, matrix, comps = carry
        zero = jnp.zeros(fields.shape[:1], fields.dtype)
        d = StepData(fields, cells, ctx.coupling, ctx.exchange, {k: zero for k in FLOWS},
                     t + ctx.dt.astype(t.dtype), n + 1, matrix, comps)
        for stage in p.stages:
            d = stage.fn(ctx, d)
        # only the flows this model can have: a flow that is always 0 costs nothing then
        totals = add_compensated(totals, {k: d.flows[k] for k in p.flows})
        fields = d.fields
        if ctx.sharding is not None:
            # keeps the split through the loop; XLA pads an axis that does not divide
            fields = lax.with_sharding_constraint(fields, ctx.sharding)
        matrix = d.matrix
        if ctx.sharding is not None and matrix is not None:
            matrix = lax.with_sharding_constraint(matrix, ctx.sharding)
        return fields, d.cells, totals, d.t, d.n, matrix, d.compartments

    return step

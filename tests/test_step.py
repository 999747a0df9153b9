"""The step as named stages (jaxcell/step.py): exchange follows every change of the cells."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcell as jc
from jaxcell import step as stages
from jaxcell._node import replace


def one_voxel(solver):
    grid = jc.Grid((1,), 10.0)
    return jc.Model(grid, [jc.Substrate("s", 1.0)], solver=solver)


@pytest.mark.parametrize("solver", jc.solvers.names()[:4])
def test_secretion_changed_between_steps_is_seen(solver):
    """A behaviour doubles the secretion at t = 50 s: 50·1 + 50·2 = 150 molecules by t = 100 s.

    With no decay every scheme integrates a zero-order source exactly, so the
    amount is exact; stale exchange (computed once per call) would give 100.
    """
    model = one_voxel(solver)
    cells = jc.Cells(np.array([[5.0]]), secretion=1.0)

    def switch(cells, env, t):
        return dataclasses.replace(cells, secretion=jnp.where(t >= 50.0, 2.0, 1.0) * jnp.ones_like(cells.secretion))

    state, _ = jc.simulate(model, model.init(cells), t_end=100.0, dt=1.0, behaviour=switch)
    b = jc.budget(state)
    assert float(b["secreted"][0]) == pytest.approx(150.0, rel=1e-12)
    assert float(b["fields"][0]) == pytest.approx(150.0, rel=1e-12)
    assert int(state.steps) == 100


def test_plan_puts_coupling_and_exchange_in_the_step_only_when_needed():
    model = one_voxel("implicit")
    cells = jc.Cells(np.array([[5.0]]), secretion=1.0)
    names = lambda p: [s.name for s in p.stages]  # noqa: E731
    still = stages.plan(model, cells)
    assert names(still) == ["transport"] and still.coupling_once and still.exchange_once
    moving = stages.plan(model, cells, behaviour=lambda c, e, t: c)
    assert names(moving) == ["coupling", "exchange", "transport", "behaviour"]
    assert not moving.coupling_once and not moving.exchange_once
    resp = jc.Model(model.grid, model.substrates, responses=[jc.Response("s", "s", max=1.0, K=1.0,
                                                                         kind="concentration")])
    p = stages.plan(resp, cells)
    assert names(p) == ["responses", "exchange", "transport"] and p.coupling_once and not p.exchange_once


def test_env_gradient_is_the_analytic_gradient_of_a_linear_field():
    grid = jc.Grid((10, 8), (2.0, 3.0))
    model = jc.Model(grid, [jc.Substrate("s", 0.0)], solver="explicit")
    X, Y = grid.mesh()
    f = 1.0 + 0.3 * X + 0.7 * Y
    pos = np.array([[1.0, 1.5], [9.0, 12.0], [19.0, 23.0]])  # a lower corner, the middle, an upper corner
    # D = 0: the field does not change; the behaviour stores what it sensed in the cells' rates
    cells_out, _ = jc.simulate(model, model.init(jc.Cells(pos), fields=f[None]), t_end=1.0, dt=1.0,
                               behaviour=lambda c, e, t: dataclasses.replace(
                                   c, secretion=e.gradient[:, :, 0], uptake=e.gradient[:, :, 1]))
    np.testing.assert_allclose(np.asarray(cells_out.cells.secretion)[:, 0], 0.3, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(cells_out.cells.uptake)[:, 0], 0.7, rtol=1e-12)


def test_behaviour_that_changes_a_shape_is_refused_naming_the_field():
    model = one_voxel("implicit")
    cells = jc.Cells(np.array([[5.0]]), secretion=1.0)

    def bad(cells, env, t):  # dataclasses.replace re-validates: the constructor names the field
        return dataclasses.replace(cells, secretion=jnp.ones((2, 1)))

    with pytest.raises(ValueError, match=r"Cells.secretion must be .* got \(2, 1\)"):
        jc.simulate(model, model.init(cells), t_end=2.0, dt=1.0, behaviour=bad)

    def worse(cells, env, t):  # a raw copy skips validation: the step's check names the field
        return replace(cells, uptake=cells.uptake.astype(jnp.float32))

    with pytest.raises(ValueError, match=r"behaviour changed cells.uptake from shape \(1, 1\) float64"):
        jc.simulate(model, model.init(cells), t_end=2.0, dt=1.0, behaviour=worse)


def test_positions_moved_outside_are_held_at_the_face():
    model = jc.Model(jc.Grid((5,), 2.0), [jc.Substrate("s", 1.0)])
    cells = jc.Cells(np.array([[5.0]]))
    out, _ = jc.simulate(model, model.init(cells), t_end=3.0, dt=1.0,
                         behaviour=lambda c, e, t: dataclasses.replace(c, position=c.position + 4.0))
    assert float(out.cells.position[0, 0]) == 10.0


def test_divide_fills_free_slots_in_order_and_conserves_receptors():
    rec = jc.Receptors(total=np.array([100.0, 200.0, 0.0, 300.0, 0.0]), kon=1.0, bound=np.array([10.0, 20, 0, 30, 0]))
    cells = jc.Cells(np.array([[50.0, 50.0]] * 5), secretion=1.0, receptors=rec,
                     alive=np.array([True, True, False, True, False]), volume=4 * np.pi / 3 * 8.0)  # radius 2 µm
    cells = cells.conform(jc.Grid((10, 10), 10.0), 1)
    out = jc.divide(cells, np.array([True, False, True, True, True]), jax.random.key(0))
    # mothers 0 and 3 (2 and 4 are free slots, not mothers) take slots 2 and 4
    np.testing.assert_array_equal(np.asarray(out.alive), [True] * 5)
    np.testing.assert_allclose(np.asarray(out.receptors.bound)[:, 0], [5, 20, 5, 15, 15])
    np.testing.assert_allclose(np.asarray(out.receptors.free)[:, 0], [50, 200, 50, 150, 150])
    d = np.linalg.norm(np.asarray(out.position) - 50.0, axis=1)
    np.testing.assert_allclose(d, [0, 0, 2.0, 0, 2.0], atol=1e-12)
    # no slot left: surplus divisions do not happen and no live cell is overwritten
    again = jc.divide(out, np.ones(5, bool), jax.random.key(1))
    np.testing.assert_array_equal(np.asarray(again.receptors.bound), np.asarray(out.receptors.bound))


def test_death_stops_secretion_and_the_budget_closes():
    """Two secreting cells with receptors; one dies at t = 30 s: its bound ligand is booked, secretion halves."""
    grid = jc.Grid((6,), 10.0)
    model = jc.Model(grid, [jc.Substrate("s", 5.0, 1e-3)])
    cells = jc.Cells(np.array([[15.0], [45.0]]), secretion=1.0,
                     receptors=jc.Receptors(total=1e3, kon=1e-2, koff=1e-3, kint=1e-3))

    def kill(cells, env, t):
        return dataclasses.replace(cells, alive=cells.alive & ~((t >= 30.0) & (jnp.arange(2) == 1)))

    state, _ = jc.simulate(model, model.init(cells), t_end=60.0, dt=1.0, behaviour=kill)
    b = jc.budget(state)
    assert float(b["secreted"][0]) == pytest.approx(2 * 30 + 1 * 30, rel=1e-12)
    assert abs(float(b["residual"][0])) <= 1e-12 * float(b["secreted"][0])
    assert np.asarray(state.cells.alive).tolist() == [True, False]


def _chemotaxis(speed):
    """Move up the first substrate's gradient at ``speed`` µm/s; secrete in proportion to the local signal."""

    def f(cells, env, t):
        g = env.gradient[:, 0, :]
        u = g / jnp.maximum(jnp.linalg.norm(g, axis=1, keepdims=True), 1e-30)
        jitter = 1e-3 * jax.random.normal(env.key, cells.position.shape, cells.position.dtype)
        return dataclasses.replace(cells, position=cells.position + speed * env.dt * u + jitter,
                                   secretion=0.5 + 0.1 * env.concentration)

    return f


def test_in_loop_behaviour_equals_the_same_update_between_one_step_runs():
    """The compiled loop against a NumPy re-implementation of the update applied between one-step runs."""
    grid = jc.Grid((12, 10), 5.0)
    model = jc.Model(grid, [jc.Substrate("s", 20.0, 1e-3, boundary={"x-": jc.Flux(0.2)})])
    rng = np.random.default_rng(3)
    cells = jc.Cells(rng.uniform(5, 45, (6, 2)), secretion=0.5, uptake=1.0)
    state0 = model.init(cells)
    dt, steps, speed = 2.0, 8, 0.3
    looped, _ = jc.simulate(model, state0, t_end=steps * dt, dt=dt, behaviour=_chemotaxis(speed), seed=7)

    state = state0
    for k in range(steps):
        state, _ = jc.simulate(model, state, t_end=(k + 1) * dt, dt=dt)
        f = np.asarray(state.fields)[0]
        pos = np.asarray(state.cells.position)
        ij = np.clip(np.floor(pos / 5.0).astype(int), 0, [11, 9])
        conc = f[ij[:, 0], ij[:, 1]]
        gx, gy = np.gradient(f, 5.0, 5.0)  # central inside, one-sided at the faces
        g = np.stack([gx[ij[:, 0], ij[:, 1]], gy[ij[:, 0], ij[:, 1]]], 1)
        u = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-30)
        key = jax.random.fold_in(jax.random.key(7), k + 1)
        jitter = 1e-3 * np.asarray(jax.random.normal(key, pos.shape, pos.dtype))
        new_pos = np.clip(pos + speed * dt * u + jitter, 0.0, [60.0, 50.0])
        state = dataclasses.replace(state, cells=replace(state.cells, position=jnp.asarray(new_pos),
                                                         secretion=jnp.asarray(0.5 + 0.1 * conc[:, None])))
    np.testing.assert_allclose(np.asarray(looped.fields), np.asarray(state.fields), rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(np.asarray(looped.cells.position), np.asarray(state.cells.position), rtol=1e-9)
    assert int(looped.steps) == steps


def test_chemotaxis_in_a_fixed_linear_gradient_moves_cells_at_their_speed():
    grid = jc.Grid((40, 20), 5.0)
    X, _ = grid.mesh()
    model = jc.Model(grid, [jc.Substrate("s", 0.0)], solver="explicit")  # D = 0, k = 0: the field stays
    cells = jc.Cells(np.array([[20.0, 50.0], [60.0, 20.0]]))
    speed, t = 0.25, 100.0

    def up(cells, env, t):
        g = env.gradient[:, 0, :]
        return dataclasses.replace(cells, position=cells.position + speed * env.dt * g / jnp.linalg.norm(
            g, axis=1, keepdims=True))

    out, _ = jc.simulate(model, model.init(cells, fields=(1.0 + 0.01 * X)[None]), t_end=t, dt=1.0, behaviour=up)
    np.testing.assert_allclose(np.asarray(out.cells.position) - np.asarray(cells.position),
                               [[speed * t, 0.0], [speed * t, 0.0]], atol=1e-12)


def test_same_seed_gives_bitwise_identical_runs_and_split_runs_continue_the_sequence():
    grid = jc.Grid((10, 10), 5.0)
    model = jc.Model(grid, [jc.Substrate("s", 10.0, 1e-3)])
    cells = jc.Cells(np.random.default_rng(0).uniform(5, 45, (5, 2)), secretion=1.0)
    f = _chemotaxis(0.2)
    a, _ = jc.simulate(model, model.init(cells), t_end=20.0, dt=1.0, behaviour=f, seed=3)
    b, _ = jc.simulate(model, model.init(cells), t_end=20.0, dt=1.0, behaviour=f, seed=3)
    half, _ = jc.simulate(model, model.init(cells), t_end=10.0, dt=1.0, behaviour=f, seed=3)
    c, _ = jc.simulate(model, half, t_end=20.0, dt=1.0, behaviour=f, seed=3)
    other, _ = jc.simulate(model, model.init(cells), t_end=20.0, dt=1.0, behaviour=f, seed=4)
    np.testing.assert_array_equal(np.asarray(a.cells.position), np.asarray(b.cells.position))
    np.testing.assert_array_equal(np.asarray(a.cells.position), np.asarray(c.cells.position))
    np.testing.assert_array_equal(np.asarray(a.fields), np.asarray(c.fields))
    assert not np.array_equal(np.asarray(a.cells.position), np.asarray(other.cells.position))


def test_grad_through_a_behaviour_parameter_matches_finite_differences():
    """Secretion rate set by a traced parameter inside the loop (jax.tree_util.Partial)."""
    grid = jc.Grid((8,), 5.0)
    model = jc.Model(grid, [jc.Substrate("s", 10.0, 1e-2)])
    cells = jc.Cells(np.array([[12.0]]), secretion=1.0)

    def rate(q, cells, env, t):
        return dataclasses.replace(cells, secretion=q * (1.0 + env.concentration))

    def probe(q):
        out, _ = jc.simulate(model, model.init(cells), t_end=20.0, dt=1.0,
                             behaviour=jax.tree_util.Partial(rate, q))
        return out.fields[0, 5]

    from jaxcell.simulate import run_steps

    probe(0.3)
    before = run_steps._cache_size()
    probe(0.4)  # the parameter is traced: a new value compiles nothing
    assert run_steps._cache_size() == before
    g = float(jax.grad(probe)(0.7))
    eps = 1e-6
    fd = (float(probe(0.7 + eps)) - float(probe(0.7 - eps))) / (2 * eps)
    assert g == pytest.approx(fd, rel=1e-7)


def test_nan_left_by_a_behaviour_is_refused_naming_the_field():
    """A behaviour that divides by zero puts NaN in positions: one error naming cells.position and the cell."""
    model = jc.Model(jc.Grid((8,), 10.0), [jc.Substrate("s", 1.0)], solver="explicit")
    cells = jc.Cells(np.array([[15.0], [45.0]]), secretion=1.0)

    def broken(cells, env, t):
        bad = cells.position.at[1, 0].set(cells.position[1, 0] / (env.gradient[1, 0, 0] * 0.0))
        return replace(cells, position=bad)

    with pytest.raises(ValueError, match=r"NaN or inf in cells\.position of 1 cell\(s\) \(first: index 1\)"):
        jc.simulate(model, model.init(cells), t_end=3.0, dt=1.0, behaviour=broken)

    def overflow(cells, env, t):
        return replace(cells, secretion=cells.secretion * jnp.inf)

    with pytest.raises(ValueError, match=r"cells\.secretion"):
        jc.simulate(model, model.init(cells), t_end=3.0, dt=1.0, behaviour=overflow)


def test_nan_that_passed_into_the_fields_is_refused():
    """A NaN rate at one step and a finite one later: the cells end finite, the fields do not."""
    model = jc.Model(jc.Grid((8,), 10.0), [jc.Substrate("s", 1.0)], solver="explicit")
    cells = jc.Cells(np.array([[15.0]]), secretion=1.0)

    def glitch(cells, env, t):
        return replace(cells, secretion=jnp.where(t < 1.5, jnp.nan, 1.0) * jnp.ones_like(cells.secretion))

    with pytest.raises(ValueError, match="the fields hold NaN or inf by t = 4 s"):
        jc.simulate(model, model.init(cells), t_end=4.0, dt=1.0, behaviour=glitch)


def test_schedule_counts_a_step_lost_to_rounding_of_large_times():
    """t0 + 447·dt in floats lands 1e-12 s short of 447 steps at t ≈ 1e4 s: 447 full steps, no near-dt extra step."""
    from jaxcell.simulate import schedule

    t0, dt = 11293.86, 0.0421
    for m in (2, 24, 447, 1000):
        t1 = t0 + m * dt
        groups = schedule(t0, t1, dt, [])
        assert sum(g.steps for g in groups) == m and all(g.rest == 0.0 for g in groups), (m, groups)

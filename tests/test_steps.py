"""Steps chosen for an accuracy (``jc.simulate(..., dt=None, rtol=...)``): the saved fields meet rtol against
the exact-in-time solution of the same grid (the spectral solver, exact without uptake, or a run at a far
smaller step); gradients through a dt=None run are those of the chosen fixed step."""

import jax
import numpy as np
import pytest

import jaxcell as jc
from jaxcell.simulate import choose_step
from jaxcell.steps import relative_error

SAVE = [60.0, 300.0, 600.0]


def _exact(grid, sub, cells=None, save=SAVE):
    """The exact-in-time solution of the grid: the spectral solver with no uptake, one step per save interval."""
    m = jc.Model(grid, [sub], solver="spectral")
    return np.asarray(jc.simulate(m, m.init(cells), save[-1], dt=None, rtol=1e-3, save_at=save)[1].fields)


def test_point_source_meets_rtol_against_the_exact_solution():
    """A secreting cell in 2D (D = 50 µm²/s): implicit with dt=None meets rtol = 1e-2 and 1e-3 pointwise where
    the field is above 1e-4 of its maximum, at every saved time; a tighter rtol gives a smaller step."""
    grid = jc.Grid((40, 40), 5.0)
    sub = jc.Substrate("s", 50.0, 1e-3)
    cells = jc.Cells(np.array([[100.0, 100.0]]), secretion=10.0)
    exact = _exact(grid, sub, cells)
    m = jc.Model(grid, [sub])
    _, traj = jc.simulate(m, m.init(cells), 600.0, dt=None, rtol=1e-2, save_at=SAVE)
    assert relative_error(np.asarray(traj.fields), exact) <= 1e-2
    dt = choose_step(m, m.init(cells), 600.0, 1e-3, save_at=SAVE)  # what dt=None would take for 1e-3
    _, traj = jc.simulate(m, m.init(cells), 600.0, dt, save_at=SAVE)
    assert relative_error(np.asarray(traj.fields), exact) <= 1e-3


def test_flux_driven_morphogen_meets_rtol():
    """A morphogen entering through a face (1D, Flux at x-), lod (first order in time): rtol = 1e-2."""
    grid = jc.Grid((60,), 2.5)
    sub = jc.Substrate("m", 0.5, 2e-3, boundary={"x-": jc.Flux(1.0)})
    save = [300.0, 1200.0, 3600.0]
    exact = _exact(grid, sub, save=save)
    m = jc.Model(grid, [sub], solver="lod")
    _, traj = jc.simulate(m, m.init(), 3600.0, dt=None, rtol=1e-2, save_at=save)
    assert relative_error(np.asarray(traj.fields), exact) <= 1e-2


def test_cell_uptake_meets_rtol_against_a_far_smaller_step():
    """Cells that secrete and take up (2D): no exact solution in closed form, so the reference is the same
    model at 1/64 of the chosen step (its error is ~4000× smaller for a second-order scheme)."""
    grid = jc.Grid((30, 30), 5.0)
    rng = np.random.default_rng(0)
    cells = jc.Cells(rng.uniform(10, 140, (12, 2)), secretion=rng.uniform(0, 5, 12), uptake=rng.uniform(0, 80, 12))
    m = jc.Model(grid, [jc.Substrate("s", 20.0, 1e-3)])
    dt = choose_step(m, m.init(cells), 600.0, 1e-2, save_at=SAVE)  # the step dt=None takes
    _, traj = jc.simulate(m, m.init(cells), 600.0, dt, save_at=SAVE)
    _, ref = jc.simulate(m, m.init(cells), 600.0, dt / 64, save_at=SAVE)
    assert relative_error(np.asarray(traj.fields), np.asarray(ref.fields)) <= 1e-2


def test_exact_scheme_takes_one_step_per_save_interval():
    """The spectral solver without uptake is exact in time: dt=None takes the longest save interval as its step,
    and the run equals one with a small fixed step to 1e-9."""
    grid = jc.Grid((32,), 2.0)
    sub = jc.Substrate("m", 1.0, 1e-3, boundary={"x-": jc.Flux(0.5)})
    m = jc.Model(grid, [sub], solver="spectral")
    assert choose_step(m, m.init(), 600.0, 1e-6, save_at=SAVE) == 300.0
    state, traj = jc.simulate(m, m.init(), 600.0, dt=None, rtol=1e-6, save_at=SAVE)
    assert int(state.steps) == 3
    _, fine = jc.simulate(m, m.init(), 600.0, 1.0, save_at=SAVE)
    assert relative_error(np.asarray(traj.fields), np.asarray(fine.fields)) < 1e-9


def test_gradient_through_a_dt_none_run_is_that_of_the_chosen_step():
    """jax.grad of a loss through simulate(dt=None): the step is chosen on the values behind the tracers, then
    the run is a fixed-step run; its gradient matches central differences at that step (1e-6)."""
    grid = jc.Grid((40,), 2.5)
    x_obs = np.array([[5.0], [20.0], [40.0]])

    def run(D, dt):
        m = jc.Model(grid, [jc.Substrate("m", D, 2e-3, boundary={"x-": jc.Flux(1.0)})])
        _, traj = jc.simulate(m, m.init(), 1200.0, dt=dt, rtol=None if dt is not None else 1e-2, save_at=[1200.0])
        return jax.numpy.sum(grid.sample(traj.fields[0, 0], x_obs) ** 2)

    D0 = 0.4
    m0 = jc.Model(grid, [jc.Substrate("m", D0, 2e-3, boundary={"x-": jc.Flux(1.0)})])
    dt = choose_step(m0, m0.init(), 1200.0, 1e-2, save_at=[1200.0])
    g = float(jax.grad(lambda D: run(D, None))(D0))
    h = 1e-5
    fd = (float(run(D0 + h, dt)) - float(run(D0 - h, dt))) / (2 * h)
    assert g == pytest.approx(fd, rel=1e-6)
    assert g == pytest.approx(float(jax.grad(lambda D: run(D, dt))(D0)), rel=1e-12)


def test_dt_none_refusals_are_one_line():
    grid = jc.Grid((8,), 1.0)
    m = jc.Model(grid, [jc.Substrate("s", 1.0, 0.1)])
    with pytest.raises(ValueError, match="give dt"):
        jc.simulate(m, m.init(), 10.0, dt=None)
    with pytest.raises(ValueError, match="rtol= applies with dt=None"):
        jc.simulate(m, m.init(), 10.0, dt=1.0, rtol=1e-2)
    with pytest.raises(ValueError, match="rtol must be a number in"):
        jc.simulate(m, m.init(), 10.0, dt=None, rtol=2.0)
    ex = jc.Model(grid, [jc.Substrate("s", 1.0, 0.1)], solver="explicit")
    with pytest.raises(ValueError, match="stability sub-step"):
        jc.simulate(ex, ex.init(), 10.0, dt=None, rtol=1e-2)
    cells = jc.Cells(np.array([[4.0]]))
    with pytest.raises(ValueError, match="with a behaviour"):
        jc.simulate(m, m.init(cells), 10.0, dt=None, rtol=1e-2, behaviour=lambda c, env, t: c)
    with pytest.raises(ValueError, match="under jax.jit"):
        jax.jit(lambda D: jc.simulate(jc.Model(grid, [jc.Substrate("s", D, 0.1)]), m.init(), 10.0, dt=None,
                                      rtol=1e-2)[0].fields)(1.0)

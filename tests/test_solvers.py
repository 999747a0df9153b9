"""The solver interface (jaxcell/solvers/): the registry, and a solver written outside the package.

Oracle for the outside solver: forward-Euler FTCS on a periodic axis multiplies
the Fourier mode m by exactly ``1 − 4D·dt/h²·sin²(πm/n)`` per step.
"""

import jax.numpy as jnp
import numpy as np
import pytest

import jaxcell as jc
from jaxcell.operators import diffuse
from jaxcell.solvers import Amounts, Solver


class ForwardEuler(Solver):
    """Plain FTCS, no decay, no cells: just enough to show a solver added from outside."""

    name = "test-forward-euler"
    exact_steady_state = False

    def check(self, model):
        for s in model.substrates:
            if float(np.asarray(s.decay)) != 0.0:
                raise ValueError("solver='test-forward-euler' has no decay; use solver='explicit'")

    def step(self, model, p, setup, c, ex, dt, plan, layout):
        new = c + dt * diffuse(c, model.grid, p.D, p.faces)
        z = jnp.zeros((), c.dtype)
        return new, Amounts(z, z, z, z, z)


def test_builtin_solvers_are_registered_default_first():
    assert jc.solvers.names()[:4] == ("implicit", "lod", "explicit", "spectral")
    assert jc.Model(jc.Grid((4,), 1.0), jc.Substrate("s", 1.0)).scheme is jc.solvers.get("implicit")


def test_unknown_solver_names_the_registered_ones():
    with pytest.raises(ValueError, match="solver must be one of .*'implicit'.*'spectral'"):
        jc.Model(jc.Grid((4,), 1.0), jc.Substrate("s", 1.0), solver="crank")


def test_a_solver_registered_from_outside_runs_through_simulate():
    jc.solvers.register(ForwardEuler)
    try:
        n, h, D, dt, m = 32, 2.0, 1.0, 0.5, 3
        grid = jc.Grid((n,), h)
        model = jc.Model(grid, [jc.Substrate("s", D, boundary={"x": jc.Periodic()})], solver="test-forward-euler")
        assert model.solver == "test-forward-euler" and isinstance(model.scheme, ForwardEuler)
        x = grid.centers(0)
        c0 = 1.0 + 0.5 * np.cos(2 * np.pi * m * x / (n * h))
        state, _ = jc.simulate(model, model.init(fields=c0[None]), t_end=20 * dt, dt=dt)
        g = 1 - 4 * D * dt / h**2 * np.sin(np.pi * m / n) ** 2
        exact = 1.0 + 0.5 * g**20 * np.cos(2 * np.pi * m * x / (n * h))
        np.testing.assert_allclose(np.asarray(state.fields)[0], exact, rtol=1e-12)
        # its own rule is applied when the model is built
        with pytest.raises(ValueError, match="has no decay; use solver='explicit'"):
            jc.Model(grid, [jc.Substrate("s", D, 1e-3)], solver="test-forward-euler")
        # an instance works without registering too
        direct = jc.Model(grid, [jc.Substrate("s", D, boundary={"x": jc.Periodic()})], solver=ForwardEuler())
        again, _ = jc.simulate(direct, direct.init(fields=c0[None]), t_end=20 * dt, dt=dt)
        np.testing.assert_array_equal(np.asarray(again.fields), np.asarray(state.fields))
    finally:
        jc.solvers.base._REGISTRY.pop("test-forward-euler", None)


def test_solver_rules_live_in_the_solver():
    grid = jc.Grid((6, 6), 1.0)
    mask = np.zeros(grid.shape, bool)
    mask[2, 2] = True
    periodic = jc.Substrate("s", 1.0, 1e-2, boundary={"y": jc.Periodic()})
    for name in ("implicit", "lod"):
        with pytest.raises(ValueError, match=f"solver='{name}'.*use solver='explicit'"):
            jc.Model(grid, [periodic], solver=name, dirichlet_mask=mask, dirichlet_value=1.0)
    jc.Model(grid, [periodic], solver="explicit", dirichlet_mask=mask, dirichlet_value=1.0)
    assert jc.solvers.get("explicit").needs_diffusion_bound
    assert not jc.solvers.get("implicit").needs_diffusion_bound

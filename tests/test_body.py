"""Well-mixed compartments (blood, lymph, hemolymph) against closed forms, budgets and gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.linalg import expm

import jaxcell as jc

SOLVERS = ("implicit", "explicit", "lod", "spectral")


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def uniform_model(solver: str, q: float, kappa: float, Vb: float, kc: float, k: float = 0.0) -> jc.Model:
    g = jc.Grid((10, 8), 5.0)
    return jc.Model(g, jc.Substrate("IL-2", 10.0, k, production=q, leak=jc.Leak("blood", kappa)), solver=solver,
                    compartments=[jc.Compartment("blood", Vb, kc)])


@pytest.mark.parametrize("solver", SOLVERS)
def test_uniform_leak_reaches_the_two_pool_steady_state(solver):
    """Production q everywhere, leak κ: c_b = q·V_t/(k_c·V_b), c = c_b + q/κ; the budget closes."""
    q, kappa, Vb, kc = 1e-3, 1e-3, 5e4, 1e-3
    m = uniform_model(solver, q, kappa, Vb, kc)
    st, _ = jc.simulate(m, m.init(), 30_000.0, 50.0)
    Vt = m.grid.size * m.grid.voxel_volume
    cb = q * Vt / (kc * Vb)
    assert float(st.compartments["blood"][0]) == pytest.approx(cb, rel=1e-8)
    np.testing.assert_allclose(np.asarray(st.fields), cb + q / kappa, rtol=1e-8)
    b = jc.budget(st)
    assert float(b["compartments"][0]) == pytest.approx(cb * Vb, rel=1e-8)
    assert float(b["cleared"][0]) > 0
    assert abs(float(b["residual"][0])) < 1e-12 * float(b["produced"][0])
    np.testing.assert_allclose(np.asarray(jc.steady_state(m)), np.asarray(st.fields), rtol=1e-8)


@pytest.mark.parametrize("solver", ("implicit", "lod"))
def test_two_pool_transient_matches_the_matrix_exponential(solver):
    """Uniform tissue and blood start at (c0, 0): (c, c_b)(t) = expm(A t)·(c0, 0) + the production's response."""
    q, kappa, Vb, kc, k = 5e-4, 2e-3, 2e4, 5e-4, 1e-4
    m = uniform_model(solver, q, kappa, Vb, kc, k)
    Vt = m.grid.size * m.grid.voxel_volume
    st, traj = jc.simulate(m, m.init(fields=np.full((1, 10, 8), 2.0)), 3000.0, 1.0, save_at=[500.0, 1500.0, 3000.0])
    A = np.array([[-(kappa + k), kappa], [kappa * Vt / Vb, -(kappa * Vt / Vb + kc)]])
    bvec = np.array([q, 0.0])
    for j, t in enumerate((500.0, 1500.0, 3000.0)):
        E = expm(A * t)
        y = E @ np.array([2.0, 0.0]) + np.linalg.solve(A, (E - np.eye(2)) @ bvec)
        # first order in dt (the leak is a backward-Euler stage): κ·dt = 2e-3
        assert float(np.asarray(traj.fields[j]).mean()) == pytest.approx(y[0], rel=2e-3)
        assert float(traj.compartments["blood"][j, 0]) == pytest.approx(y[1], rel=2e-3)


def test_leak_step_is_stable_and_conservative_at_any_dt():
    """A tiny blood volume and a huge step: no oscillation, no negative value, exact books."""
    from jaxcell.body import leak_step

    c = jnp.asarray(np.random.default_rng(1).uniform(0, 3, (20, 10)))
    comp = jc.Compartment("blood", 1.0, 0.5)
    for dt in (1e-3, 1.0, 1e6):
        c2, cb2, leaked, cleared = leak_step(c, jnp.asarray(0.7), jnp.full(c.shape, 2.0), comp, 4.0, jnp.asarray(dt))
        assert float(jnp.min(c2)) >= 0 and float(cb2) >= 0
        assert float(cb2) <= float(jnp.max(c))  # no overshoot past the largest source
        np.testing.assert_allclose(4.0 * float(jnp.sum(c - c2)), float(leaked), rtol=1e-10)
        np.testing.assert_allclose(1.0 * (float(cb2) - 0.7), float(leaked) - float(cleared), rtol=1e-10, atol=1e-12)


def test_wing_disc_hemolymph_matches_the_authors_formula():
    """Stapornwongkul et al. 2020: c_H = κ_H·mean(c)/(κ_H + k_H) at equilibrium, κ_H = κ·V_disc/V_H."""
    g = jc.Grid((40, 20), 5.0)
    q = np.zeros(g.shape)
    q[18:22, :] = 1e-3  # the GFP-producing stripe
    kappa, Vh, kh = 2e-4, 3e5, 5e-4
    sub = jc.Substrate("GFP", 5.0, 1e-4, production=q, leak=jc.Leak("hemolymph", kappa),
                       boundary={"x": jc.Dirichlet(0.0)})
    m = jc.Model(g, sub, compartments=[jc.Compartment("hemolymph", Vh, kh)])
    st, _ = jc.simulate(m, m.init(), 100_000.0, 5.0)
    c = np.asarray(st.fields[0])
    kH = kappa * g.size * g.voxel_volume / Vh
    assert float(st.compartments["hemolymph"][0]) == pytest.approx(kH * c.mean() / (kH + kh), rel=1e-6)
    css = np.asarray(jc.steady_state(m)[0])
    np.testing.assert_allclose(c, css, rtol=1e-3 * 5, atol=1e-3 * css.max())  # first-order splitting, κ·dt = 1e-3


def test_leak_only_where_asked_and_not_from_held_voxels():
    g = jc.Grid((20,), 2.0)
    where = np.zeros(20, bool)
    where[:5] = True
    sub = jc.Substrate("s", 1.0, 0.0, leak=jc.Leak("lymph", 1e-2, where=where))
    mask = np.zeros(20, bool)
    mask[0] = True
    m = jc.Model(g, sub, compartments=[jc.Compartment("lymph", 100.0, 0.0)], dirichlet_mask=mask,
                 dirichlet_value=0.0, solver="explicit")
    st, _ = jc.simulate(m, m.init(fields=np.full((1, 20), 1.0)), 5.0, 0.5)
    b = jc.budget(st)
    assert float(st.compartments["lymph"][0]) > 0
    assert abs(float(b["residual"][0])) < 1e-12


def test_gradients_with_respect_to_leak_and_clearance_match_finite_differences():
    g = jc.Grid((12,), 5.0)
    q = np.zeros(12)
    q[2] = 1e-2

    def blood(kappa, kc, Vb):
        sub = jc.Substrate("s", 5.0, 1e-3, production=q, leak=jc.Leak("blood", kappa))
        m = jc.Model(g, sub, compartments=[jc.Compartment("blood", Vb, kc)])
        st, _ = jc.simulate(m, m.init(), 500.0, 5.0)
        return st.compartments["blood"][0] + jnp.sum(st.fields)

    p0 = (2e-3, 1e-3, 300.0)
    grads = jax.grad(blood, argnums=(0, 1, 2))(*p0)
    for i, eps in enumerate((1e-7, 1e-7, 1e-3)):
        up, dn = list(p0), list(p0)
        up[i] += eps
        dn[i] -= eps
        fd = (float(blood(*up)) - float(blood(*dn))) / (2 * eps)
        assert float(grads[i]) == pytest.approx(fd, rel=1e-5), i
        assert abs(fd) > 0


def test_steady_state_gradient_through_the_schur_complement():
    g = jc.Grid((12,), 5.0)
    q = np.zeros(12)
    q[2] = 1e-2

    def blood(kappa):
        sub = jc.Substrate("s", 5.0, 1e-3, production=q, leak=jc.Leak("blood", kappa))
        m = jc.Model(g, sub, compartments=[jc.Compartment("blood", 300.0, 1e-3)])
        return jnp.sum(jc.steady_state(m))

    fd = (float(blood(2e-3 + 1e-8)) - float(blood(2e-3 - 1e-8))) / 2e-8
    assert float(jax.grad(blood)(2e-3)) == pytest.approx(fd, rel=1e-5)


def test_bad_compartments_are_refused():
    g = jc.Grid((10,), 1.0)
    with pytest.raises(ValueError, match="volume must be > 0"):
        jc.Compartment("blood", 0.0)
    with pytest.raises(ValueError, match="clearance must be >= 0"):
        jc.Compartment("blood", 1.0, -1.0)
    with pytest.raises(ValueError, match="Leak rate must be >= 0"):
        jc.Leak("blood", -1.0)
    with pytest.raises(ValueError, match="Leak where must be a bool mask"):
        jc.Leak("blood", 1.0, where=np.full((10,), 0.3))
    with pytest.raises(ValueError, match="leaks into compartment 'blood', which the model lacks"):
        jc.Model(g, jc.Substrate("s", 1.0, leak=jc.Leak("blood", 1.0)))
    with pytest.raises(ValueError, match=r"leak rate must be a number or an array of the grid's shape \(10,\)"):
        jc.Model(g, jc.Substrate("s", 1.0, leak=jc.Leak("blood", np.ones(3))),
                 compartments=[jc.Compartment("blood", 1.0)])
    with pytest.raises(ValueError, match="compartment names must be unique"):
        jc.Model(g, jc.Substrate("s", 1.0), compartments=[jc.Compartment("b", 1.0), jc.Compartment("b", 2.0)])
    m = jc.Model(g, jc.Substrate("s", 1.0, leak=jc.Leak("b", 1.0)), compartments=[jc.Compartment("b", 1.0)])
    with pytest.raises(ValueError, match="no steady state"):
        jc.steady_state(m)
    with pytest.raises(ValueError, match="which the model lacks"):
        m.init(compartments={"liver": 1.0})


# ---------------------------------------------------------------------------
# Scenario files and the built-in


SCENARIO = """
[grid]
shape = [20, 4]
spacing = 5.0
{comps}
[[substrates]]
name = "IL-2"
diffusion = 10.0
decay = 1e-4
production = 1e-3
{extra}
[run]
dt = 10.0
t_end = 100.0
save_every = 50.0
"""
BLOOD = '[[compartments]]\nname = "blood"\nvolume = 1e5\nclearance = 1e-3'


def _scenario(tmp_path, extra: str, comps: str = BLOOD):
    from jaxcell.scenario import load

    path = tmp_path / "s.toml"
    path.write_text(SCENARIO.format(extra=extra, comps=comps))
    return load(path)


def test_scenario_compartments_and_a_leak_region(tmp_path):
    sc = _scenario(tmp_path, """leak = { compartment = "blood", rate = 0.0 }
[[substrates.regions]]
shape = "box"
lo = [50.0, 0.0]
hi = [100.0, 20.0]
leak = 2e-3""")
    (cp,) = sc.model.compartments
    assert cp.name == "blood" and float(cp.volume) == 1e5 and float(cp.clearance) == 1e-3
    rate = np.asarray(sc.model.substrates[0].leak.rate)[:, 0]
    np.testing.assert_array_equal(rate, np.where(sc.grid.centers(0) >= 50.0, 2e-3, 0.0))
    from jaxcell.io import BODY_FIGURE, run_scenario

    summary = run_scenario(sc, tmp_path / "out", progress=False, log=lambda *_: None)
    blood = summary["compartments"]["blood"]["IL-2"]
    assert blood["concentration"] > 0 and 0 < blood["fraction_of_made_that_left_the_tissue"] < 1
    assert summary["budget"]["IL-2"]["relative_residual"] < 1e-6
    assert (tmp_path / "out" / BODY_FIGURE).stat().st_size > 10_000
    import xarray as xr

    ds = xr.open_zarr(tmp_path / "out" / "fields.zarr")
    assert ds.compartment_blood.shape == (3, 1)


@pytest.mark.parametrize("extra, comps, match", [
    ('leak = { compartment = "lymph", rate = 1e-3 }', BLOOD, r"leak.compartment: names 'lymph'.*defined: blood"),
    ('leak = { rate = 1e-3 }', BLOOD, r"leak.compartment"),
    ('leak = { compartment = "blood", rate = -1.0 }', BLOOD, r"leak.rate"),
    ("[[substrates.regions]]\nshape = 'box'\nlo = [0, 0]\nhi = [5, 20]\nleak = 1.0", BLOOD, "has no leak"),
    ("", '[[compartments]]\nname = "blood"\nvolume = 0.0', r"compartments\[0\].volume"),
    ("", BLOOD, r"compartments\[0\]: no substrate leaks into 'blood'"),
])
def test_scenario_compartment_errors_name_the_key(tmp_path, extra, comps, match):
    from jaxcell.scenario import ScenarioError

    with pytest.raises(ScenarioError, match=match):
        _scenario(tmp_path, extra, comps)


def test_lymph_node_scenario_books_what_reaches_the_blood(tmp_path):
    """The built-in, 20 min: blood level and share both positive, and the blood level equals the pool's
    balance V·c_b = what left − what was cleared."""
    from jaxcell.io import run_scenario
    from jaxcell.scenario import load

    sc = load("lymph_node_leak", ["run.t_end=1200", "run.save_every=600"])
    summary = run_scenario(sc, tmp_path / "out", figures=False, progress=False, log=lambda *_: None)
    blood = summary["compartments"]["blood"]["IL-2"]
    b = summary["budget"]["IL-2"]
    assert blood["concentration"] * 1.6e9 == pytest.approx(b["compartments"], rel=1e-5)
    assert 0 < blood["fraction_of_made_that_left_the_tissue"] < 0.5
    assert b["relative_residual"] < 1e-6


def test_fit_recovers_leak_rate_and_clearance_from_a_blood_time_course():
    """jc.fit with the compartment's parameters: noiseless synthetic data (blood level over time and the
    tissue's mean) from known κ, k_c; the fit returns them from a start 3x off."""
    g = jc.Grid((12,), 5.0)
    q = np.zeros(12)
    q[3] = 1e-2
    times = [300.0, 900.0, 1800.0, 3600.0]

    def predict(p):
        sub = jc.Substrate("s", 5.0, 1e-4, production=q, leak=jc.Leak("blood", p["kappa"]))
        m = jc.Model(g, sub, compartments=[jc.Compartment("blood", 200.0, p["kc"])])
        _, traj = jc.simulate(m, m.init(), times[-1], 20.0, save_at=times)
        return jnp.concatenate([traj.compartments["blood"][:, 0], jnp.mean(traj.fields[:, 0], axis=1)])

    truth = {"kappa": 2e-3, "kc": 1e-3}
    observed = predict(truth)
    fit = jc.fit(predict, observed, {"kappa": 6e-3, "kc": 3e-4})
    assert fit.params["kappa"] == pytest.approx(truth["kappa"], rel=1e-4)
    assert fit.params["kc"] == pytest.approx(truth["kc"], rel=1e-4)

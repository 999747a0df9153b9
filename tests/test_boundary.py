"""Face conditions (jaxcell/boundary.py): the Robin face against its closed-form steady states.

Oracle (docs/VERIFICATION.md style): 1D, inward flux j at x = 0, a membrane of
permeability P to an outside value c_out at x = L, decay k.

* k = 0: c(x) = c_out + j/P + (j/D)(L − x). The profile is linear, so the
  finite-volume scheme (the half voxel to the face in series with the membrane,
  g = 2DP/(2D + Ph)) reproduces it exactly: a round-off oracle.
* k > 0: c = A cosh(x/λ) + B sinh(x/λ), λ = √(D/k), with −D c'(0) = j and
  −D c'(L) = P (c(L) − c_out): second order in h.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcell as jc

L, N, D, J, P, C_OUT = 100.0, 20, 50.0, 0.3, 0.2, 0.4
ROBIN_SOLVERS = [s for s in jc.solvers.names() if s != "spectral"]


def linear_profile(x):
    return C_OUT + J / P + J / D * (L - x)


def decay_profile(x, k):
    lam = np.sqrt(D / k)
    # c = A cosh + B sinh; −D c'(0) = J → B = −J λ / D; −D c'(L) = P (c(L) − c_out)
    B = -J * lam / D
    ch, sh = np.cosh(L / lam), np.sinh(L / lam)
    # −D/λ (A sh + B ch) = P (A ch + B sh − c_out)
    A = (P * C_OUT - P * B * sh - D / lam * B * ch) / (D / lam * sh + P * ch)
    return A * np.cosh(x / lam) + B * np.sinh(x / lam)


def model(solver, k=0.0, n=N, **kw):
    grid = jc.Grid((n,), L / n)
    sub = jc.Substrate("s", D, k, boundary={"x-": jc.Flux(J), "x+": jc.Robin(P, outside=C_OUT)})
    return jc.Model(grid, [sub], solver=solver, **kw)


def test_robin_conductance_is_the_series_law():
    face = jc.Robin(permeability=2.0, outside=1.0)
    D_, h = 10.0, 4.0
    g = 2 * D_ * 2.0 / (2 * D_ + 2.0 * h)
    assert float(face.conductance(D_, h)) == pytest.approx(g, rel=1e-14)
    assert float(face.inflow(D_, h)) == pytest.approx(g * 1.0, rel=1e-14)
    # P → ∞ is Dirichlet (2D/h), P = 0 is no-flux
    assert float(jc.Robin(1e12).conductance(D_, h)) == pytest.approx(float(jc.Dirichlet(0.0).conductance(D_, h)),
                                                                      rel=1e-9)
    assert float(jc.Robin(0.0).conductance(D_, h)) == 0.0


def test_steady_state_with_a_robin_face_equals_the_linear_closed_form():
    m = model("implicit")
    c = np.asarray(jc.steady_state(m))[0]
    x = m.grid.centers(0)
    np.testing.assert_allclose(c, linear_profile(x), rtol=1e-9)


@pytest.mark.parametrize("solver", ROBIN_SOLVERS)
def test_each_solver_reaches_the_robin_closed_form(solver):
    """Every solver that supports Robin faces converges to the exact linear profile (k = 0)."""
    m = model(solver, theta=1.0) if solver == "implicit" else model(solver)
    dt = 5.0 if solver == "explicit" else 200.0
    t_end = 30000.0  # the membrane's time scale is ~L/P = 500 s
    state, _ = jc.simulate(m, m.init(), t_end=t_end, dt=dt)
    x = m.grid.centers(0)
    np.testing.assert_allclose(np.asarray(state.fields)[0], linear_profile(x), rtol=1e-8)
    b = jc.budget(state)
    # the flux face brings J·t (1D: unit area); the membrane also lets some in while c < c_out
    assert float(b["inflow"][0]) >= J * t_end * (1 - 1e-12)
    assert abs(float(b["residual"][0])) <= 1e-10 * float(b["inflow"][0])


@pytest.mark.parametrize("solver", ROBIN_SOLVERS)
def test_robin_with_decay_is_second_order_in_h(solver):
    k = 1e-2  # λ ≈ 71 µm
    errs = []
    for n in (20, 40):
        m = model(solver, k=k, n=n, theta=1.0) if solver == "implicit" else model(solver, k=k, n=n)
        c = np.asarray(jc.steady_state(m))[0] if solver == "implicit" else None
        if c is None:
            dt = 2.0 if solver == "explicit" else 100.0
            state, _ = jc.simulate(m, m.init(), t_end=5000.0, dt=dt)
            c = np.asarray(state.fields)[0]
        exact = decay_profile(m.grid.centers(0), k)
        errs.append(np.max(np.abs(c - exact)) / np.max(exact))
    assert errs[0] < 2e-3
    assert errs[0] / errs[1] > 3.5  # ≈ 4 for second order


def test_spectral_refuses_robin_when_the_model_is_built():
    with pytest.raises(ValueError, match=r"spectral.*Robin.*solver='implicit'"):
        model("spectral")


@pytest.mark.parametrize("solver", ["implicit", "explicit", "lod"])
def test_robin_in_3d_agrees_across_solvers_and_closes_the_budget(solver):
    """Robin faces on two axes of a 3D box with a secreting cell: all solvers near the steady state."""
    grid = jc.Grid((8, 6, 5), 4.0)
    sub = jc.Substrate("s", 20.0, 1e-3, boundary={"x+": jc.Robin(0.5), "y-": jc.Robin(0.1, outside=0.2)})
    cells = jc.Cells(np.array([[10.0, 12.0, 9.0]]), secretion=2.0)
    m = jc.Model(grid, [sub], solver=solver)
    ref = np.asarray(jc.steady_state(m, cells))[0]
    dt = {"explicit": 0.1, "lod": 0.5}.get(solver, 5.0)
    state, _ = jc.simulate(m, m.init(cells), t_end=4000.0, dt=dt)
    c = np.asarray(state.fields)[0]
    if solver == "lod":
        # BioFVM's splitting is first order in dt (measured 5.6e-2, 7.8e-3, 9.9e-4 at dt = 5, 0.5,
        # 0.05 s) and adds a step's secretion to the cell's voxel after diffusion: compare elsewhere
        away = np.ones(grid.shape, bool)
        away[2, 3, 2] = False  # the cell's voxel: (10, 12, 9) µm / 4 µm
        np.testing.assert_allclose(c[away], ref[away], rtol=1e-2)
    else:
        np.testing.assert_allclose(c, ref, rtol=1e-4)
    b = jc.budget(state)
    assert abs(float(b["residual"][0])) <= 1e-10 * float(b["secreted"][0] + b["inflow"][0])


def test_gradient_with_respect_to_permeability_matches_finite_differences():
    grid = jc.Grid((12,), 5.0)

    def probe(logp):
        sub = jc.Substrate("s", D, 1e-3, boundary={"x-": jc.Flux(J), "x+": jc.Robin(jnp.exp(logp))})
        m = jc.Model(grid, [sub])
        state, _ = jc.simulate(m, m.init(), t_end=200.0, dt=10.0)
        return state.fields[0, -1]

    x0 = np.log(P)
    g = float(jax.grad(probe)(x0))
    eps = 1e-5
    fd = (float(probe(x0 + eps)) - float(probe(x0 - eps))) / (2 * eps)
    assert g == pytest.approx(fd, rel=1e-6)
    assert g < 0  # a more permeable membrane lowers the concentration near it


def test_bad_robin_values_are_refused():
    with pytest.raises(ValueError, match="Robin permeability must be >= 0"):
        jc.Robin(-1.0)
    with pytest.raises(ValueError, match="Robin outside must be finite"):
        jc.Robin(1.0, outside=np.nan)

"""The tissue medium against closed forms: matrix retardation and trapping, two tissues, flow, production.

Oracles (../shared/VERIFICATION.md style): the erfc formation profile at a retarded time,
the decay lengths of linear reaction-diffusion(-advection) problems, the two-layer steady
state with flux continuity, exact budgets, and finite-difference gradients.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erfc

import jaxcell as jc

LINE_SOLVERS = ("implicit", "explicit", "lod")


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def centres(n: int, h: float) -> np.ndarray:
    return (np.arange(n) + 0.5) * h


def decay_length(x: np.ndarray, c: np.ndarray, lo: float, hi: float) -> float:
    sel = (x > lo) & (x < hi)
    return -1.0 / np.polyfit(x[sel], np.log(c[sel]), 1)[0]


# ---------------------------------------------------------------------------
# The extracellular matrix


@pytest.mark.parametrize("solver", LINE_SOLVERS)
def test_fast_matrix_binding_retards_formation(solver):
    """Fast unsaturated binding: L(x, t) = c0·erfc(x / 2√(D t/R)), R = 1 + B/K_d (retardation)."""
    D, h, n, c0 = 10.0, 2.0, 300, 1e-3
    koff, Kd, B = 1.0, 0.1, 0.9  # R = 10; c0 ≪ K_d: unsaturated
    s = jc.Substrate("Dpp", D, boundary={"x-": jc.Dirichlet(c0)}, matrix=jc.Matrix(B, koff / Kd, koff))
    m = jc.Model(jc.Grid((n,), h), s, solver=solver)
    T = 2000.0
    st, _ = jc.simulate(m, m.init(), T, 1.0)
    x = centres(n, h)
    L = np.asarray(st.fields[0])
    retarded = c0 * erfc(x / (2 * np.sqrt(D * T / (1 + B / Kd))))
    free = c0 * erfc(x / (2 * np.sqrt(D * T)))
    assert np.abs(L - retarded).max() < 2e-3 * c0
    assert np.abs(L - free).max() > 0.4 * c0  # the matrix makes a difference the test can see
    # bound ligand at local equilibrium with the free: M = B·L/(K_d + L)
    M = np.asarray(st.matrix[0])
    near = L > 0.05 * c0
    np.testing.assert_allclose(M[near], B * L[near] / (Kd + L[near]), rtol=2e-2)
    b = jc.budget(st)
    assert abs(float(b["residual"][0])) < 1e-12 * float(b["inflow"][0])
    assert float(b["matrix"][0]) > 5 * float(b["fields"][0])  # most of the ligand sits on the matrix


def test_matrix_keeps_steady_length_without_degradation():
    """Nothing degraded on the matrix: the steady length stays √(D/k) however many sites there are."""
    D, k, h, n = 10.0, 1e-2, 2.0, 200
    x = centres(n, h)
    lengths = []
    for sites in (0.0, 1.0):  # R = 1 + B/K_d = 11: formation 11x slower, still done by 20,000 s
        s = jc.Substrate("Dpp", D, k, boundary={"x-": jc.Flux(1e-3)}, matrix=jc.Matrix(sites, 10.0, 1.0))
        m = jc.Model(jc.Grid((n,), h), s, theta=1.0)
        st, _ = jc.simulate(m, m.init(), 20_000.0, 20.0)
        lengths.append(decay_length(x, np.asarray(st.fields[0]), 20, 120))
    lam = math.sqrt(D / k)
    assert lengths[0] == pytest.approx(lam, rel=1e-2)
    assert lengths[1] == pytest.approx(lam, rel=1e-2)


@pytest.mark.parametrize("solver", LINE_SOLVERS)
def test_matrix_degradation_shortens_steady_length(solver):
    """Degradation on the matrix: λ = √(D / (k + g·kon·B/(koff + g))) (linear regime)."""
    D, k, h, n = 10.0, 1e-3, 1.0, 300
    kon, koff, g, B = 1.0, 0.5, 0.05, 0.2
    s = jc.Substrate("Dpp", D, k, boundary={"x-": jc.Dirichlet(1e-4)}, matrix=jc.Matrix(B, kon, koff, g))
    m = jc.Model(jc.Grid((n,), h), s, solver=solver)
    st, _ = jc.simulate(m, m.init(), 3000.0, 0.5)
    lam = math.sqrt(D / (k + g * kon * B / (koff + g)))
    assert decay_length(centres(n, h), np.asarray(st.fields[0]), 5, 60) == pytest.approx(lam, rel=1.5e-2)
    b = jc.budget(st)
    assert float(b["matrix_degraded"][0]) > 0.5 * float(b["inflow"][0])
    assert abs(float(b["residual"][0])) < 1e-10 * float(b["inflow"][0])


@pytest.mark.parametrize("solver", [*LINE_SOLVERS, "spectral"])
def test_matrix_with_production_in_a_closed_box_conserves_and_equilibrates(solver):
    """Uniform production into a closed box with a matrix: every solver; total = q·V·t − decayed − degraded,
    and the free and bound ligand end at the local equilibrium of the uniform ODE (solved here by scipy)."""
    from scipy.integrate import solve_ivp

    q, k, B, kon, koff, g = 1e-2, 1e-3, 2.0, 0.5, 0.1, 0.02
    grid = jc.Grid((6, 5), 4.0)
    m = jc.Model(grid, jc.Substrate("s", 20.0, k, production=q, matrix=jc.Matrix(B, kon, koff, g)), solver=solver)
    st, _ = jc.simulate(m, m.init(), 200.0, 0.05)

    def rhs(_, y):
        L, M = y
        bind = kon * L * (B - M) - koff * M
        return [q - k * L - bind, bind - g * M]

    L, M = solve_ivp(rhs, (0, 200.0), [0.0, 0.0], rtol=1e-10, atol=1e-12).y[:, -1]
    np.testing.assert_allclose(np.asarray(st.fields), L, rtol=5e-3)
    np.testing.assert_allclose(np.asarray(st.matrix), M, rtol=5e-3)
    b = jc.budget(st)
    made = q * grid.size * grid.voxel_volume * 200.0
    assert float(b["produced"][0]) == pytest.approx(made, rel=1e-12)
    assert abs(float(b["residual"][0])) < 1e-12 * made


def test_matrix_step_keeps_the_free_ligand_accurate_in_float32_when_nearly_all_is_bound():
    """K_d = 1e-7 with 3 sites: the free ligand is 5.5e-7 of the total; float32 gives it to 1e-5, not to the
    ~10 % a subtraction T − M' would leave (the float64 step is the reference)."""
    from jaxcell.medium import matrix_step

    mat = jc.Matrix(3.0, 1e4, 1e-3)
    L64, M64, _ = matrix_step(jnp.float64(1.0), jnp.float64(0.0), mat, jnp.float64(100.0))
    with jax.enable_x64(False):
        L32, M32, _ = matrix_step(jnp.float32(1.0), jnp.float32(0.0), mat, jnp.float32(100.0))
    assert float(L32) == pytest.approx(float(L64), rel=1e-5)
    assert float(M32) == pytest.approx(float(M64), rel=1e-6)
    # a slightly negative free ligand (an undershooting transport step) is left unbound, not amplified
    L2, M2, _ = matrix_step(jnp.float64(-1e-3), jnp.float64(0.5), mat, jnp.float64(100.0))
    assert float(L2) >= -1e-3 and 0 <= float(M2) <= 3.0


def test_matrix_step_is_exact_in_its_books_and_stays_in_bounds():
    """Any dt: 0 ≤ M' ≤ sites, L' ≥ 0, L' + M' + degraded = L + M."""
    from jaxcell.medium import matrix_step

    rng = np.random.default_rng(0)
    L = jnp.asarray(rng.uniform(0, 5, 1000))
    M = jnp.asarray(rng.uniform(0, 1, 1000))
    mat = jc.Matrix(jnp.asarray(rng.uniform(1, 2, 1000)), 3.0, 0.7, 0.2)
    for dt in (1e-3, 1.0, 1e4):
        L2, M2, deg = matrix_step(L, M, mat, jnp.asarray(dt))
        assert float(jnp.min(L2)) >= 0 and float(jnp.min(M2)) >= 0
        assert bool(jnp.all(M2 <= mat.sites))
        np.testing.assert_allclose(L2 + M2 + deg, L + M, rtol=1e-13, atol=1e-13)
    # long step without degradation: the local equilibrium kon·L(B − M) = koff·M
    mat0 = jc.Matrix(mat.sites, 3.0, 0.7, 0.0)
    L2, M2, _ = matrix_step(L, M, mat0, jnp.asarray(1e6))
    np.testing.assert_allclose(3.0 * L2 * (mat.sites - M2), 0.7 * M2, rtol=1e-5)


# ---------------------------------------------------------------------------
# Heterogeneous tissue


def two_layer(D1: float, k1: float, D2: float, k2: float, a: float, c0: float, x: np.ndarray) -> np.ndarray:
    """Steady state of D c'' = k c on [0, a) and (a, ∞) with c(0) = c0, c and D c' continuous at a."""
    l1, l2 = math.sqrt(D1 / k1), math.sqrt(D2 / k2)
    ch, sh = math.cosh(a / l1), math.sinh(a / l1)
    b1 = -c0 * (D1 / l1 * sh + D2 / l2 * ch) / (D1 / l1 * ch + D2 / l2 * sh)
    ca = c0 * ch + b1 * sh
    return np.where(x < a, c0 * np.cosh(x / l1) + b1 * np.sinh(x / l1), ca * np.exp(-(x - a) / l2))


@pytest.mark.parametrize("solver", [*LINE_SOLVERS, "steady"])
def test_two_tissues_match_two_layer_closed_form(solver):
    """D and k jump at a face between voxels: the two-layer solution with flux continuity."""
    h, n, a, c0 = 1.0, 400, 60.0, 1.0
    D1, k1, D2, k2 = 40.0, 0.01, 4.0, 0.04
    x = centres(n, h)
    D = np.where(x < a, D1, D2)
    k = np.where(x < a, k1, k2)
    s = jc.Substrate("FGF", D, k, boundary={"x-": jc.Dirichlet(c0)})
    if solver == "steady":
        c = np.asarray(jc.steady_state(jc.Model(jc.Grid((n,), h), s))[0])
    else:
        m = jc.Model(jc.Grid((n,), h), s, solver=solver, theta=1.0)
        st, _ = jc.simulate(m, m.init(), 4000.0, 2.0 if solver != "explicit" else 0.5)
        c = np.asarray(st.fields[0])
        assert abs(float(jc.budget(st)["residual"][0])) < 1e-10 * float(jc.budget(st)["inflow"][0])
    ref = two_layer(D1, k1, D2, k2, a, c0, x)
    assert np.abs(c - ref).max() < 2e-3 * c0
    # flux continuity made visible: the slope jumps by ~D1/D2 across the interface, as in the closed form
    i = int(a / h)
    ratio = (c[i - 2] - c[i - 1]) / (c[i] - c[i + 1])
    assert ratio == pytest.approx((ref[i - 2] - ref[i - 1]) / (ref[i] - ref[i + 1]), rel=1e-2)
    assert ratio < 0.15  # D2/D1 = 0.1


def test_uniform_map_equals_number():
    """A map that holds one value everywhere gives the number's result (same operator, other code path)."""
    g = jc.Grid((12, 10), 5.0)
    f0 = jnp.zeros((1, 12, 10)).at[0, 6, 5].set(1.0)
    out = []
    for D, k in ((50.0, 0.01), (np.full(g.shape, 50.0), np.full(g.shape, 0.01))):
        for solver in LINE_SOLVERS:
            m = jc.Model(g, jc.Substrate("s", D, k, boundary={"x": jc.Dirichlet(0.0)}), solver=solver)
            out.append(np.asarray(jc.simulate(m, m.init(fields=f0), 20.0, 0.5)[0].fields))
    for a, b in zip(out[:3], out[3:]):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14)


# ---------------------------------------------------------------------------
# Production and flow


@pytest.mark.parametrize("solver", [*LINE_SOLVERS, "spectral"])
def test_uniform_production_approaches_q_over_k(solver):
    """No-flux box, production q, decay k: c(t) = q/k·(1 − e^{−kt}); budget 'produced' = q·V·t."""
    q, k, T = 0.1, 0.01, 100.0
    g = jc.Grid((20, 4), 3.0)
    m = jc.Model(g, jc.Substrate("VEGF", 10.0, k, production=q), solver=solver)
    st, _ = jc.simulate(m, m.init(), T, 0.5)
    # lod and explicit (decay backward Euler) are first order in time: error about k·dt/2 = 2.5e-3;
    # implicit (θ = 1/2) second order, spectral exact
    np.testing.assert_allclose(np.asarray(st.fields), q / k * (1 - math.exp(-k * T)),
                               rtol=k * 0.5 if solver in ("lod", "explicit") else 1e-5)
    b = jc.budget(st)
    vol = g.size * g.voxel_volume
    assert float(b["produced"][0]) == pytest.approx(q * vol * T, rel=1e-12)
    assert abs(float(b["residual"][0])) < 1e-10 * q * vol * T


@pytest.mark.parametrize("solver", LINE_SOLVERS)
def test_flow_skews_gradient_downstream(solver):
    """A source in a uniform flow: decay lengths 2D/(√(v² + 4Dk) ∓ v) down- and upstream."""
    D, k, v, h, n = 50.0, 0.01, 0.5, 2.0, 600
    q = np.zeros(n)
    q[n // 3] = 1.0
    s = jc.Substrate("CCL21", D, k, boundary={"x-": jc.Dirichlet(0.0), "x+": jc.Robin(0.0)}, production=q,
                     velocity=(v,))
    m = jc.Model(jc.Grid((n,), h), s, solver=solver, theta=1.0)
    st, _ = jc.simulate(m, m.init(), 4000.0, 2.0 if solver != "explicit" else 1.0)
    c = np.asarray(st.fields[0])
    x, x0 = centres(n, h), centres(n, h)[n // 3]
    root = math.sqrt(v * v + 4 * D * k)
    assert decay_length(x, c, x0 + 20, x0 + 250) == pytest.approx(2 * D / (root - v), rel=3e-3)
    assert -decay_length(x, c, x0 - 100, x0 - 10) == pytest.approx(2 * D / (root + v), rel=3e-3)
    assert float(c.min()) >= 0
    b = jc.budget(st)
    assert float(b["outflow"][0]) > 0  # carried out through the downstream face
    assert abs(float(b["residual"][0])) < 1e-10 * float(b["produced"][0])


def test_flow_steady_state_matches_a_long_implicit_run():
    g = jc.Grid((40, 30), 4.0)
    q = np.zeros(g.shape)
    q[10, 15] = 1.0
    vel = np.zeros((2,) + g.shape)
    vel[0] = 0.8 * np.sin(np.pi * (np.arange(30) + 0.5) / 30)[None, :]  # faster in the middle of a channel
    s = jc.Substrate("CCL21", 30.0, 0.02, boundary={"x-": jc.Dirichlet(0.0), "x+": jc.Robin(0.0)},
                     production=q, velocity=vel)
    m = jc.Model(g, s, theta=1.0)
    st, _ = jc.simulate(m, m.init(), 3000.0, 2.5)  # Courant number v·dt/h = 0.5 (see the implicit solver's note)
    np.testing.assert_allclose(np.asarray(jc.steady_state(m)), np.asarray(st.fields), rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("solver", ["implicit", "lod"])
def test_uniform_flow_dense_line_solve_equals_the_per_line_sweep(solver):
    """A uniform flow with one D is solved with one dense inverse per axis; the same flow given per voxel
    goes through per-line Thomas sweeps: the same numbers to round-off."""
    g = jc.Grid((30, 20), 4.0)
    f0 = jnp.zeros((1, 30, 20)).at[0, 8, 10].set(1.0)
    faces = {"x-": jc.Dirichlet(0.0), "x+": jc.Robin(0.0)}
    out = []
    for vel in ((0.7, 0.0), np.stack([np.full(g.shape, 0.7), np.zeros(g.shape)])):
        m = jc.Model(g, jc.Substrate("s", 3.0, 1e-3, boundary=faces, velocity=vel), solver=solver)
        out.append(np.asarray(jc.simulate(m, m.init(fields=f0), 40.0, 4.0)[0].fields))
    np.testing.assert_allclose(out[0], out[1], rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("face", [jc.Dirichlet(0.0), jc.Robin(50.0)])
def test_explicit_with_flow_stays_positive_next_to_conducting_faces(face):
    """A unit pulse in the voxel next to a Dirichlet or Robin face, flow towards it: one step of any length
    (the solver sub-steps for positivity) never goes below 0."""
    g = jc.Grid((20,), 10.0)
    s = jc.Substrate("a", 100.0, 0.0, velocity=(5.0,), boundary={"x-": jc.Dirichlet(0.0), "x+": face})
    m = jc.Model(g, [s], solver="explicit")
    f = np.zeros((1, 20))
    f[0, -1] = 1.0
    for dt in (0.05, 0.5, 5.0):
        assert float(jc.simulate(m, m.init(fields=f), dt, dt)[0].fields.min()) >= 0.0


@pytest.mark.parametrize("solver", ["explicit", "lod"])
def test_strong_flow_never_negative(solver):
    """Cell Péclet 50, a point pulse, Courant 2.5 (lod): every value stays >= 0 (M-matrix steps)."""
    g = jc.Grid((80,), 5.0)
    f0 = jnp.zeros((1, 80)).at[0, 20].set(1.0)
    s = jc.Substrate("s", 0.5, 0.0, boundary={"x-": jc.Dirichlet(0.0), "x+": jc.Robin(0.0)}, velocity=(10.0,))
    m = jc.Model(g, s, solver=solver)
    st, traj = jc.simulate(m, m.init(fields=f0), 20.0, 1.25, save_every=1.25)
    assert float(jnp.min(traj.fields)) >= 0
    b = jc.budget(st)
    assert abs(float(b["residual"][0])) < 1e-12


def test_periodic_flow_carries_a_pulse_around():
    """Explicit solver, periodic axis: the pulse's centre of mass moves at the flow speed; mass is kept."""
    n, h, v, T = 100, 2.0, 1.0, 60.0
    g = jc.Grid((n,), h)
    x = centres(n, h)
    f0 = np.exp(-((x - 50.0) ** 2) / 50.0)[None]
    m = jc.Model(g, jc.Substrate("s", 5.0, velocity=(v,), boundary={"x": jc.Periodic()}), solver="explicit")
    st, _ = jc.simulate(m, m.init(fields=f0), T, 0.5)
    c = np.asarray(st.fields[0])
    assert np.sum(c * x) / np.sum(c) == pytest.approx(50.0 + v * T, abs=0.5)
    assert np.sum(c) == pytest.approx(np.sum(f0), rel=1e-12)


# ---------------------------------------------------------------------------
# Gradients


def _fd(f, x, eps):
    return (f(x + eps) - f(x - eps)) / (2 * eps)


def test_gradients_match_finite_differences():
    """d/d(sites, kon, velocity, a D map's scale) of a downstream readout, implicit solver."""
    g = jc.Grid((60,), 2.0)
    q = np.zeros(60)
    q[15] = 1.0
    Dmap = jnp.asarray(np.where(centres(60, 2.0) < 60, 20.0, 8.0))

    def readout(sites, kon, v, scale):
        s = jc.Substrate("s", Dmap * scale, 0.01, boundary={"x-": jc.Dirichlet(0.0), "x+": jc.Robin(0.0)},
                         production=q, velocity=jnp.stack([v]), matrix=jc.Matrix(sites, kon, 0.5, 0.05))
        m = jc.Model(g, s)
        st, _ = jc.simulate(m, m.init(), 200.0, 2.0)
        return jnp.sum(st.fields[0, 25:40]) + jnp.sum(st.matrix[0, 25:40])

    p0 = (0.3, 2.0, 0.4, 1.0)
    grads = jax.grad(readout, argnums=(0, 1, 2, 3))(*p0)
    for i, eps in enumerate((1e-5, 1e-5, 1e-6, 1e-6)):
        def f(val, i=i):
            args = list(p0)
            args[i] = val
            return float(readout(*args))
        fd = _fd(f, p0[i], eps)
        assert float(grads[i]) == pytest.approx(fd, rel=1e-5), i
        assert abs(fd) > 1e-8  # each parameter matters to the readout


def test_model_with_traced_sites_builds_inside_jit():
    g = jc.Grid((12, 8), 5.0)

    def bound(sites):
        m = jc.Model(g, jc.Substrate("a", 10.0, 1e-3, matrix=jc.Matrix(sites, 0.01, 0.01)))
        return m.init(matrix=jnp.full((1, 12, 8), 0.1)).matrix.sum()

    assert float(jax.jit(bound)(3.0)) == pytest.approx(0.1 * 96)


def test_traced_maps_do_not_recompile():
    from jaxcell.simulate import run_steps

    g = jc.Grid((30,), 2.0)

    @jax.jit
    def run(Dmap, sites):
        s = jc.Substrate("s", Dmap, 0.01, boundary={"x-": jc.Dirichlet(1.0)}, matrix=jc.Matrix(sites, 1.0, 0.1))
        m = jc.Model(g, s)
        return jc.simulate(m, m.init(), 10.0, 1.0)[0].fields

    a = run(jnp.full(30, 10.0), jnp.full(30, 0.2))
    before = run_steps._cache_size()
    b = run(jnp.full(30, 20.0), jnp.full(30, 0.4))
    assert run_steps._cache_size() == before
    assert not np.allclose(a, b)


# ---------------------------------------------------------------------------
# Refusals


@pytest.mark.parametrize("kwargs, match", [
    ({"production": -1.0}, "production must be >= 0"),
    ({"diffusion": np.full((10,), np.nan)}, "diffusion must be finite"),
    ({"decay": np.ones((3,))}, r"decay must be a number or an array of the grid's shape \(10,\)"),
    ({"velocity": (1.0, 0.0)}, r"velocity must have shape \(1,\)"),
    ({"velocity": 1.0}, "velocity must be a vector"),
    ({"velocity": (1.0,)}, "crosses face 'x-', a no-flux"),
    ({"velocity": (np.nan,), "boundary": {"x": jc.Dirichlet(0.0)}}, "velocity must be finite"),
])
def test_bad_medium_is_refused_with_the_fix(kwargs, match):
    args = {"diffusion": 1.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        jc.Model(jc.Grid((10,), 1.0), jc.Substrate("s", **args))


@pytest.mark.parametrize("kwargs, match", [
    ({"sites": -1.0, "kon": 1.0}, "sites must be >= 0"),
    ({"sites": 1.0, "kon": -1.0}, "kon must be >= 0"),
    ({"sites": 1.0, "kon": 1.0, "koff": np.nan}, "koff must be finite"),
    ({"sites": 1.0, "kon": 1.0, "degradation": -0.1}, "degradation must be >= 0"),
])
def test_bad_matrix_is_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        jc.Matrix(**kwargs)


def test_solvers_refuse_what_they_cannot_do_and_name_one_that_can():
    g = jc.Grid((10,), 1.0)
    with pytest.raises(ValueError, match="does not handle diffusion map.*use solver='implicit'"):
        jc.Model(g, jc.Substrate("s", np.ones(10)), solver="spectral")
    with pytest.raises(ValueError, match="does not handle flow"):
        jc.Model(g, jc.Substrate("s", 1.0, velocity=(1.0,), boundary={"x": jc.Periodic()}), solver="spectral")
    with pytest.raises(ValueError, match="periodic axis with a diffusion map or flow.*'explicit'"):
        jc.Model(g, jc.Substrate("s", 1.0, velocity=(1.0,), boundary={"x": jc.Periodic()}), solver="implicit")
    m = jc.Model(g, jc.Substrate("s", 1.0, 0.1, matrix=jc.Matrix(1.0, 1.0)))
    with pytest.raises(ValueError, match="extracellular matrix.*nonlinear"):
        jc.steady_state(m)
    with pytest.raises(ValueError, match="exceeds its sites"):
        m.init(matrix=np.full((1, 10), 2.0))
    with pytest.raises(ValueError, match="no substrate has a jc.Matrix"):
        jc.Model(g, jc.Substrate("s", 1.0)).init(matrix=np.zeros((1, 10)))


# ---------------------------------------------------------------------------
# Scenario keys and the built-in scenarios


SCENARIO = """
[grid]
shape = [40, 4]
spacing = 2.0
[[substrates]]
name = "Dpp"
diffusion = 1.0
decay = 1e-3
{extra}
[run]
dt = 10.0
t_end = 100.0
save_every = 50.0
"""


def _scenario(tmp_path, extra: str):
    from jaxcell.scenario import load

    path = tmp_path / "s.toml"
    path.write_text(SCENARIO.format(extra=extra))
    return load(path)


def test_scenario_regions_build_maps_and_matrix(tmp_path):
    sc = _scenario(tmp_path, """matrix = { sites = 2.0, kon = 0.5, koff = 0.1 }
production = 0.0
[[substrates.regions]]
shape = "box"
lo = [0.0, 0.0]
hi = [20.0, 8.0]
diffusion = 0.25
sites = 4.0
production = 1e-3""")
    s = sc.model.substrates[0]
    x = sc.grid.centers(0)
    D = np.asarray(s.diffusion)
    assert D.shape == (40, 4)
    np.testing.assert_array_equal(D[:, 0], np.where(x <= 20.0, 0.25, 1.0))
    np.testing.assert_array_equal(np.asarray(s.matrix.sites)[:, 0], np.where(x <= 20.0, 4.0, 2.0))
    np.testing.assert_array_equal(np.asarray(s.production)[:, 0], np.where(x <= 20.0, 1e-3, 0.0))
    assert float(s.matrix.kon) == 0.5 and float(s.matrix.koff) == 0.1
    assert sc.init_state().matrix.shape == (1, 40, 4)


@pytest.mark.parametrize("extra, match", [
    ("velocity = [1.0, 0.0]", r"substrates\[0\].*crosses face 'x-', a no-flux"),
    ("velocity = [1.0]", r"substrates\[0\].velocity"),
    ("matrix = { sites = 1.0 }", r"substrates\[0\].matrix.kon"),
    ("matrix = { sites = -1.0, kon = 1.0 }", r"substrates\[0\].matrix.sites"),
    ("[[substrates.regions]]\nshape = 'box'\nlo = [0, 0]\nhi = [5, 8]\nsites = 1.0", "has no matrix"),
    ("[[substrates.regions]]\nshape = 'box'\nlo = [0, 0]\nhi = [5, 8]\ndifusion = 1.0", "diffusion"),
    ("production = -1.0", r"substrates\[0\].production"),
    ("velocity = 1.0", r"substrates\[0\].velocity: must be a list of 2 numbers"),
    ("[[substrates.regions]]\nshape = 'box'\nlo = [0, 0]\nhi = [5, 8]", r"regions\[0\]: sets nothing"),
])
def test_scenario_medium_errors_name_the_key(tmp_path, extra, match):
    from jaxcell.scenario import ScenarioError

    with pytest.raises(ScenarioError, match=match):
        _scenario(tmp_path, extra)


def test_matrix_morphogen_scenario_reaches_the_matrix_free_length(tmp_path):
    """24 h of the built-in: the free Dpp decays with √(D/k) beyond the stripe; the figure is written."""
    from jaxcell.io import TISSUE_FIGURE, run_scenario
    from jaxcell.scenario import load

    sc = load("matrix_morphogen")
    s = sc.model.substrates[0]
    summary = run_scenario(sc, tmp_path / "out", progress=False, log=lambda *_: None)
    assert (tmp_path / "out" / TISSUE_FIGURE).stat().st_size > 10_000
    import xarray as xr

    ds = xr.open_zarr(tmp_path / "out" / "fields.zarr")
    c = ds.concentration.isel(time=-1, substrate=0).values.mean(axis=1)
    lam = math.sqrt(float(s.diffusion) / float(s.decay))
    assert decay_length(sc.grid.centers(0), c, 20, 100) == pytest.approx(lam, rel=2e-2)
    assert float(ds.matrix.isel(time=-1).sum()) > float(ds.concentration.isel(time=-1).sum())
    assert summary["budget"]["Dpp"]["relative_residual"] < 1e-5


def test_chemokine_flow_scenario_is_skewed_downstream(tmp_path):
    from jaxcell.io import TISSUE_FIGURE, run_scenario
    from jaxcell.scenario import load

    sc = load("chemokine_flow", ["run.t_end=600", "run.save_every=300"])
    run_scenario(sc, tmp_path / "out", progress=False, log=lambda *_: None)
    assert (tmp_path / "out" / TISSUE_FIGURE).stat().st_size > 10_000
    import xarray as xr

    c = xr.open_zarr(tmp_path / "out" / "fields.zarr").concentration.isel(time=-1, substrate=0).values
    x = sc.grid.centers(0)
    row = c[:, c.shape[1] // 2]
    up, down = row[np.argmin(np.abs(x - 150.0))], row[np.argmin(np.abs(x - 450.0))]
    # 150 µm from the cluster's centre: e^{150/160} against e^{150/62} in 1D, about 5x
    assert down > 3 * up


# ---------------------------------------------------------------------------
# Sources inside the exponential integrator (spectral solver)


@pytest.mark.parametrize("dt", [600.0, 60.0, 5.0])
def test_spectral_point_source_is_exact_in_time_at_any_step(dt):
    """A secreting cell (constant point source) with decay in a closed 2D box: the spectral run equals the
    exact semi-discrete solution, built here mode by mode with scipy's DCT: ĉ(t) = e^{λt}ĉ0 + (e^{λt} − 1)/λ·ŝ."""
    from scipy.fft import dctn, idctn

    D, k, h, shape, T = 20.0, 1e-3, 5.0, (24, 16), 600.0
    g = jc.Grid(shape, h)
    pos = np.array([[37.0, 41.0]])
    cells = jc.Cells(position=pos, secretion=np.array([3.0]))
    m = jc.Model(g, jc.Substrate("s", D, k), solver="spectral")
    st, _ = jc.simulate(m, m.init(cells), T, dt)
    src = np.zeros(shape)
    src[int(37.0 // h), int(41.0 // h)] = 3.0 / g.voxel_volume
    lam = -k - sum(D * 4 / h**2 * np.sin(np.pi * np.arange(n) / (2 * n)).reshape(
        [-1 if a == i else 1 for a in range(2)]) ** 2 for i, n in enumerate(shape))
    s_hat = dctn(src, type=2, norm="ortho")
    exact = idctn(np.expm1(lam * T) / lam * s_hat, type=2, norm="ortho")
    np.testing.assert_allclose(np.asarray(st.fields[0]), exact, rtol=1e-9, atol=1e-12 * exact.max())
    b = jc.budget(st)
    assert float(b["secreted"][0]) == pytest.approx(3.0 * T, rel=1e-12)
    assert abs(float(b["residual"][0])) < 1e-10 * 3.0 * T

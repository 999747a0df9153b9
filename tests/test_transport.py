"""Transport core against independent oracles (docs/VERIFICATION.md), float64.

Every expected value here comes from a closed form (O1–O8), a discrete-exact
amplification factor derived from the scheme, or an independent NumPy
assembly of the finite-volume equations, never from jaxcell itself.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erfc, k0

import jaxcell as jc
from jaxcell.simulate import run_steps
from jaxcell.solvers.explicit import substeps
from jaxcell.steady import solve_linear

SOLVERS = jc.solvers.names()


def _rel(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(np.asarray(b))))


def _order(hs, errs):
    return np.diff(np.log(errs)) / np.diff(np.log(hs))


# ----------------------------------------------------------------------------- V1: 1D flux steady state (O2)

D1, K1, L1 = 0.1, 2.52e-4, 200.0
LAM1 = np.sqrt(D1 / K1)


def _v1_grid(m):
    n = int(round(L1 / (LAM1 / m)))
    return jc.Grid((n,), L1 / n)


def _v1_exact(x, j=1.0):
    return j * LAM1 / D1 * np.cosh((L1 - x) / LAM1) / np.sinh(L1 / LAM1)


def _v1_model(grid, theta=0.5):
    return jc.Model(grid, [jc.Substrate("O2", D1, K1, boundary={"x-": jc.Flux(1.0)})], theta=theta)


def test_v1_steady_state_second_order():
    """O2 with flux in at x-, no-flux at x+: error ≤ 0.5(Δx/λ)², order 2.0 ± 0.1 for Δx = λ/10…λ/80."""
    hs, errs = [], []
    for m in (10, 20, 40, 80):
        grid = _v1_grid(m)
        c = np.asarray(jc.steady_state(_v1_model(grid)))[0]
        err = np.max(np.abs(c / _v1_exact(grid.centers(0)) - 1))
        h = grid.spacing[0]
        assert err <= 0.5 * (h / LAM1) ** 2, (m, err)
        hs.append(h)
        errs.append(err)
    order = _order(hs, errs)
    assert np.all(np.abs(order - 2.0) <= 0.1), order
    # mass ∫c dx = j/k (O2) to the same order
    np.testing.assert_allclose(np.sum(c) * h, 1.0 / K1, rtol=1e-9)


def test_v1_long_implicit_run_reaches_the_same_steady_state():
    """A long θ=1 implicit run from rest lands on steady_state (dt-independent) and on O2 at order 2."""
    hs, errs = [], []
    for m in (10, 20):
        grid = _v1_grid(m)
        model = _v1_model(grid, theta=1.0)
        # 300 steps of 500 s: the slowest mode decays by (1 + kΔt)^-300 ≈ 4e-16
        state, _ = jc.simulate(model, model.init(), t_end=150000.0, dt=500.0)
        c = np.asarray(state.fields[0])
        np.testing.assert_allclose(c, np.asarray(jc.steady_state(model))[0], rtol=1e-10)
        err = np.max(np.abs(c / _v1_exact(grid.centers(0)) - 1))
        assert err <= 0.5 * (grid.spacing[0] / LAM1) ** 2
        hs.append(grid.spacing[0])
        errs.append(err)
    assert np.all(np.abs(_order(hs, errs) - 2.0) <= 0.1)


# ----------------------------------------------------------------------------- V2: conservation and budgets


def _v2_model(solver, theta=0.5):
    """Three substrates: pure diffusion no-flux, pure diffusion periodic, no-flux with decay + secretion."""
    grid = jc.Grid((8, 6), 2.0)
    subs = [jc.Substrate("noflux", 5.0, 0.0), jc.Substrate("periodic", 5.0, 0.0, boundary={"x": jc.Periodic(),
                                                                                            "y": jc.Periodic()}),
            jc.Substrate("decay", 5.0, 0.01)]
    return jc.Model(grid, subs, solver=solver, theta=theta)


V2_CASES = [("implicit", 1.0), ("implicit", 0.5), ("lod", 0.5), ("explicit", 0.5), ("spectral", 0.5)]


@pytest.mark.parametrize("solver,theta", V2_CASES)
def test_v2_mass_conservation_and_per_step_mass_law(solver, theta):
    """1e4 steps: pure diffusion keeps its mass to 1e-12 (no-flux and periodic); with decay k and
    secretion S (amount/s) each step obeys the scheme's mass law to 1e-12:
    implicit θ=1 M' = (M + ΔtS)/(1 + kΔt); implicit θ=1/2 M'(1 + kΔt/2) = M(1 − kΔt/2) + ΔtS;
    lod M' = M/(1 + kΔt/2)² + ΔtS (2D: k/2 per sweep, then secretion); explicit (n sub-steps of
    h = Δt/n, decay and secretion implicit in each) M_{j+1} = (M_j + hS)/(1 + kh);
    spectral (secretion integrated exactly with the transport) M' = e^{−kΔt}M + (1 − e^{−kΔt})S/k."""
    model = _v2_model(solver, theta)
    grid = model.grid
    rng = np.random.default_rng(1)
    f0 = rng.uniform(0.0, 1.0, (3,) + grid.shape)
    q = np.array([[0.0, 0.0, 0.7], [0.0, 0.0, 0.4]])
    cells = jc.Cells([[3.0, 3.0], [13.0, 9.0]], secretion=q)
    dt, n = 0.3, 10000
    state, traj = jc.simulate(model, model.init(cells, fields=f0), t_end=n * dt, dt=dt, save_every=dt)
    vol = grid.voxel_volume
    mass = np.asarray(traj.fields).reshape(n + 1, 3, -1).sum(-1) * vol
    m0 = f0.reshape(3, -1).sum(-1) * vol
    np.testing.assert_allclose(mass[0], m0, rtol=1e-15)
    for s in (0, 1):
        drift = np.max(np.abs(mass[:, s] / m0[s] - 1))
        assert drift <= 1e-12, (s, drift)
    k, S = 0.01, q[:, 2].sum()
    M = mass[:-1, 2]
    if solver == "implicit" and theta == 1.0:
        expect = (M + dt * S) / (1 + k * dt)
    elif solver == "implicit":
        expect = (M * (1 - k * dt / 2) + dt * S) / (1 + k * dt / 2)
    elif solver == "lod":
        expect = M / (1 + k * dt / 2) ** 2 + dt * S
    elif solver == "explicit":
        nsub = substeps(grid, 5.0, dt)
        expect = M
        for _ in range(nsub):
            expect = (expect + dt / nsub * S) / (1 + k * dt / nsub)
    else:
        expect = np.exp(-k * dt) * M - np.expm1(-k * dt) / k * S
    np.testing.assert_allclose(mass[1:, 2], expect, rtol=1e-12, atol=0)
    b = jc.budget(state)
    # totals are sums of 1e4 per-step amounts: round-off ≈ n·ε·scale ≈ 2e-12·scale
    scale = np.maximum(np.asarray(b["initial"]), np.asarray(b["fields"])) + np.asarray(b["secreted"])
    assert np.all(np.abs(np.asarray(b["residual"])) <= 2e-12 * scale), b["residual"]
    np.testing.assert_allclose(np.asarray(b["secreted"]), [0.0, 0.0, n * dt * S], rtol=1e-12)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.filterwarnings("ignore:solver=.spectral. splits cell uptake")  # accuracy is not tested here
def test_v2_budget_closes_with_faces_held_voxels_and_cells(solver):
    """Flux + Dirichlet faces, interior held voxels, secretion and uptake: residual at round-off."""
    grid = jc.Grid((12, 10), 5.0)
    rng = np.random.default_rng(0)
    cells = jc.Cells(rng.uniform(0, 50, (5, 2)), secretion=rng.uniform(0, 3, 5), uptake=rng.uniform(0, 20, 5))
    if solver == "spectral":  # no Dirichlet, no held voxels: flux faces and a periodic axis
        bnd = {"x-": jc.Flux(0.3), "x+": jc.Flux(0.1), "y": jc.Periodic()}
        kw = {}
    else:
        bnd = {"x-": jc.Flux(0.3), "y+": jc.Dirichlet(0.5), "y-": jc.Dirichlet(0.0)}
        mask = np.zeros(grid.shape, bool)
        mask[5:7, 4] = True
        kw = {"dirichlet_mask": mask, "dirichlet_value": 0.7}
    model = jc.Model(grid, [jc.Substrate("s", 10.0, 0.01, boundary=bnd)], solver=solver, **kw)
    state = model.init(cells, fields=rng.uniform(0, 1, (1,) + grid.shape))
    state, _ = jc.simulate(model, state, t_end=50.0, dt=0.4)
    b = {k: float(v[0]) for k, v in jc.budget(state).items()}
    assert b["inflow"] > 0 and b["uptake"] > 0 and b["decayed"] > 0 and b["secreted"] > 0
    if solver != "spectral":
        assert b["outflow"] > 0
    scale = max(b["initial"], b["fields"], b["inflow"], b["outflow"], b["secreted"])
    assert abs(b["residual"]) <= 1e-13 * scale, b


# ----------------------------------------------------------------------------- V5: Gaussian pulse (O7)


@pytest.mark.parametrize("solver,ndim", [("implicit", 1), ("implicit", 2), ("implicit", 3)])
def test_v5_gaussian_pulse_variance_and_mass(solver, ndim):
    """σ0 = 3 µm, D = 5, k = 0.01, 100 µm box: variance per axis grows at 2D (±1%), mass ∝ e^{-kt}."""
    D, k, sigma0 = 5.0, 0.01, 3.0
    h = 1.0 if ndim == 1 else 2.0
    grid = jc.Grid((int(100 / h),) * ndim, h)
    X = grid.mesh()
    r2 = sum((x - 50.0) ** 2 for x in X)
    f0 = np.exp(-r2 / (2 * sigma0**2)) / (2 * np.pi * sigma0**2) ** (ndim / 2)
    model = jc.Model(grid, [jc.Substrate("s", D, k)], solver=solver)
    dt, t_end = 0.25, 20.0
    _, traj = jc.simulate(model, model.init(fields=f0[None]), t_end=t_end, dt=dt, save_every=4.0)
    t = np.asarray(traj.times)
    f = np.asarray(traj.fields[:, 0])
    mass = f.reshape(len(t), -1).sum(-1)
    # Crank–Nicolson mass law (1 − kΔt/2)/(1 + kΔt/2) per step: e^{-kt} to O((kΔt)³) per step
    np.testing.assert_allclose(mass / mass[0], ((1 - k * dt / 2) / (1 + k * dt / 2)) ** (t / dt), rtol=1e-12)
    np.testing.assert_allclose(mass / mass[0], np.exp(-k * t), rtol=1e-6)
    for a in range(ndim):
        w = f.reshape(len(t), -1)
        xa = X[a].reshape(-1)
        mean = (w * xa).sum(-1) / mass
        var = (w * (xa[None] - mean[:, None]) ** 2).sum(-1) / mass
        slope = np.polyfit(t, var, 1)[0]
        assert abs(slope / (2 * D) - 1) <= 0.01, (a, slope)
        np.testing.assert_allclose(var - var[0], 2 * D * t, rtol=0.01, atol=1e-12)


# ----------------------------------------------------------------------------- V6 / O8: single-mode amplification


def _mode(grid, m, periodic):
    """A cosine eigenmode of the discrete Laplacian and its per-axis eigenvalues (µm⁻², D = 1)."""
    X = grid.mesh()
    mode = np.ones(grid.shape)
    ell = []
    for a in range(grid.ndim):
        n, h = grid.shape[a], grid.spacing[a]
        if periodic:
            kappa = 2 * np.pi * m[a] / (n * h)
            mode = mode * np.cos(kappa * (X[a] - grid.origin[a]))
            ell.append(-4 / h**2 * np.sin(kappa * h / 2) ** 2)
        else:  # DCT-II mode of the no-flux operator
            mode = mode * np.cos(np.pi * m[a] * ((X[a] - grid.origin[a]) / h) / n)
            ell.append(-4 / h**2 * np.sin(np.pi * m[a] / (2 * n)) ** 2)
    return mode, np.array(ell)


def _gain(solver, z_axes, z0, theta, n_sub=1):
    """Per-step factor of one mode: z_axes = Δt μ_a (per axis), z0 = −Δt k."""
    z_axes = np.asarray(z_axes, float)
    zt = z0 + z_axes.sum()
    if solver == "implicit":
        # Douglas in delta form with the reaction as its own diagonal operator:
        # Y0 = c + Δt(A c), (1 − θz_0)(Y'−c) = Y0 − c, (1 − θz_a) δ_a = δ_{a−1}  ⇒
        return 1 + zt / ((1 - theta * z0) * np.prod(1 - theta * z_axes))
    if solver == "lod":
        nd = len(z_axes)
        return np.prod(1 / (1 - (z_axes + z0 / nd)))
    if solver == "explicit":  # FTCS diffusion, backward-Euler decay, per sub-step
        return ((1 + z_axes.sum() / n_sub) / (1 - z0 / n_sub)) ** n_sub
    return np.exp(zt)


V6_CASES = ([(s, (16, 12), (7, 5), True, 0.5) for s in SOLVERS]
            + [("implicit", (16, 12), (7, 5), True, 1.0), ("implicit", (6, 8, 10), (1, 3, 4), True, 0.5),
               ("spectral", (16, 12), (5, 9), False, 0.5)])


@pytest.mark.parametrize("solver,shape,m,periodic,theta", V6_CASES)
def test_v6_single_mode_amplification_is_discrete_exact(solver, shape, m, periodic, theta):
    """O8: c = A + cos-mode goes to A·G(0) + G(μ)·mode after one step, ≤ 1e-12; FTCS just under its limit."""
    D, k = 5.0, 0.01
    grid = jc.Grid(shape, 2.0, origin=-3.0)
    bnd = {a: jc.Periodic() for a in "xyz"[: grid.ndim]} if periodic else {}
    model = jc.Model(grid, [jc.Substrate("s", D, k, boundary=bnd)], solver=solver, theta=theta)
    mode, ell = _mode(grid, m, periodic)
    if solver == "explicit":
        dt = 0.999 * 2 / (4 * D * sum(1 / h**2 for h in grid.spacing))
        assert substeps(grid, D, dt) == 1
    else:
        dt = 7.3
    A = 2.0
    state, _ = jc.simulate(model, model.init(fields=(A + mode)[None]), t_end=dt, dt=dt)
    G0 = _gain(solver, np.zeros(grid.ndim), -dt * k, theta)
    G = _gain(solver, dt * D * ell, -dt * k, theta)
    if solver == "explicit":
        assert G < -0.85  # a near-Nyquist mode, just inside |G| ≤ 1
    expect = A * G0 + G * mode
    assert _rel(state.fields[0], expect) <= 1e-12


def test_v6_ftcs_over_its_limit_is_substepped_and_never_nan():
    """dt 5× the FTCS limit: n = substeps(...) sub-steps give ((1 + Δtμ/n)/(1 + Δtk/n))ⁿ; 300 steps stay finite."""
    D, k = 5.0, 0.01
    grid = jc.Grid((16, 12), 2.0)
    model = jc.Model(grid, [jc.Substrate("s", D, k, boundary={"x": jc.Periodic(), "y": jc.Periodic()})],
                     solver="explicit")
    limit = 2 / (4 * D * (2 / 4.0))
    dt = 5 * limit
    n = substeps(grid, D, dt)
    assert n == 5
    assert dt / n * (4 * D * (2 / 4.0)) <= 2
    mode, ell = _mode(grid, (8, 6), True)  # Nyquist mode: the one FTCS blows up first
    _, traj = jc.simulate(model, model.init(fields=(2.0 + mode)[None]), t_end=300 * dt, dt=dt, save_every=dt)
    G0 = _gain("explicit", [0, 0], -dt * k, 0.5, n)
    G = _gain("explicit", dt * D * ell, -dt * k, 0.5, n)
    assert _rel(traj.fields[1, 0], 2.0 * G0 + G * mode) <= 1e-12
    f = np.asarray(traj.fields)
    assert np.all(np.isfinite(f)) and np.max(np.abs(f)) <= 2.0 + 1e-12


def test_v6_explicit_with_traced_diffusion_needs_a_bound():
    """A traced D under solver='explicit' without max_diffusion is refused with a clear ValueError."""
    grid = jc.Grid((8,), 2.0)

    def loss(D):
        model = jc.Model(grid, [jc.Substrate("s", D, 0.01)], solver="explicit")
        state, _ = jc.simulate(model, model.init(fields=jnp.ones((1, 8))), t_end=1.0, dt=0.5)
        return jnp.sum(state.fields)

    with pytest.raises(ValueError, match="max_diffusion"):
        jax.grad(loss)(1.0)


# ----------------------------------------------------------------------------- V8 / O5, O6: point sources


def _images(X, x0, L, f, reps=2):
    """Σ over mirror images (2aL ± x0 per axis) of f(r): a point source in a no-flux box."""
    ndim = len(X)
    per_axis = [[2 * a * L[i] + s * x0[i] for a in range(-reps, reps + 1) for s in (1, -1)] for i in range(ndim)]
    total = np.zeros_like(X[0])
    for src in np.stack(np.meshgrid(*per_axis, indexing="ij"), -1).reshape(-1, ndim):
        r = np.sqrt(sum((X[i] - src[i]) ** 2 for i in range(ndim)))
        total = total + f(np.maximum(r, 1e-12))
    return total


def test_v8_2d_point_source_matches_bessel_k0():
    """O5: q/(2πD) K0(r/λ), D = 10, k = 0.01 (λ = 31.6 µm), Δx = 2: ≤ 3% at r ≥ 4Δx, ≤ 1% at r ≥ 8Δx."""
    D, k, q, h, n = 10.0, 0.01, 2.0, 2.0, 48
    lam = np.sqrt(D / k)
    grid = jc.Grid((n, n), h)
    x0 = np.array([(n // 2 + 0.5) * h] * 2)
    model = jc.Model(grid, [jc.Substrate("s", D, k)])
    c = np.asarray(jc.steady_state(model, jc.Cells(x0[None], secretion=q)))[0]  # amount/µm² (per unit depth)
    X = grid.mesh()
    exact = _images(X, x0, grid.extent, lambda r: q / (2 * np.pi * D) * k0(r / lam), reps=3)
    r = np.sqrt(sum((x - c0) ** 2 for x, c0 in zip(X, x0)))
    err = np.abs(c / exact - 1)
    assert err[r >= 4 * h - 1e-9].max() <= 0.03
    assert err[r >= 8 * h - 1e-9].max() <= 0.01
    # the source voxel carries what K0 predicts for a voxel-averaged source only roughly; sanity check
    np.testing.assert_allclose(c.sum() * h * h, q / k, rtol=1e-10)


def _o6_setup():
    D, k, q, h, n = 10.0, 0.01, 1.0, 2.5, 24
    grid = jc.Grid((n,) * 3, h)
    x0 = np.array([(n // 2 + 0.5) * h] * 3)
    model = jc.Model(grid, [jc.Substrate("s", D, k)])
    cells = jc.Cells(x0[None], secretion=q)
    X = grid.mesh()
    r = np.sqrt(sum((x - c0) ** 2 for x, c0 in zip(X, x0)))
    return D, k, q, h, grid, x0, model, cells, X, r


def test_o6_3d_point_source_steady_state():
    """O6 steady: q e^{-r/λ}/(4πDr) with mirror images: ≤ 3% at r ≥ 4Δx, ≤ 1% at r ≥ 8Δx."""
    D, k, q, h, grid, x0, model, cells, X, r = _o6_setup()
    lam = np.sqrt(D / k)
    c = np.asarray(jc.steady_state(model, cells))[0]
    exact = _images(X, x0, grid.extent, lambda s: q * np.exp(-s / lam) / (4 * np.pi * D * s))
    err = np.abs(c / exact - 1)
    assert err[r >= 4 * h - 1e-9].max() <= 0.03
    assert err[r >= 8 * h - 1e-9].max() <= 0.01


def test_o6_3d_point_source_from_rest_with_the_implicit_solver():
    """O6 transient, implicit solver, t = 10 s and 40 s: ≤ 5% at 4Δx ≤ r ≤ 6Δx (spatial error, not Δt)."""
    D, k, q, h, grid, x0, model, cells, X, r = _o6_setup()
    lam = np.sqrt(D / k)
    _, traj = jc.simulate(model, model.init(cells), t_end=40.0, dt=0.5, save_every=10.0)
    near = (r >= 4 * h - 1e-9) & (r <= 6 * h + 1e-9)
    for i, t in enumerate(np.asarray(traj.times)):
        if t == 0:
            continue

        def from_rest(s, t=t):
            a, b = s / np.sqrt(4 * D * t), np.sqrt(k * t)
            return q / (8 * np.pi * D * s) * (np.exp(-s / lam) * erfc(a - b) + np.exp(s / lam) * erfc(a + b))

        exact = _images(X, x0, grid.extent, from_rest)
        err = np.abs(np.asarray(traj.fields[i, 0]) / exact - 1)
        assert err[near].max() <= 0.05, (t, err[near].max())


def test_implicit_steady_state_is_a_fixed_point_for_every_dt():
    """Douglas ADI in delta form: steady_state (cells, flux face) is a fixed point for any Δt."""
    grid = jc.Grid((20, 20), 2.5)
    cells = jc.Cells([[25.0, 25.0]], secretion=1.0, uptake=5.0)
    sub = jc.Substrate("s", 10.0, 0.01, boundary={"x-": jc.Flux(0.02)})
    c_ss = jc.steady_state(jc.Model(grid, [sub]), cells)
    for dt in (0.05, 50.0):
        model = jc.Model(grid, [sub], solver="implicit", theta=0.5 if dt < 1 else 1.0)
        state, _ = jc.simulate(model, model.init(cells, fields=c_ss), t_end=5 * dt, dt=dt)
        assert _rel(state.fields, c_ss) <= 1e-10, dt


# ----------------------------------------------------------------------------- Dirichlet, held voxels, periodic


def test_dirichlet_faces_1d_analytic():
    """Dirichlet at both faces: c = [a sinh((L−x)/λ) + b sinh(x/λ)]/sinh(L/λ); Dirichlet + no-flux:
    c = a cosh((L−x)/λ)/cosh(L/λ); values held at the faces themselves; ≤ 0.5(Δx/λ)², second order."""
    D, k, L, a, b = 10.0, 0.01, 100.0, 1.0, 0.5
    lam = np.sqrt(D / k)
    subs = [jc.Substrate("both", D, k, boundary={"x-": jc.Dirichlet(a), "x+": jc.Dirichlet(b)}),
            jc.Substrate("cosh", D, k, boundary={"x-": jc.Dirichlet(a)})]
    exact = [lambda x: (a * np.sinh((L - x) / lam) + b * np.sinh(x / lam)) / np.sinh(L / lam),
             lambda x: a * np.cosh((L - x) / lam) / np.cosh(L / lam)]
    hs, errs = [], []
    for n in (10, 20, 40):
        grid = jc.Grid((n,), L / n)
        model = jc.Model(grid, subs, theta=1.0)
        c = np.asarray(jc.steady_state(model))
        x = grid.centers(0)
        hs.append(L / n)
        errs.append([np.max(np.abs(c[i] / exact[i](x) - 1)) for i in range(2)])
    errs = np.array(errs)
    assert np.all(errs <= 0.5 * (np.array(hs)[:, None] / lam) ** 2), errs
    for i in range(2):
        assert np.all(np.abs(_order(hs, errs[:, i]) - 2.0) <= 0.1), errs
    # a long θ=1 implicit run (backward Euler in 1D) lands on the same profiles
    state, _ = jc.simulate(model, model.init(), t_end=20000.0, dt=100.0)
    np.testing.assert_allclose(np.asarray(state.fields), c, rtol=1e-10)


def _fv_reference(shape, h, D, k, mask, hold, src, clear, faces):
    """Independent dense assembly of D∇²c − (k + clear)c + src = 0 on cell-centred finite volumes.

    faces: per axis (lo, hi), each ("flux", j) or ("dirichlet", v); held voxels are identity rows.
    """
    n = int(np.prod(shape))
    A = np.zeros((n, n))
    rhs = np.zeros(n)
    idx = np.arange(n).reshape(shape)
    for p in np.ndindex(*shape):
        i = idx[p]
        if mask[p]:
            A[i, i], rhs[i] = 1.0, hold
            continue
        A[i, i] += k + clear[p]
        rhs[i] += src[p]
        for ax in range(len(shape)):
            for step, (kind, v) in ((-1, faces[ax][0]), (1, faces[ax][1])):
                q = list(p)
                q[ax] += step
                if 0 <= q[ax] < shape[ax]:
                    j = idx[tuple(q)]
                    A[i, i] += D / h**2
                    if mask[tuple(q)]:
                        rhs[i] += D / h**2 * hold
                    else:
                        A[i, j] -= D / h**2
                elif kind == "flux":
                    rhs[i] += v / h
                else:
                    A[i, i] += 2 * D / h**2
                    rhs[i] += 2 * D / h**2 * v
    return np.linalg.solve(A, rhs).reshape(shape)


def test_interior_dirichlet_voxels_match_an_independent_numpy_solution():
    """Held interior voxels (dirichlet_mask/value) with faces and cells vs a dense NumPy FV solve."""
    shape, h, D, k, hold = (12, 10), 5.0, 10.0, 0.01, 0.7
    grid = jc.Grid(shape, h)
    mask = np.zeros(shape, bool)
    mask[5:7, 4] = True
    mask[2, 8] = True
    pos = np.array([[12.0, 12.0], [47.0, 31.0], [33.0, 7.0]])
    sec, upt = np.array([1.0, 0.0, 2.0]), np.array([0.0, 30.0, 10.0])
    bnd = {"x-": jc.Flux(0.3), "y+": jc.Dirichlet(0.2)}
    model = jc.Model(grid, [jc.Substrate("s", D, k, boundary=bnd)], dirichlet_mask=mask, dirichlet_value=hold,
                     theta=1.0)
    cells = jc.Cells(pos, secretion=sec, uptake=upt)
    vol = h * h
    src, clear = np.zeros(shape), np.zeros(shape)
    for p, s, u in zip(pos, sec, upt):
        i = tuple((p // h).astype(int))
        src[i] += s / vol
        clear[i] += u / vol
    ref = _fv_reference(shape, h, D, k, mask, hold, src, clear,
                        [(("flux", 0.3), ("flux", 0.0)), (("flux", 0.0), ("dirichlet", 0.2))])
    c = np.asarray(jc.steady_state(model, cells))[0]
    assert _rel(c, ref) <= 1e-9
    # Douglas damps modes stiff along two axes slowly when Δt ≫ Δx²/D: Δt = 5 s, 600 steps
    state, _ = jc.simulate(model, model.init(cells), t_end=3000.0, dt=5.0)
    assert _rel(state.fields[0], ref) <= 1e-9
    assert np.all(np.asarray(state.fields[0])[mask] == hold)


def test_interior_dirichlet_voxel_1d_analytic():
    """A held voxel at x_h, no-flux at L: c = v cosh((L−x)/λ)/cosh((L−x_h)/λ) for x > x_h, second order."""
    D, k, v, L = 10.0, 0.01, 1.0, 100.0
    lam = np.sqrt(D / k)
    hs, errs = [], []
    for n in (20, 40):
        grid = jc.Grid((n,), L / n)
        mask = np.zeros(n, bool)
        mask[n // 5] = True
        xh = grid.centers(0)[n // 5]
        model = jc.Model(grid, [jc.Substrate("s", D, k)], dirichlet_mask=mask, dirichlet_value=v)
        c = np.asarray(jc.steady_state(model))[0]
        x = grid.centers(0)
        right = x > xh
        ex = v * np.cosh((L - x[right]) / lam) / np.cosh((L - xh) / lam)
        hs.append(L / n)
        errs.append(np.max(np.abs(c[right] / ex - 1)))
    assert np.all(np.array(errs) <= 0.5 * (np.array(hs) / lam) ** 2), errs
    assert np.all(np.abs(_order(hs, errs) - 2.0) <= 0.1), errs


def test_periodic_point_source_1d():
    """Periodic ring of length L, source q at x0: c = qλ/(2D)·cosh((L/2 − |x−x0|)/λ)/sinh(L/(2λ)), order 2."""
    D, k, q, L = 10.0, 0.01, 1.0, 200.0
    lam = np.sqrt(D / k)
    hs, errs = [], []
    for n in (25, 50, 100):
        h = L / n
        grid = jc.Grid((n,), h)
        x0 = (n // 3 + 0.5) * h
        model = jc.Model(grid, [jc.Substrate("s", D, k, boundary={"x": jc.Periodic()})], theta=1.0)
        cells = jc.Cells([[x0]], secretion=q)
        c = np.asarray(jc.steady_state(model, cells))[0]
        d = np.abs(grid.centers(0) - x0)
        d = np.minimum(d, L - d)
        ex = q * lam / (2 * D) * np.cosh((L / 2 - d) / lam) / np.sinh(L / (2 * lam))
        far = d >= 16.0 - 1e-9  # a fixed distance (2 voxels on the coarsest grid)
        hs.append(h)
        errs.append(np.max(np.abs(c[far] / ex[far] - 1)))
        assert errs[-1] <= 0.5 * (h / lam) ** 2
    assert np.all(np.abs(_order(hs, errs) - 2.0) <= 0.1), errs
    state, _ = jc.simulate(model, model.init(cells), t_end=4000.0, dt=20.0)
    np.testing.assert_allclose(np.asarray(state.fields[0]), c, rtol=1e-10)


# ----------------------------------------------------------------------------- gradients and recompilation

GRID_G = jc.Grid((20,), 5.0)
X_OBS = np.array([[3.0], [21.0], [48.0], [77.0]])
SRC = jc.Cells([[12.0]], secretion=2.0, uptake=3.0)


def _sim_loss(solver, **model_kw):
    def loss(p):
        sub = jc.Substrate("s", p[0], p[1], boundary={"x-": jc.Flux(0.05)})
        model = jc.Model(GRID_G, [sub], solver=solver, **model_kw)
        _, traj = jc.simulate(model, model.init(SRC), t_end=60.0, dt=2.0, save_at=[20.0, 60.0])
        return jnp.sum(GRID_G.sample(traj.fields[:, 0], X_OBS) ** 2)

    return loss


def _steady_loss(dirichlet):
    def loss(p):
        bnd = {"x-": jc.Flux(0.05)}
        if dirichlet:
            bnd["x+"] = jc.Dirichlet(0.01)
        model = jc.Model(GRID_G, [jc.Substrate("s", p[0], p[1], boundary=bnd)])
        return jnp.sum(GRID_G.sample(jc.steady_state(model, SRC)[0], X_OBS) ** 2)

    return loss


GRAD_CASES = {
    "implicit": lambda: _sim_loss("implicit"),
    "explicit": lambda: _sim_loss("explicit", max_diffusion=20.0),  # API.md: max_diffusion alone suffices
    "steady_uniform": lambda: _steady_loss(False),
    "steady_cg": lambda: _steady_loss(True),
}


@pytest.mark.parametrize("case", list(GRAD_CASES))
def test_gradient_wrt_diffusion_and_decay_matches_central_differences(case):
    """d loss/d(D, k) by jax.grad vs central differences (float64), rel ≤ 1e-4.

    Both go through one jitted value_and_grad, so D and k are traced in both (the explicit solver's
    sub-step count then comes from max_diffusion in both, not from the concrete D)."""
    vg = jax.jit(jax.value_and_grad(GRAD_CASES[case]()))
    p = np.array([10.0, 0.01])
    g = np.asarray(vg(jnp.asarray(p))[1])
    for i in range(2):
        e = np.zeros(2)
        e[i] = 1e-4 * p[i]
        fd = (float(vg(jnp.asarray(p + e))[0]) - float(vg(jnp.asarray(p - e))[0])) / (2 * e[i])
        assert abs(g[i] - fd) <= 1e-4 * abs(fd), (case, i, g[i], fd)


def test_second_simulate_with_new_values_does_not_recompile():
    """New D, k, face flux and secretion values reuse the compiled run (parameters are array leaves)."""
    grid = jc.Grid((10, 8), 5.0)

    def go(D, k, j, q, solver="implicit"):
        model = jc.Model(grid, [jc.Substrate("s", D, k, boundary={"x-": jc.Flux(j)})], solver=solver)
        state, traj = jc.simulate(model, model.init(jc.Cells([[12.0, 13.0]], secretion=q)), t_end=10.0, dt=1.0,
                                  save_every=5.0)
        return np.asarray(traj.fields)

    a = go(10.0, 0.01, 0.1, 1.0)
    before = run_steps._cache_size()
    b = go(3.0, 0.2, 0.5, 4.0)
    assert run_steps._cache_size() == before
    assert not np.allclose(a, b)
    go(1.0, 0.01, 0.1, 1.0, solver="explicit")  # D = 1: one sub-step either way
    before = run_steps._cache_size()
    go(0.5, 0.02, 0.3, 2.0, solver="explicit")
    assert run_steps._cache_size() == before
    model = jc.Model(grid, [jc.Substrate("s", 10.0, 0.01)])
    jc.steady_state(model, jc.Cells([[12.0, 13.0]], secretion=1.0))
    before = solve_linear._cache_size()
    jc.steady_state(jc.Model(grid, [jc.Substrate("s", 3.0, 0.1)]), jc.Cells([[22.0, 3.0]], secretion=2.0))
    assert solve_linear._cache_size() == before


# ----------------------------------------------------------------------------- grid.sample


@pytest.mark.parametrize("make,match", [
    (lambda: jc.Substrate("s", -1.0), r"diffusion must be >= 0"),
    (lambda: jc.Substrate("s", np.nan), r"diffusion must be finite"),
    (lambda: jc.Substrate("s", 1.0, -0.1), r"decay must be >= 0"),
    (lambda: jc.Substrate("s", 1.0, np.inf), r"decay must be finite"),
    (lambda: jc.Substrate("s", 1.0, boundary={"w-": jc.Flux(1.0)}), r"unknown face 'w-'"),
    (lambda: jc.Substrate("s", 1.0, boundary={"x-": jc.Dirichlet(1.0), "x+": jc.Periodic()}), "Periodic"),
    (lambda: jc.Substrate("s", 1.0, boundary={"x": jc.Periodic(), "x-": jc.Flux(1.0)}), "given twice"),
    (lambda: jc.Substrate("s", 1.0, boundary={"x-": jc.Dirichlet(-1.0)}), "Dirichlet value must be >= 0"),
    (lambda: jc.Substrate("s", 1.0, boundary={"x-": jc.Flux(np.nan)}), "Flux value must be finite"),
    (lambda: jc.Substrate("s", 1.0, boundary={"x-": "open"}), "must be jc.Flux"),
    (lambda: jc.Model(jc.Grid((4,), 1.0), [jc.Substrate("s", 1.0, boundary={"y-": jc.Flux(1.0)})]), "valid faces"),
    (lambda: jc.Grid((4, 4), 0.0), r"spacing must be > 0"),
    (lambda: jc.Grid((4, 4), (1.0, -2.0)), r"spacing must be > 0"),
    (lambda: jc.Grid((4, 4), (1.0, 2.0, 3.0)), r"spacing has 3 entries"),
    (lambda: jc.Grid((4, 0), 1.0), r"shape must be 1 to 3 positive ints"),
    (lambda: jc.Grid(("a", 4), 1.0), r"shape must be a sequence of 1 to 3 ints"),
    (lambda: jc.Substrate("s", "10"), r"diffusion must be a number"),
    (lambda: jc.Response("A", "A", max=1.0, K=0.0, kind="concentration"), r"Response.K must be > 0"),
    (lambda: jc.budget(jc.Model(jc.Grid((4,), 1.0), [jc.Substrate("s", 1.0)])), r"budget\(state\) needs"),
    (lambda: jc.Model(jc.Grid((4,), 1.0), [jc.Substrate("s", 1.0)], solver="magic"), "solver must be one of"),
])
def test_bad_construction_raises_clear_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_run_inputs_raise_clear_errors():
    grid = jc.Grid((6,), 2.0)
    model = jc.Model(grid, [jc.Substrate("s", 1.0, 0.01)])
    state = model.init()
    with pytest.raises(ValueError, match=r"fields must have shape \(S, \*grid.shape\)"):
        model.init(fields=np.zeros((1, 5)))
    with pytest.raises(ValueError, match="fields must be >= 0.*concentrations are non-negative"):
        model.init(fields=-np.ones((1, 6)))
    with pytest.raises(ValueError, match="dt must be a finite number > 0"):
        jc.simulate(model, state, t_end=1.0, dt=0.0)
    with pytest.raises(ValueError, match="dt must be a finite number > 0"):
        jc.simulate(model, state, t_end=1.0, dt=-1.0)
    later, traj = jc.simulate(model, state, t_end=2.0, dt=1.0)
    assert traj.fields.shape == (0, 1, 6) and float(later.t) == 2.0  # no save argument: no frames
    with pytest.raises(ValueError, match=r"t_end must be a finite time >= the state's time 2.0"):
        jc.simulate(model, later, t_end=1.0, dt=1.0)
    # refused when the model is built, before anything runs
    with pytest.raises(ValueError, match="spectral.*Dirichlet"):
        jc.Model(grid, [jc.Substrate("s", 1.0, 0.01, boundary={"x+": jc.Dirichlet(1.0)})], solver="spectral")
    with pytest.raises(ValueError, match="spectral.*held voxels"):
        jc.Model(grid, [jc.Substrate("s", 1.0, 0.01)], solver="spectral", dirichlet_mask=np.eye(1, 6, 2, bool)[0])
    with pytest.raises(ValueError, match="held voxels.*periodic"):
        jc.Model(grid, [jc.Substrate("s", 1.0, boundary={"x": jc.Periodic()})],
                 dirichlet_mask=np.eye(1, 6, 2, bool)[0])
    with pytest.raises(ValueError, match="no steady state"):
        jc.steady_state(jc.Model(grid, [jc.Substrate("s", 1.0)]))
    with pytest.raises(ValueError, match="dirichlet_mask must have the grid shape"):
        jc.Model(grid, [jc.Substrate("s", 1.0)], dirichlet_mask=np.zeros(5, bool))


# ----------------------------------------------------------------------------- API.md examples (small sizes)


def test_api_examples_run_as_written():
    grid = jc.Grid(shape=(8, 8, 8), spacing=10.0)
    assert grid.extent == (80.0, 80.0, 80.0) and grid.origin == (0.0, 0.0, 0.0)
    il2 = jc.Substrate("IL-2", diffusion=10.0, decay=2.8e-5)
    dpp = jc.Substrate("Dpp", diffusion=0.1, decay=2.5e-4,
                       boundary={"x-": jc.Flux(1.0),
                                 "x+": jc.Dirichlet(0.0),
                                 "y": jc.Periodic()})
    rng = np.random.default_rng(0)
    xyz = rng.uniform(0.0, 80.0, (5, 3))
    q = np.full((5, 2), 10.0)
    u = np.full((5, 2), 100.0)
    cells = jc.Cells(position=xyz, secretion=q, uptake=u)
    model = jc.Model(grid, [il2, dpp], solver="implicit")
    state = model.init(cells)
    assert float(state.t) == 0.0
    state, traj = jc.simulate(model, state, t_end=360.0, dt=1.0, save_every=60.0)
    assert state.fields.shape == (2, 8, 8, 8)
    np.testing.assert_allclose(np.asarray(traj.times), np.arange(0.0, 361.0, 60.0))
    assert traj.fields.shape == (7, 2, 8, 8, 8)
    points = np.array([[0.0, 0.0, 0.0], [40.0, 40.0, 40.0], [80.0, 80.0, 80.0]])
    assert grid.sample(traj.fields, points).shape == (7, 2, 3)
    c_ss = jc.steady_state(model, cells)
    assert c_ss.shape == (2, 8, 8, 8)
    b = jc.budget(state)
    assert set(b) == {"initial", "secreted", "produced", "inflow", "outflow", "fields", "bound", "matrix",
                      "compartments", "internalised", "uptake", "decayed", "matrix_degraded", "cleared", "residual"}
    assert all(v.shape == (2,) for v in b.values())
    assert np.all(np.abs(np.asarray(b["residual"])) <= 1e-10 * np.asarray(b["secreted"] + b["inflow"]))


@pytest.mark.parametrize("solver", ["implicit", "lod"])
def test_long_axis_thomas_path_equals_dense_inverse(solver, monkeypatch):
    """Axes longer than DENSE_MAX use a shared-factor Thomas sweep: same numbers as the dense inverse."""
    import jaxcell.operators as dfn

    grid = jc.Grid((11, 7, 5), 2.0)  # a shape no other test compiles, so each path traces afresh
    sub = jc.Substrate("s", 3.0, 1e-2, boundary={"x-": jc.Dirichlet(1.0), "y+": jc.Flux(0.5)})
    rng = np.random.default_rng(5)
    cells = jc.Cells(rng.uniform(0, 1, (6, 3)) * np.array(grid.extent), secretion=1.0, uptake=2.0)
    model = jc.Model(grid, [sub], solver=solver)
    state = model.init(cells, fields=rng.uniform(0, 1, (1,) + grid.shape))
    dense, _ = jc.simulate(model, state, t_end=30.0, dt=3.0)
    monkeypatch.setattr(dfn, "DENSE_MAX", 1)
    jax.clear_caches()
    thomas, _ = jc.simulate(model, state, t_end=30.0, dt=3.0)
    jax.clear_caches()
    np.testing.assert_allclose(np.asarray(thomas.fields), np.asarray(dense.fields), rtol=1e-12, atol=1e-15)
    b = jc.budget(thomas)
    assert abs(float(b["residual"][0])) <= 1e-12 * float(b["initial"][0] + b["secreted"][0] + b["inflow"][0])


def test_inputs_are_checked_inside_jit_and_explicit_bounds_hold():
    """Literal inputs stay concrete under jit (fits jit predict), so checks and static bounds still apply."""
    grid = jc.Grid((20,), 1.0)

    @jax.jit
    def negative(x):
        return jc.Substrate("a", -1.0).diffusion + x

    with pytest.raises(ValueError, match="diffusion must be >= 0"):
        negative(1.0)

    @jax.jit
    def nan_cell(x):
        return jc.Cells([[np.nan]]).position.sum() + x

    with pytest.raises(ValueError, match="position"):
        nan_cell(1.0)

    def run(D):
        model = jc.Model(grid, [jc.Substrate("a", D, 0.01, boundary={"x-": jc.Flux(1.0)})], solver="explicit",
                         max_diffusion=50.0)
        state, _ = jc.simulate(model, model.init(), t_end=10.0, dt=1.0)
        return jnp.sum(state.fields)

    # the bound fixes the sub-step count, so eager and traced runs are the same scheme
    assert float(run(1.0)) == pytest.approx(float(jax.jit(run)(1.0)), rel=1e-14)
    with pytest.raises(ValueError, match="exceeds the explicit solver's bound"):
        run(500.0)
    with pytest.raises(Exception, match="exceeds max_diffusion"):
        jax.block_until_ready(jax.jit(run)(500.0))


def test_implicit_warns_when_it_undershoots():
    """A unit pulse at dt·D·Σ1/h² = 20 undershoots: the run says so; a smooth one at r = 0.5 stays silent."""
    import warnings

    grid = jc.Grid((15, 15), 1.0)
    model = jc.Model(grid, [jc.Substrate("a", 1.0)])
    pulse = np.zeros((1, 15, 15))
    pulse[0, 7, 7] = 1.0
    with pytest.warns(RuntimeWarning, match="undershoot"):
        _, traj = jc.simulate(model, model.init(fields=pulse), t_end=30.0, dt=10.0, save_every=10.0)
    assert float(traj.fields.min()) < 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        _, traj = jc.simulate(model, model.init(fields=pulse), t_end=2.0, dt=0.25, save_every=0.25)
    assert float(traj.fields.min()) >= 0


@pytest.mark.parametrize("solver", ["implicit", "lod", "explicit", "spectral"])
def test_runs_under_strict_promotion(solver):
    """No implicit rank or dtype promotion anywhere (equinox's strict test habit)."""
    grid = jc.Grid((8, 6), 5.0)
    faces = {"x-": jc.Flux(0.3)} if solver == "spectral" else {"x-": jc.Flux(0.3), "x+": jc.Dirichlet(0.2)}
    rec = jc.Receptors(total=100.0, kon=0.05, koff=1e-3, kint=1e-2)
    cells = jc.Cells(np.array([[12.0, 7.0], [30.0, 22.0]]), secretion=2.0, uptake=1.0, receptors=rec)
    with jax.numpy_dtype_promotion("strict"), jax.numpy_rank_promotion("raise"):
        model = jc.Model(grid, [jc.Substrate("a", 10.0, 0.01, boundary=faces)], solver=solver, coupling="linear")
        state, traj = jc.simulate(model, model.init(cells), t_end=20.0, dt=1.0, save_every=5.0)
        values = grid.sample(traj.fields, np.array([[0.0, 0.0], [40.0, 30.0]]))
        b = jc.budget(state)
    assert values.shape == (5, 1, 2)
    assert abs(float(b["residual"][0])) <= 1e-12 * float(b["secreted"][0] + b["inflow"][0])


def test_public_api_is_pinned():
    """The names users import (STYLE.md: a test pins __all__); extend deliberately, never rename."""
    assert sorted(jc.__all__) == sorted([
        "BatchFitResult", "Cells", "Compartment", "Dirichlet", "FitResult", "Flux", "Grid", "Leak", "Matrix",
        "Model", "Periodic", "Posterior", "Receptors",
        "Response", "Robin", "Rule", "Rules", "Scenario", "State", "Substrate", "Trajectory", "budget", "divide",
        "fit", "fit_batch", "load_scenario", "rules", "sample_posterior", "shard", "simulate", "solvers",
        "steady_state"])
    assert all(hasattr(jc, name) for name in jc.__all__)


def test_explicit_warns_on_a_suspicious_substep_count_and_refuses_a_hopeless_one():
    """D = 1e4 µm²/s on 1 µm voxels: 6000 FTCS sub-steps per step at dt = 0.1 s warn (a unit slip?);
    600 000 at dt = 10 s and 6e9 at dt = 1e5 s (hours per step, or an int32 overflow) are refused
    with the fix, before anything compiles."""
    model = jc.Model(jc.Grid((4, 4, 4), 1.0), jc.Substrate("A", 1e4, 0.0), solver="explicit")
    with pytest.warns(RuntimeWarning, match="6000 FTCS sub-steps per step"):
        jc.simulate(model, model.init(), t_end=0.0, dt=0.1)
    for dt in (10.0, 1e5):
        with pytest.raises(ValueError, match=r"sub-steps per step .* at most 100000\): use dt <= 1.67 s or "
                                             r"solver='implicit'"):
            jc.simulate(model, model.init(), t_end=dt, dt=dt)


def test_strings_and_empty_names_are_refused():
    model = jc.Model(jc.Grid((4,), 1.0), jc.Substrate("s", 1.0, 0.1))
    for kw in ({"t_end": "10", "dt": 1.0}, {"t_end": 10.0, "dt": "1"}):
        with pytest.raises(ValueError, match="must be a number of seconds, got '1"):
            jc.simulate(model, model.init(), **kw)
    with pytest.raises(ValueError, match="expected a number, got the string '5'"):
        jc.simulate(model, model.init(), t_end=10.0, dt=1.0, save_every="5")
    for name in ("", "  ", None):
        with pytest.raises(ValueError, match="Substrate name must be a non-empty string"):
            jc.Substrate(name, 1.0)


def test_implicit_names_an_overshooting_reaction_not_diffusion():
    """dt·k = 1000 at θ = 1/2: one step from rest gives 2× the steady value (factor −0.996); the
    warning names the reaction and the fixes; θ = 1 (L-stable) does not overshoot and is silent."""
    grid = jc.Grid((10,), 10.0)
    cells = jc.Cells([[55.0]], secretion=1.0)
    model = jc.Model(grid, [jc.Substrate("s", 10.0, 1000.0)])
    ss = float(np.max(np.asarray(jc.steady_state(model, cells))))
    with pytest.warns(RuntimeWarning, match=r"dt·\(decay \+ uptake/voxel volume\) = 1e\+03 > 2.*overshoots.*"
                                            r"theta=1.0") as rec:
        state, _ = jc.simulate(model, model.init(cells), t_end=1.0, dt=1.0)
    assert not any("dt·D·Σ1/h²" in str(w.message) for w in rec)
    assert float(np.max(np.asarray(state.fields))) > 1.8 * ss  # measured 1.82×
    import warnings

    stiff = jc.Model(grid, [jc.Substrate("s", 10.0, 1000.0)], theta=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        state, _ = jc.simulate(stiff, stiff.init(cells), t_end=1.0, dt=1.0)
    assert 0.8 * ss < float(np.max(np.asarray(state.fields))) <= ss  # approaches from below, no overshoot

"""Cells and paracrine exchange: binding closed forms, BioFVM formula, budgets, relays, gradients."""

import biofvm_reference as biofvm
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcell as jc


def _one_voxel(spacing: float = 1000.0) -> jc.Grid:
    return jc.Grid((1, 1, 1), spacing)


# ----------------------------------------------------------------------------- V9 binding closed forms


def test_v9a_binding_ligand_in_excess():
    """O9(a): C(t) = R_T L0/(K_D + L0)(1 − exp(−(kon L0 + koff)t)) in a well-mixed voxel."""
    grid = _one_voxel(1000.0)  # 1e9 µm³: 1e4 receptors deplete 1e-6 of the ligand
    L0, RT, kon, koff = 0.01, 1e4, 0.0515, 2.3e-4
    model = jc.Model(grid, [jc.Substrate("IL-2", 10.0)])
    cells = jc.Cells([[500.0, 500.0, 500.0]], receptors=jc.Receptors(total=RT, kon=kon, koff=koff))
    state = model.init(cells, fields=jnp.full((1, 1, 1, 1), L0))
    times = np.array([300.0, 1000.0, 3000.0, 10000.0])
    state, traj = jc.simulate(model, state, t_end=10000.0, dt=10.0, save_at=times, save_cells=True)
    kd = koff / kon
    exact = RT * L0 / (kd + L0) * (1 - np.exp(-(kon * L0 + koff) * times))
    got = np.asarray(traj.cells.receptors.bound[:, 0, 0])
    np.testing.assert_allclose(got, exact, rtol=1e-3)
    rec = state.cells.receptors
    total = rec.free + rec.bound + rec.internalised + rec.turned_over - rec.synthesised
    np.testing.assert_allclose(np.asarray(total), RT, rtol=1e-13)


def test_v9c_steady_receptors_with_trafficking():
    """O9(c): R_ss and C_ss with internalisation, turnover and synthesis at constant L (held voxel)."""
    grid = _one_voxel(1000.0)
    L, kon, koff, ke, kt, vs = 0.02, 0.0515, 2.3e-4, 1.1e-3, 4e-4, 2.0
    model = jc.Model(grid, [jc.Substrate("IL-2", 10.0)], dirichlet_mask=np.ones((1, 1, 1), bool),
                     dirichlet_value=L)
    rec = jc.Receptors(total=100.0, kon=kon, koff=koff, kint=ke, synthesis=vs, turnover=kt)
    state = model.init(jc.Cells([[500.0, 500.0, 500.0]], receptors=rec))
    state, _ = jc.simulate(model, state, t_end=4e4, dt=20.0)
    r_ss = vs * (koff + ke) / (kt * (koff + ke) + kon * L * ke)
    c_ss = kon * L * r_ss / (koff + ke)
    got = state.cells.receptors
    np.testing.assert_allclose(float(got.free[0, 0]), r_ss, rtol=1e-3)
    np.testing.assert_allclose(float(got.bound[0, 0]), c_ss, rtol=1e-3)
    total = got.free + got.bound + got.internalised + got.turned_over - got.synthesised
    # conserved to round-off of the largest book entry (the cumulative synthesis)
    assert abs(float(total[0, 0]) - 100.0) <= 1e-13 * float(100.0 + got.synthesised[0, 0])
    b = jc.budget(state)
    scale = float(b["inflow"][0] + b["initial"][0])
    assert abs(float(b["residual"][0])) <= 1e-11 * scale


def test_binding_stiff_step_stays_positive_and_conserves():
    """kon·R·dt/V >> 1: the exchange step must neither overdraw the voxel nor lose molecules."""
    grid = jc.Grid((4, 4, 4), 5.0)
    model = jc.Model(grid, [jc.Substrate("L", 1.0, 1e-3)])
    pos = np.array([[2.5, 2.5, 2.5], [3.0, 3.0, 3.0], [12.0, 12.0, 12.0]])
    rec = jc.Receptors(total=1e6, kon=10.0, koff=1e-3, kint=1e-2)
    state = model.init(jc.Cells(pos, secretion=[[5.0], [0.0], [0.0]], receptors=rec),
                       fields=jnp.full((1, 4, 4, 4), 1.0))
    state, traj = jc.simulate(model, state, t_end=500.0, dt=50.0, save_every=50.0)
    assert float(traj.fields.min()) >= 0.0
    assert float(state.cells.receptors.free.min()) >= 0.0
    b = jc.budget(state)
    scale = float(b["initial"][0] + b["secreted"][0])
    assert abs(float(b["residual"][0])) <= 1e-12 * scale


# ----------------------------------------------------------------------------- V14 BioFVM


def test_v14_biofvm_lod_equals_numpy_reference():
    """The lod solver is BioFVM's scheme: LOD sweeps with k/3 each, then per-voxel secretion/uptake."""
    rng = np.random.default_rng(1)
    shape, h, D, k, dt = (6, 5, 4), 20.0, 1e3, 0.1, 0.6
    grid = jc.Grid(shape, h)
    n = 12
    pos = rng.uniform(0, 1, (n, 3)) * np.array(shape) * h
    vcell = 2494.0
    S, U, rho_star, E = rng.uniform(0, 1, n), rng.uniform(0, 0.5, n), rng.uniform(0, 2, n), rng.uniform(0, 3, n)
    # one cell per voxel so BioFVM's sequential per-cell update equals the summed form
    idx = np.floor(pos / h).astype(int)
    _, first = np.unique(np.ravel_multi_index(idx.T, shape), return_index=True)
    pos, S, U, rho_star, E = pos[first], S[first], U[first], rho_star[first], E[first]
    cells = jc.Cells(pos, secretion=E, uptake=U * vcell, saturation=rho_star, saturation_rate=S * vcell)
    model = jc.Model(grid, [jc.Substrate("s", D, k)], solver="lod")
    rho0 = rng.uniform(0, 1, shape)
    state = model.init(cells, fields=rho0[None])
    state, traj = jc.simulate(model, state, t_end=3 * dt, dt=dt, save_every=dt)

    rho = rho0.copy()
    vvox = h**3
    alpha = dt * vcell / vvox
    vox = [tuple(i) for i in np.floor(pos / h).astype(int)]
    for _ in range(3):
        for axis in range(3):
            rho = biofvm.thomas(rho, axis, dt * D / h**2, dt * k / 3)
        for i, v in enumerate(vox):
            rho[v] = (rho[v] + alpha * S[i] * rho_star[i]) / (1 + alpha * (S[i] + U[i]))
            rho[v] += E[i] * dt / vvox
    np.testing.assert_allclose(np.asarray(state.fields[0]), rho, rtol=1e-13, atol=1e-15)


# ----------------------------------------------------------------------------- point source, tissue


def test_o6_secreting_cell_matches_screened_point_source():
    """O6 steady state from one secreting cell, mirror images for the no-flux box."""
    D, k, q, h, n = 10.0, 0.01, 100.0, 2.5, 40
    lam = np.sqrt(D / k)
    grid = jc.Grid((n, n, n), h)
    src = np.array([[50.0 + h / 2, 50.0 + h / 2, 50.0 + h / 2]])
    model = jc.Model(grid, [jc.Substrate("s", D, k)])
    c = np.asarray(jc.steady_state(model, jc.Cells(src, secretion=q))[0])
    x0 = (src[0] - 0.0)
    L = n * h
    X = np.stack(grid.mesh(), -1)
    exact = np.zeros(grid.shape)
    # mirror images 2aL ± x0 per axis make the no-flux box exact
    per_axis = [[2 * a * L + sgn * x for a in range(-2, 3) for sgn in (1, -1)] for x in x0]
    for ix in per_axis[0]:
        for iy in per_axis[1]:
            for iz in per_axis[2]:
                r = np.linalg.norm(X - np.array([ix, iy, iz]), axis=-1)
                exact += q * np.exp(-r / lam) / (4 * np.pi * D * np.maximum(r, 1e-300))
    r0 = np.linalg.norm(X - x0, axis=-1)
    for rmin, tol in ((4 * h, 0.03), (8 * h, 0.01)):
        sel = r0 >= rmin
        err = np.max(np.abs(c[sel] - exact[sel]) / exact[sel])
        assert err <= tol, (rmin, err)


def test_uptaking_tissue_sets_decay_length():
    """Cells of density n with clearance u: steady profile decays with λ = √(D/(n·u))."""
    D, u, h, n_vox = 1.0, 0.02, 0.5, 50
    grid = jc.Grid((n_vox,), h)
    per_voxel = 1
    density = per_voxel / h  # cells per µm (1D)
    lam = np.sqrt(D / (density * u))
    L = n_vox * h
    pos = grid.centers(0)[:, None]
    j = 2.0
    model = jc.Model(grid, [jc.Substrate("s", D, 0.0, boundary={"x-": jc.Flux(j)})])
    cells = jc.Cells(pos, uptake=np.full(n_vox, u))
    c = np.asarray(jc.steady_state(model, cells)[0])
    x = grid.centers(0)
    exact = j * lam / D * np.cosh((L - x) / lam) / np.sinh(L / lam)
    assert np.max(np.abs(c - exact) / exact) <= 0.5 * (h / lam) ** 2 + 1e-3
    # the implicit solver reaches the same steady state (dt-independent fixed point)
    state, _ = jc.simulate(model, model.init(cells), t_end=4000.0, dt=20.0)
    np.testing.assert_allclose(np.asarray(state.fields[0]), c, rtol=1e-6)


# ----------------------------------------------------------------------------- budget


@pytest.mark.parametrize("solver", ["implicit", "lod", "explicit", "spectral"])
@pytest.mark.filterwarnings("ignore:solver=.spectral. splits cell uptake")  # the books, not accuracy
def test_budget_closes_with_everything(solver):
    """Secretion, uptake, saturation, binding, decay, flux and Dirichlet faces, held voxels."""
    rng = np.random.default_rng(3)
    grid = jc.Grid((10, 8, 6), 4.0)
    boundary = {"x-": jc.Flux(0.3), "y": jc.Periodic()}
    mask = None
    if solver in ("implicit", "lod", "explicit"):
        boundary["x+"] = jc.Dirichlet(0.5)
    if solver != "spectral":
        mask = np.zeros(grid.shape, bool)
        mask[5, 2:4, 3] = True
    if solver == "lod" or solver == "implicit":
        boundary.pop("y")
    subs = [jc.Substrate("A", 3.0, 1e-3, boundary=boundary), jc.Substrate("B", 1.0, 2e-3)]
    n = 30
    pos = rng.uniform(0, 1, (n, 3)) * np.array(grid.extent)
    rec = jc.Receptors(total=rng.uniform(10, 100, (n, 2)), kon=0.05, koff=1e-2, kint=3e-3,
                       synthesis=0.1, turnover=1e-3)
    cells = jc.Cells(pos, secretion=rng.uniform(0, 2, (n, 2)), uptake=rng.uniform(0, 5, (n, 2)),
                     saturation=0.3, saturation_rate=rng.uniform(0, 3, (n, 2)), receptors=rec)
    model = jc.Model(grid, subs, solver=solver, dirichlet_mask=mask,
                     dirichlet_value=[0.2, 0.0] if mask is not None else 0.0)
    state = model.init(cells, fields=rng.uniform(0, 1, (2,) + grid.shape))
    state, _ = jc.simulate(model, state, t_end=600.0, dt=3.0)
    b = jc.budget(state)
    assert set(b) == {"initial", "secreted", "produced", "inflow", "outflow", "fields", "bound", "matrix",
                      "compartments", "internalised", "uptake", "decayed", "matrix_degraded", "cleared", "residual"}
    scale = np.asarray(b["initial"] + b["secreted"] + b["inflow"])
    for key in ("secreted", "uptake", "decayed", "internalised", "bound"):
        assert np.all(np.asarray(b[key]) > 0), key
    np.testing.assert_array_less(np.abs(np.asarray(b["residual"])), 1e-12 * scale)


# ----------------------------------------------------------------------------- relay


def test_relay_responders_switch_on_within_expected_distance():
    """Producers of A at x = 0; responders secrete B when bound A receptors pass K."""
    D, k, j, h, n = 1.0, 1e-3, 0.5, 1.0, 150
    lam = np.sqrt(D / k)
    grid = jc.Grid((n,), h)
    x = grid.centers(0)
    # few receptors: the bound pool (≤ n·R_T) stays small beside the field's j/k molecules
    RT, kon, koff, K = 0.02, 0.05, 0.05, 0.01
    rec = jc.Receptors(total=np.tile([[RT, 0.0]], (n, 1)), kon=np.tile([[kon, 0.0]], (n, 1)),
                       koff=koff)
    cells = jc.Cells(x[:, None], receptors=rec)
    relay = jc.Response(target="B", signal="A", max=1.0, K=K, n=8.0)
    subs = [jc.Substrate("A", D, k, boundary={"x-": jc.Flux(j)}), jc.Substrate("B", D, 1e-2)]
    model = jc.Model(grid, subs, responses=[relay])
    state, _ = jc.simulate(model, model.init(cells), t_end=2e4, dt=20.0)
    on = np.asarray(state.cells.secretion[:, 1]) > 0.5
    # kint = 0: at equilibrium binding removes no ligand, so A follows O2 and C = R_T L/(K_D + L)
    L_star = (koff / kon) * K / (RT - K)
    c_exact = j * lam / D * np.cosh((n * h - x) / lam) / np.sinh(n * h / lam)
    x_star = x[np.argmin(np.abs(c_exact - L_star))]
    assert on[x < x_star - 2 * h].all() and not on[x > x_star + 2 * h].any()
    assert on.any() and not on.all()


# ----------------------------------------------------------------------------- gradients


def test_gradient_through_secretion_and_binding_matches_finite_differences():
    grid = jc.Grid((12, 10), 3.0)
    pos = np.array([[7.0, 8.0], [20.0, 15.0], [30.0, 25.0]])
    probe = np.array([[18.0, 14.0], [25.0, 20.0]])

    def loss(p):
        rec = jc.Receptors(total=50.0, kon=p["kon"], koff=1e-2, kint=2e-3)
        cells = jc.Cells(pos, secretion=jnp.stack([p["q"], 0.0, 0.0]), uptake=0.5, receptors=rec)
        model = jc.Model(grid, [jc.Substrate("s", 2.0, 1e-3)], coupling="linear")
        state, traj = jc.simulate(model, model.init(cells), t_end=60.0, dt=2.0, save_at=[30.0, 60.0])
        return jnp.sum(grid.sample(traj.fields[:, 0], probe) ** 2) + jnp.sum(state.cells.receptors.bound)

    p0 = {"q": jnp.asarray(3.0), "kon": jnp.asarray(0.02)}
    g = jax.grad(loss)(p0)
    for name in p0:
        eps = 1e-5 * float(p0[name])
        up = loss({**p0, name: p0[name] + eps})
        dn = loss({**p0, name: p0[name] - eps})
        fd = (up - dn) / (2 * eps)
        np.testing.assert_allclose(float(g[name]), float(fd), rtol=1e-4)


# ----------------------------------------------------------------------------- coupling and bad input


def test_linear_coupling_conserves_and_nearest_is_one_voxel():
    grid = jc.Grid((5, 5), 2.0)
    cells = jc.Cells([[3.3, 4.1]], secretion=1.0)
    for coupling in ("nearest", "linear"):
        model = jc.Model(grid, [jc.Substrate("s", 0.0)], coupling=coupling, solver="explicit")
        state, _ = jc.simulate(model, model.init(cells), t_end=1.0, dt=1.0)
        f = np.asarray(state.fields[0])
        assert f.sum() * grid.voxel_volume == pytest.approx(1.0, rel=1e-12)
        assert (f > 0).sum() == (1 if coupling == "nearest" else 4)
    # multilinear weights reproduce the position: centroid of the deposit is the cell
    xs, ys = grid.mesh()
    assert (f * xs).sum() / f.sum() == pytest.approx(3.3)
    assert (f * ys).sum() / f.sum() == pytest.approx(4.1)


def test_dead_cells_exchange_nothing():
    grid = jc.Grid((4, 4), 2.0)
    cells = jc.Cells([[1.0, 1.0], [5.0, 5.0]], secretion=1.0, alive=[True, False])
    model = jc.Model(grid, [jc.Substrate("s", 0.5)])
    state, _ = jc.simulate(model, model.init(cells), t_end=2.0, dt=1.0)
    assert float(jc.budget(state)["secreted"][0]) == pytest.approx(2.0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"position": [[np.nan, 1.0]]}, "position"),
        ({"position": [[1.0, 1.0]], "secretion": -1.0}, "secretion"),
        ({"position": [[1.0, 1.0]], "uptake": [1.0, 2.0]}, "uptake"),
        ({"position": [1.0, 1.0]}, "position"),
        ({"position": [[1.0, 1.0]], "alive": [True, False]}, "alive"),
    ],
)
def test_bad_cells_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        jc.Cells(**kwargs)


def test_cells_outside_grid_or_wrong_width_raise():
    grid = jc.Grid((4, 4), 2.0)
    model = jc.Model(grid, [jc.Substrate("a", 1.0), jc.Substrate("b", 1.0)])
    with pytest.raises(ValueError, match="outside the domain"):
        model.init(jc.Cells([[9.0, 1.0]]))
    with pytest.raises(ValueError, match=r"\(N, S\)"):
        model.init(jc.Cells([[1.0, 1.0]], secretion=[1.0]))
    with pytest.raises(ValueError, match="Receptors.kon"):
        jc.Receptors(total=1.0, kon=-1.0)
    # a cell exactly on the upper face belongs to the last voxel
    state = model.init(jc.Cells([[8.0, 8.0]], secretion=[[1.0, 0.0]]))
    state, _ = jc.simulate(jc.Model(grid, [jc.Substrate("a", 0.0), jc.Substrate("b", 0.0)]), state,
                           t_end=1.0, dt=1.0)
    assert float(state.fields[0, 3, 3]) > 0


@pytest.mark.parametrize("coupling", ["nearest", "linear"])
def test_voxel_sorted_cells_give_the_same_run(coupling, monkeypatch):
    """Large populations are processed in voxel order; results and cell order are unchanged."""
    import importlib

    sim = importlib.import_module("jaxcell.simulate")  # the module, not jc.simulate the function

    grid = jc.Grid((9, 7, 3), 3.0)  # a shape no other test compiles, so both paths trace afresh
    rng = np.random.default_rng(11)
    n = 40
    pos = rng.uniform(0, 1, (n, 3)) * np.array(grid.extent)
    rec = jc.Receptors(total=rng.uniform(10, 100, n), kon=0.05, koff=1e-2, kint=2e-3)
    cells = jc.Cells(pos, secretion=rng.uniform(0, 1, n), uptake=0.3, receptors=rec)
    model = jc.Model(grid, [jc.Substrate("s", 2.0, 1e-3)], coupling=coupling)
    state = model.init(cells)
    ref, ref_traj = jc.simulate(model, state, t_end=20.0, dt=2.0, save_every=10.0, save_cells=True)
    monkeypatch.setattr(sim, "SORT_MIN", 1)
    jax.clear_caches()
    out, traj = jc.simulate(model, state, t_end=20.0, dt=2.0, save_every=10.0, save_cells=True)
    jax.clear_caches()
    np.testing.assert_array_equal(np.asarray(out.cells.position), pos)
    np.testing.assert_allclose(np.asarray(out.fields), np.asarray(ref.fields), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(out.cells.receptors.bound), np.asarray(ref.cells.receptors.bound),
                               rtol=1e-12)
    np.testing.assert_allclose(np.asarray(traj.cells.receptors.bound),
                               np.asarray(ref_traj.cells.receptors.bound), rtol=1e-12)


@pytest.mark.parametrize("solver", ["explicit", "implicit"])
def test_strong_uptake_reaches_the_steady_state_at_any_dt(solver):
    """A cell clearing its voxel at dt·uptake/V = 1: explicit (uptake implicit in every sub-step) and
    implicit (uptake in the operator) land on jc.steady_state at dt = 0.5, 2 and 10 s (1e-6)."""
    grid = jc.Grid((8, 8, 8), 10.0)
    sub = jc.Substrate("A", 100.0, 1e-3, boundary={"x-": jc.Flux(1.0)})
    cells = jc.Cells([[45.0, 45.0, 45.0]], uptake=100.0)
    model = jc.Model(grid, [sub], solver=solver)
    ref = np.asarray(jc.steady_state(model, cells))
    for dt in (0.5, 2.0, 10.0):
        state, _ = jc.simulate(model, model.init(cells), t_end=4e4, dt=dt)
        np.testing.assert_allclose(np.asarray(state.fields), ref, rtol=1e-6, err_msg=f"dt={dt}")
    assert ref[0, 4, 4, 4] < 0.99 * ref[0, 4, 4, 3]  # the cell depletes its voxel (2 %: D/h² = 10 × uptake/V)


def test_spectral_warns_when_split_uptake_is_inaccurate():
    """Spectral at dt·uptake/V = 1 is far off the steady state and says so; at 0.01 it is close and silent."""
    import warnings

    grid = jc.Grid((8, 8, 8), 10.0)
    sub = jc.Substrate("A", 100.0, 1e-3, boundary={"x-": jc.Flux(1.0)})
    cells = jc.Cells([[45.0, 45.0, 45.0]], uptake=100.0)
    model = jc.Model(grid, [sub], solver="spectral")
    ref = np.asarray(jc.steady_state(model, cells))[0, 4, 4, 4]
    with pytest.warns(RuntimeWarning, match="splits cell uptake"):
        big, _ = jc.simulate(model, model.init(cells), t_end=4e4, dt=10.0)
    assert float(big.fields[0, 4, 4, 4]) < 0.9 * ref
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        small, _ = jc.simulate(model, model.init(cells), t_end=4e4, dt=0.1)
    assert abs(float(small.fields[0, 4, 4, 4]) / ref - 1) < 0.01


def test_held_voxel_books_agree_between_explicit_and_implicit():
    """A held voxel on a flux face: both solvers book the same inflow and decay (the held voxel
    neither decays nor takes the face flux; it supplies what diffuses into its neighbours)."""
    grid = jc.Grid((8,), 10.0)
    mask = np.zeros(8, bool)
    mask[0] = True
    sub = jc.Substrate("a", 1.0, 0.1, boundary={"x-": jc.Flux(1.0)})
    books = {}
    for solver in ("explicit", "implicit"):
        model = jc.Model(grid, [sub], solver=solver, dirichlet_mask=mask, dirichlet_value=1.0)
        state, _ = jc.simulate(model, model.init(), t_end=10.0, dt=0.01)
        books[solver] = {k: float(v[0]) for k, v in jc.budget(state).items()}
        assert abs(books[solver]["residual"]) < 1e-12 * books[solver]["inflow"]
    for key in ("inflow", "decayed", "fields"):
        assert abs(books["explicit"][key] / books["implicit"][key] - 1) < 2e-3, (key, books)


def test_voxel_order_is_the_stable_argsort(monkeypatch):
    """The cells' voxel order (NumPy for concrete positions on a CPU backend, XLA's sort when traced) is
    argsort(kind="stable") of the voxel index: ties (many cells per voxel) keep their index order; also
    under vmap; a gradient through a run in voxel order equals the run's in cell order (a wrong order
    would only show in the order checks: sums do not depend on it)."""
    import importlib

    from jaxcell.cells import voxel_order

    sim = importlib.import_module("jaxcell.simulate")
    grid = jc.Grid((5, 4, 3), 2.0)
    rng = np.random.default_rng(3)
    pos = jnp.asarray(rng.uniform(0, 1, (2, 500, 3)) * np.array(grid.extent))  # ~8 cells per voxel
    for p in pos:
        want = np.argsort(np.asarray(grid.voxel_index(p)), kind="stable")
        np.testing.assert_array_equal(np.asarray(voxel_order(grid, p)), want)  # NumPy
        np.testing.assert_array_equal(np.asarray(jax.jit(lambda q: voxel_order(grid, q))(p)), want)  # XLA
    batched = jax.vmap(lambda q: voxel_order(grid, q))(pos)
    for b, p in zip(batched, pos):
        np.testing.assert_array_equal(np.asarray(b), np.argsort(np.asarray(grid.voxel_index(p)), kind="stable"))

    model = jc.Model(grid, [jc.Substrate("s", 2.0, 1e-3)], responses=(
        jc.Response("s", "s", max=0.5, K=1.0, parameter="uptake", kind="concentration"),))

    def loss(q: jax.Array) -> jax.Array:
        state = model.init(jc.Cells(pos[0], secretion=q, uptake=0.1))
        out, _ = jc.simulate(model, state, t_end=6.0, dt=2.0)
        return jnp.sum(out.fields**2)

    q = jnp.asarray(rng.uniform(0.5, 1.5, 500))
    ref = jax.grad(loss)(q)
    monkeypatch.setattr(sim, "SORT_MIN", 1)
    jax.clear_caches()
    got = jax.grad(loss)(q)
    jax.clear_caches()
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-10)
    h = 1e-6
    e = jnp.zeros(500).at[7].set(h)
    fd = (loss(q + e) - loss(q - e)) / (2 * h)
    np.testing.assert_allclose(float(got[7]), float(fd), rtol=1e-6)


def _overdraw_run(coupling: str, dt: float) -> tuple[np.ndarray, ...]:
    grid = jc.Grid((2, 1, 1), 10.0)  # two 1000 µm³ voxels
    rec = jc.Receptors(total=[[1e6], [3e6], [1.0]], kon=1.0, koff=1.0, kint=[[1e3], [1e3], [0.0]],
                       bound=[[1e3], [1e3], [0.0]])
    cells = jc.Cells([[4.0, 5.0, 5.0], [6.0, 5.0, 5.0], [15.0, 5.0, 5.0]], receptors=rec)
    model = jc.Model(grid, [jc.Substrate("s", 0.0)], coupling=coupling)
    state = model.init(cells, fields=np.array([1e-3, 2e-3]).reshape(1, 2, 1, 1))  # 1 and 2 molecules
    out, _ = jc.simulate(model, state, t_end=10.0, dt=dt)
    r = out.cells.receptors
    return (np.asarray(out.fields).reshape(-1) * grid.voxel_volume,
            *(np.asarray(x)[:, 0] for x in (r.bound, r.free, r.internalised)))


@pytest.mark.parametrize("coupling", ["nearest", "linear"])
def test_binding_that_would_overdraw_a_voxel_empties_it_exactly(coupling):
    """Complexes internalised within milliseconds (kint = 1e3 /s) release far less than the frozen-ligand
    estimate counts on, so one 10-s step asks voxel 0 for ~1e4 times the 1 molecule it holds: the cells
    take all of it and no more (exactly 0 left with nearest coupling, never below 0), the 1e3 complexes
    each cell held still go in (as 1e-3-s steps give, 1e-6), and ligand and receptors balance."""
    amount, bound, free, inside = _overdraw_run(coupling, 10.0)
    if coupling == "nearest":
        assert amount[0] == 0.0  # emptied exactly, not -1e-16
        # the lone receptor in voxel 1 is not capped: it binds at the frozen ligand L* = L/(1 + dt·kon·R/V)
        # exactly: C = a/(a + koff)·(1 − e^{−(a + koff)dt}), a = kon·L*
        a = 1.0 * 2e-3 / (1 + 10.0 * 1.0 * 1.0 / 1000.0)
        np.testing.assert_allclose(bound[2], a / (a + 1.0) * (1 - np.exp(-(a + 1.0) * 10.0)), rtol=1e-10)
        fine = _overdraw_run(coupling, 1e-3)
        np.testing.assert_allclose(inside[:2], fine[3][:2], rtol=1e-6)
        np.testing.assert_allclose(amount[1], fine[0][1], rtol=1e-3)
    assert amount.min() >= 0.0
    assert inside[:2].min() > 999.0  # what was bound before the step is internalised, cap or not
    np.testing.assert_allclose(amount.sum() + bound.sum() + inside.sum(), 3.0 + 2e3, rtol=1e-12)
    np.testing.assert_allclose(free + bound + inside, [1e6 + 1e3, 3e6 + 1e3, 1.0], rtol=1e-12)


@pytest.mark.parametrize("kon", [0.02, 0.34, 0.5])
def test_binding_in_a_voxel_below_zero_takes_only_what_is_released(kon):
    """A voxel left at −1 molecule (an undershooting transport step): cell 0 releases its 2 complexes'
    ligand (koff = 1, kint = 10 /s), cell 1 would bind; whatever kon, cell 1 binds nothing (the voxel holds
    nothing to give) and the voxel gains exactly the release, 2/11·(1 − e^{−11}) in a 1-s step."""
    grid = jc.Grid((1, 1, 1), 10.0)
    rec = jc.Receptors(total=[[0.0], [1e3]], kon=[[1.0], [kon]], koff=[[1.0], [1.0]], kint=[[10.0], [0.0]],
                       bound=[[2.0], [0.0]])
    cells = jc.Cells([[5.0, 5.0, 5.0], [5.0, 5.0, 5.0]], receptors=rec)
    model = jc.Model(grid, [jc.Substrate("s", 0.0)])
    from jaxcell.binding import binding_step
    from jaxcell.cells import coupling_weights

    cells = model.init(cells).cells  # receptors conformed to (N, S)
    idx, w = coupling_weights(grid, cells.position, cells.alive, "nearest")
    # the step itself: jc.simulate refuses negative initial fields
    fields, out, _ = binding_step(grid, jnp.full((1, 1, 1, 1), -1e-3), cells, idx, w, jnp.asarray(1.0))
    assert float(out.receptors.bound[1, 0]) == 0.0
    np.testing.assert_allclose(float(fields[0, 0, 0, 0]) * 1000.0, -1 + 2 / 11 * (1 - np.exp(-11.0)), rtol=1e-12)

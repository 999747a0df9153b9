"""Differentiable inference (jc.fit): VERIFICATION.md cases I1, I2, I3, gradients, nuisances, errors, compilation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erfc

import jaxcell as jc
from jaxcell.inference import FitResult, fit, objective

D_TRUE, K_TRUE = 0.10, 2.52e-4  # Dpp, Kicheva et al. 2007 (µm²/s, 1/s)
LAM_TRUE = float(np.sqrt(D_TRUE / K_TRUE))  # 19.92 µm


def _o3(x: np.ndarray, t: np.ndarray, j: float = 1.0) -> np.ndarray:
    """O3: formation from rest of a 1D gradient with inward flux j at x = 0 (semi-infinite)."""
    lam, s = LAM_TRUE, np.sqrt(K_TRUE * t)
    w = np.sqrt(4 * D_TRUE * t)
    return j / (2 * np.sqrt(D_TRUE * K_TRUE)) * (np.exp(-x / lam) * erfc(x / w - s)
                                                  - np.exp(x / lam) * erfc(x / w + s))


def _steady_predict(grid: jc.Grid, x_obs: np.ndarray, flux: float = 1.0):
    """Steady profile with inward flux at x = 0 and no flux at the far face, sampled at x_obs (µm)."""
    points = np.asarray(x_obs, float)[:, None]

    def predict(p):
        m = jc.Model(grid, [jc.Substrate("Dpp", diffusion=p["D"], decay=p["k"], boundary={"x-": jc.Flux(flux)})])
        return grid.sample(jc.steady_state(m)[0], points)

    return predict


def _timecourse_predict(grid: jc.Grid, t_obs: np.ndarray, x_obs: np.ndarray, dt: float = 30.0):
    """Formation from rest (flux 1 at x = 0) saved at t_obs (s), sampled at x_obs (µm): (T, M)."""
    points = np.asarray(x_obs, float)[:, None]

    def predict(p):
        m = jc.Model(grid, [jc.Substrate("Dpp", diffusion=p["D"], decay=p["k"], boundary={"x-": jc.Flux(1.0)})],
                     solver="implicit")
        _, tr = jc.simulate(m, m.init(), t_end=float(t_obs[-1]), dt=dt, save_at=t_obs)
        return grid.sample(tr.fields[:, 0], points)

    return predict


# ----------------------------------------------------------------------------- I1


def test_i1_steady_profile_unknown_scale_only_lambda():
    """I1: a steady profile in arbitrary units determines λ = √(D/k) only; fit lands on the ridge and says so."""
    grid = jc.Grid((60,), spacing=2.5)  # 150 µm
    x_obs = np.linspace(5.0, 145.0, 29)
    predict = _steady_predict(grid, x_obs)
    clean = np.asarray(predict({"D": D_TRUE, "k": K_TRUE}))
    rng = np.random.default_rng(11)
    observed = 3.7 * clean * np.exp(0.05 * rng.standard_normal(clean.shape))
    res = fit(predict, observed, {"D": 0.05, "k": 1e-4}, nuisance="scale", noise="multiplicative")
    assert isinstance(res, FitResult) and res.converged
    lam = np.sqrt(res.params["D"] / res.params["k"])
    # on the ridge log D − log k = 2 log λ
    assert abs(np.log(res.params["D"]) - np.log(res.params["k"]) - 2 * np.log(LAM_TRUE)) < 2 * 0.03
    assert abs(lam / LAM_TRUE - 1) < 0.03
    assert len(res.unidentified) == 1
    u = res.unidentified[0]
    assert set(u) == {"D", "k"}
    np.testing.assert_allclose([u["D"], u["k"]], [2 ** -0.5, 2 ** -0.5], atol=1e-3)
    assert any("D·k^-1" in w and "√(D/k)" in w for w in res.warnings), res.warnings
    assert np.isinf(res.stderr["D"]) and np.isinf(res.stderr["k"])
    # λ alone is sharply determined: var(log λ) = ¼ (1, −1) Σ (1, −1)ᵀ in the identified subspace
    v = np.array([0.5, -0.5])
    se_log_lam = float(np.sqrt(v @ res.covariance @ v))
    assert 0 < se_log_lam < 0.03
    assert abs(np.log(lam / LAM_TRUE)) < 3 * se_log_lam + 0.005


def test_i1_known_flux_absolute_units_identifies_d_and_k():
    """I1: with the source flux known and concentrations in absolute units, D and k are identifiable (~2 %)."""
    grid = jc.Grid((60,), spacing=2.5)
    x_obs = np.linspace(5.0, 145.0, 29)
    predict = _steady_predict(grid, x_obs, flux=1.0)
    clean = np.asarray(predict({"D": D_TRUE, "k": K_TRUE}))
    rng = np.random.default_rng(12)
    observed = clean * np.exp(0.05 * rng.standard_normal(clean.shape))
    res = fit(predict, observed, {"D": 0.05, "k": 1e-4}, noise="multiplicative")
    assert res.converged and res.unidentified == [] and res.warnings == []
    for name, true in (("D", D_TRUE), ("k", K_TRUE)):
        err = np.log(res.params[name] / true)
        assert res.stderr[name] < 0.025, res.stderr
        assert abs(err) < 3 * res.stderr[name], (name, err, res.stderr)
    assert res.scale is None and res.offset is None


# ----------------------------------------------------------------------------- I2


def test_i2_time_course_identifies_d_and_k():
    """I2: O3 snapshots 0.5–8 h, 5 % log-normal noise, unknown scale, log residuals: D and k within ±5 %;
    snapshots only long after 1/(2k) inflate the errors by more than 10× and the fit says so."""
    grid = jc.Grid((160,), spacing=1.25)  # 200 µm = 10 λ: the far face is invisible
    x_obs = np.arange(5.0, 61.0, 5.0)
    t_obs = np.array([0.5, 1.0, 2.0, 4.0, 8.0]) * 3600.0
    rng = np.random.default_rng(2024)
    exact = _o3(x_obs[None, :], t_obs[:, None])
    observed = 2.0 * exact * np.exp(0.05 * rng.standard_normal(exact.shape))
    res = fit(_timecourse_predict(grid, t_obs, x_obs), observed, {"D": 0.05, "k": 1e-4},
              nuisance="scale", noise="multiplicative")
    assert res.converged and res.unidentified == [] and res.warnings == []
    assert abs(res.params["D"] / D_TRUE - 1) < 0.05
    assert abs(res.params["k"] / K_TRUE - 1) < 0.05
    assert res.stderr["D"] < 0.02 and res.stderr["k"] < 0.03  # Cramér–Rao ≈ 0.4 %, 0.9 % for a denser design
    assert abs(res.scale / 2.0 - 1) < 0.05
    assert abs(res.sigma / 0.05 - 1) < 0.3  # noise level estimated from the residuals

    late = np.array([6.0, 7.0, 8.0]) * 3600.0  # all ≫ 1/(2k) ≈ 0.55 h: near steady, ridge returns
    exact_late = _o3(x_obs[None, :], late[:, None])
    obs_late = 2.0 * exact_late * np.exp(0.05 * rng.standard_normal(exact_late.shape))
    res_late = fit(_timecourse_predict(grid, late, x_obs), obs_late, {"D": 0.05, "k": 1e-4},
                   nuisance="scale", noise="multiplicative")
    assert res_late.stderr["D"] > 10 * res.stderr["D"]
    assert res_late.stderr["k"] > 10 * res.stderr["k"]
    assert res_late.warnings, "a weakly determined fit must say so"
    assert any("poorly determined" in w or "not identified" in w for w in res_late.warnings)


# ----------------------------------------------------------------------------- I3


def test_i3_dpp_decay_length_on_150um_compartment():
    """I3: finite compartment (150 µm), 10 % noise: λ = 19.9 ± 1.5 µm; no cosh-vs-exponential bias."""
    grid = jc.Grid((60,), spacing=2.5)
    x_obs = np.linspace(2.5, 147.5, 30)
    points = x_obs[:, None]

    def predict(p):  # parametrised by λ; the amplitude is a nuisance (fluorescence, a.u.)
        m = jc.Model(grid, [jc.Substrate("Dpp", diffusion=p["lam"] ** 2 * K_TRUE, decay=K_TRUE,
                                         boundary={"x-": jc.Flux(1.0)})])
        return grid.sample(jc.steady_state(m)[0], points)

    exact = np.cosh((150.0 - x_obs) / LAM_TRUE) / np.sinh(150.0 / LAM_TRUE)  # O2 shape
    rng = np.random.default_rng(3)
    observed = 50.0 * exact * np.exp(0.10 * rng.standard_normal(exact.shape))
    res = fit(predict, observed, {"lam": 10.0}, nuisance="scale", noise="multiplicative")
    assert res.converged and res.warnings == []
    assert abs(res.params["lam"] - 19.9) < 1.5
    assert 0.005 < res.stderr["lam"] < 0.075  # relative; 1.5 µm ≈ 7.5 %


def test_i3_pure_exponential_is_biased_on_short_domain():
    """A pure exponential fitted to a cosh profile overestimates λ by ≈ 7 % at L = 3λ; the finite-domain model
    recovers λ."""
    lam, length = 20.0, 60.0
    x = np.linspace(0.0, length, 31)
    profile = np.cosh((length - x) / lam) / np.sinh(length / lam)
    res_exp = fit(lambda p: jnp.exp(-x / p["lam"]), profile, {"lam": 10.0}, nuisance="scale")
    assert 0.05 < res_exp.params["lam"] / lam - 1 < 0.09
    res_cosh = fit(lambda p: jnp.cosh((length - x) / p["lam"]) / jnp.sinh(length / p["lam"]), profile,
                   {"lam": 10.0}, nuisance="scale")
    assert abs(res_cosh.params["lam"] / lam - 1) < 1e-6


# ----------------------------------------------------------------------------- gradients and Jacobians


def test_loss_gradient_matches_central_differences():
    """jax.grad of the projected (variable-projection) loss through jc.simulate vs central differences."""
    grid = jc.Grid((40,), spacing=2.5)
    x_obs = np.array([5.0, 15.0, 30.0, 50.0])
    t_obs = np.array([1800.0, 3600.0, 5400.0])  # equal spacing: one scan, quick to compile
    predict = _timecourse_predict(grid, t_obs, x_obs, dt=60.0)
    rng = np.random.default_rng(5)
    observed = 1.7 * _o3(x_obs[None, :], t_obs[:, None]) * np.exp(0.05 * rng.standard_normal((3, 4)))
    p0 = {"D": 0.08, "k": 3e-4}
    for nuisance, noise in ((None, "additive"), ("scale", "multiplicative"), ("scale+offset", "additive")):
        loss = objective(predict, observed, nuisance=nuisance, noise=noise)
        grad = jax.jit(jax.grad(loss))(p0)
        value = jax.jit(loss)  # one compile for all shifted points
        for name in p0:
            h = 1e-5 * p0[name]
            fd = (float(value({**p0, name: p0[name] + h})) - float(value({**p0, name: p0[name] - h}))) / (2 * h)
            np.testing.assert_allclose(float(grad[name]), fd, rtol=1e-6, err_msg=f"{nuisance} {noise} {name}")


def test_forward_and_reverse_jacobians_agree():
    """mode='forward' (jacfwd) and mode='reverse' (jacrev) give the same Fisher matrix and the same fit."""
    grid = jc.Grid((40,), spacing=2.5)
    x_obs = np.array([5.0, 20.0, 40.0])
    predict = _steady_predict(grid, x_obs)
    observed = 2.0 * np.asarray(predict({"D": D_TRUE, "k": K_TRUE})) * np.array([1.02, 0.97, 1.01])
    init = {"D": 0.08, "k": 3e-4}
    fw = fit(predict, observed, init, noise="multiplicative", mode="forward")
    rv = fit(predict, observed, init, noise="multiplicative", mode="reverse")
    assert fw.iterations == rv.iterations
    np.testing.assert_allclose(fw.loss, rv.loss, rtol=1e-9)  # same Jacobians ⇒ same LM path
    for name in init:
        np.testing.assert_allclose(fw.params[name], rv.params[name], rtol=1e-9)
    np.testing.assert_allclose(fw.covariance, rv.covariance, rtol=1e-6)


# ----------------------------------------------------------------------------- nuisances and weights


def test_scale_and_offset_recovered():
    """nuisance='scale+offset': o = a·y + b + noise recovers a, b and the parameters; stderr covers the truth."""
    grid = jc.Grid((60,), spacing=2.5)
    x_obs = np.linspace(2.5, 147.5, 40)
    predict = _steady_predict(grid, x_obs)
    clean = np.asarray(predict({"D": D_TRUE, "k": K_TRUE}))
    rng = np.random.default_rng(7)
    a, b = 0.25, 4.0
    noise_sd = 0.01 * a * clean.max()
    observed = a * clean + b + noise_sd * rng.standard_normal(clean.shape)
    res = fit(predict, observed, {"D": 0.05, "k": 1e-4}, nuisance="scale+offset")
    assert res.converged
    lam = np.sqrt(res.params["D"] / res.params["k"])
    assert abs(lam / LAM_TRUE - 1) < 0.03
    assert res.unidentified and set(res.unidentified[0]) == {"D", "k"}  # scale hides the amplitude j/D
    # the fitted scale absorbs D: a·y(D) is what is determined; the offset is free of that
    np.testing.assert_allclose(res.scale * res.params["D"] ** -1, a * D_TRUE ** -1, rtol=0.05)
    assert abs(res.offset - b) < 0.3
    assert abs(res.sigma / noise_sd - 1) < 0.3

    # with D fixed by known units, the offset-aware fit recovers λ without ridge
    res_lam = fit(lambda p: predict({"D": D_TRUE, "k": D_TRUE / p["lam"] ** 2}), observed, {"lam": 10.0},
                  nuisance="scale+offset")
    assert res_lam.converged and res_lam.unidentified == []
    assert abs(np.log(res_lam.params["lam"] / LAM_TRUE)) < 3 * res_lam.stderr["lam"]
    np.testing.assert_allclose(res_lam.scale, a, rtol=0.05)
    assert abs(res_lam.offset - b) < 0.3


def test_scale_only_closed_form_matches_direct_least_squares():
    """The eliminated scale equals the least-squares scale at the fitted parameters (variable projection)."""
    x = np.linspace(0.0, 80.0, 25)
    rng = np.random.default_rng(8)
    observed = 5.0 * np.exp(-x / 15.0) + 0.02 * rng.standard_normal(x.shape)
    res = fit(lambda p: jnp.exp(-x / p["lam"]), observed, {"lam": 5.0}, nuisance="scale")
    y = np.exp(-x / res.params["lam"])
    np.testing.assert_allclose(res.scale, (y @ observed) / (y @ y), rtol=1e-10)
    assert abs(res.params["lam"] / 15.0 - 1) < 0.02


def test_weighted_sigma_uses_given_errors():
    """sigma=: weighted residuals, error scale 1 (not re-estimated): stderr ∝ sigma, χ²/dof ≈ 1."""
    x = np.linspace(0.0, 100.0, 200)
    truth = 20.0
    clean = 10.0 * np.exp(-x / truth)
    sd = 0.05 * clean + 0.01  # heteroscedastic
    rng = np.random.default_rng(9)
    observed = clean + sd * rng.standard_normal(x.shape)

    def predict(p):
        return p["amp"] * jnp.exp(-x / p["lam"])

    res = fit(predict, observed, {"amp": 5.0, "lam": 10.0}, sigma=sd)
    res2 = fit(predict, observed, {"amp": 5.0, "lam": 10.0}, sigma=2 * sd)
    assert res.sigma == 1.0 and res2.sigma == 1.0
    for name in ("amp", "lam"):
        np.testing.assert_allclose(res2.params[name], res.params[name], rtol=1e-6)
        np.testing.assert_allclose(res2.stderr[name], 2 * res.stderr[name], rtol=1e-6)
    chi2 = float(res.residuals @ res.residuals) / (x.size - 2)
    assert 0.7 < chi2 < 1.3
    assert abs(np.log(res.params["lam"] / truth)) < 3 * res.stderr["lam"]
    # unweighted fit estimates s² from residuals instead
    res_u = fit(predict, observed, {"amp": 5.0, "lam": 10.0})
    assert res_u.sigma != 1.0 and np.isfinite(res_u.sigma)
    # the weighted fit is the better estimator here: its stderr is smaller
    assert res.stderr["lam"] < res_u.stderr["lam"]


def test_bounds_and_non_convergence_are_reported():
    x = np.linspace(0.0, 50.0, 20)
    observed = np.exp(-x / 20.0)
    res = fit(lambda p: jnp.exp(-x / p["lam"]), observed, {"lam": 5.0}, bounds={"lam": (1.0, 10.0)})
    assert res.params["lam"] == pytest.approx(10.0)
    assert any("bound" in w for w in res.warnings)
    res = fit(lambda p: jnp.exp(-x / p["lam"]), observed, {"lam": 1.0}, maxiter=1)
    assert not res.converged and any("did not converge" in w for w in res.warnings)
    assert len(res.loss) == 2 and res.loss[1] <= res.loss[0]


def test_adam_warmup_and_stall_fallback():
    """optax Adam: a warm-up lowers the loss before LM; with all tolerances 0 LM stalls at round-off, takes the
    Adam fallback once, and reports non-convergence without losing the optimum."""
    x = np.linspace(0.0, 60.0, 30)
    observed = 2.0 * np.exp(-x / 20.0)

    def predict(p):
        return p["amp"] * jnp.exp(-x / p["lam"])

    start = {"amp": 0.5, "lam": 5.0}
    cold = fit(predict, observed, start, maxiter=0)
    warm = fit(predict, observed, start, warmup_steps=30, maxiter=0)
    assert warm.loss[0] < 0.5 * cold.loss[0]
    res = fit(predict, observed, start, warmup_steps=30)
    assert res.converged and abs(res.params["lam"] / 20.0 - 1) < 1e-8
    stalled = fit(predict, observed, start, ftol=0.0, xtol=0.0, gtol=0.0, maxiter=500, fallback_steps=5)
    assert not stalled.converged and stalled.iterations < 500
    assert len(stalled.loss) == stalled.iterations + 2  # start, one per iteration, one after the fallback
    assert abs(stalled.params["lam"] / 20.0 - 1) < 1e-8 and stalled.loss[-1] < 1e-20


# ----------------------------------------------------------------------------- compilation


def test_no_recompilation_between_iterations():
    """predict is traced once per (predict, options): LM iterations and refits of new data reuse the compiled code."""
    grid = jc.Grid((40,), spacing=2.5)
    inner = _steady_predict(grid, np.array([5.0, 15.0, 30.0, 50.0, 80.0]))
    observed = np.asarray(inner({"D": D_TRUE, "k": K_TRUE}))
    traces = []

    def predict(p):
        traces.append(1)  # Python side effect: runs only while tracing
        return inner(p)

    short = fit(predict, observed, {"D": 0.05, "k": 1e-4}, maxiter=1)
    assert short.iterations == 1 and len(traces) == 1
    full = fit(predict, observed, {"D": 0.05, "k": 1e-4})
    assert full.iterations > 3 and len(traces) == 1
    assert abs(full.params["D"] / D_TRUE - 1) < 1e-6
    again = fit(predict, 1.1 * observed, {"D": 0.2, "k": 5e-4}, sigma=0.1 * observed)  # new data, same shape
    assert again.converged and len(traces) == 1
    fit(predict, observed, {"D": 0.05, "k": 1e-4}, nuisance="scale", maxiter=2)  # new options: one new trace
    assert len(traces) == 2


# ----------------------------------------------------------------------------- errors


def test_clear_errors():
    x = np.linspace(0.0, 10.0, 5)
    obs = np.exp(-x / 3.0)

    def pred(p):
        return jnp.exp(-x / p["lam"])

    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="init"):
            fit(pred, obs, {"lam": bad})
    with pytest.raises(ValueError, match="non-empty dict"):
        fit(pred, obs, {})
    with pytest.raises(ValueError, match="shape"):
        fit(pred, obs[:4], {"lam": 1.0})
    with pytest.raises(ValueError, match="shape"):
        fit(lambda p: jnp.exp(-x / p["lam"])[None], obs, {"lam": 1.0})
    with pytest.raises(ValueError, match="NaN everywhere"):  # NaN marks a missing point; all missing is an error
        fit(pred, np.full_like(obs, np.nan), {"lam": 1.0})
    with pytest.raises(ValueError, match="nuisance"):
        fit(pred, obs, {"lam": 1.0}, nuisance="gain")
    with pytest.raises(ValueError, match="noise"):
        fit(pred, obs, {"lam": 1.0}, noise="poisson")
    with pytest.raises(ValueError, match="mode"):
        fit(pred, obs, {"lam": 1.0}, mode="sideways")
    with pytest.raises(ValueError, match="positive"):
        fit(pred, obs - 0.5, {"lam": 1.0}, noise="multiplicative")
    with pytest.raises(ValueError, match="offset"):
        fit(pred, obs, {"lam": 1.0}, noise="multiplicative", nuisance="scale+offset")
    with pytest.raises(ValueError, match="sigma"):
        fit(pred, obs, {"lam": 1.0}, sigma=np.zeros(5))
    with pytest.raises(ValueError, match="sigma"):
        fit(pred, obs, {"lam": 1.0}, sigma=np.ones(3))
    with pytest.raises(ValueError, match="bounds"):
        fit(pred, obs, {"lam": 1.0}, bounds={"lam": (2.0, 3.0)})
    with pytest.raises(ValueError, match="bounds"):
        fit(pred, obs, {"lam": 1.0}, bounds={"mu": (2.0, 3.0)})
    with pytest.raises(ValueError, match="init"):
        fit(lambda p: jnp.log(p["lam"] - 2.0) * jnp.ones(5), obs, {"lam": 1.0})  # NaN at init
    with pytest.raises(ValueError, match="> 0"):
        fit(lambda p: (p["lam"] - 2.0) * jnp.ones(5), obs, {"lam": 1.0}, noise="multiplicative")


def test_lm_update_numpy_and_jax_agree_and_hold_a_parameter_on_its_bound():
    """fit (NumPy, host) and fit_batch (jax.numpy, traced) take the same LM step; a bound pushed outward holds."""
    import jax.numpy as jnp

    from jaxcell.inference import _lm_update

    rng = np.random.default_rng(3)
    j = rng.standard_normal((12, 3))
    r = rng.standard_normal(12)
    theta = np.array([0.1, -0.2, 0.3])
    lo, hi = np.full(3, -np.inf), np.full(3, np.inf)
    t_np, h_np, pred_np, g, a = _lm_update(theta, r, j, 0.5, lo, hi)
    np.testing.assert_allclose(h_np, -np.linalg.solve(j.T @ j + 0.5 * np.eye(3), j.T @ r), rtol=1e-12)
    t_j, h_j, pred_j, _, _ = _lm_update(jnp.asarray(theta), jnp.asarray(r), jnp.asarray(j), 0.5, jnp.asarray(lo),
                                        jnp.asarray(hi), xp=jnp)
    np.testing.assert_allclose(np.asarray(t_j), t_np, rtol=1e-12)
    assert abs(float(pred_j) - pred_np) <= 1e-12 * abs(pred_np) and pred_np > 0
    # parameter 0 sits on its upper bound and the gradient pushes it up: held, the others solve without it
    hi_b = np.array([theta[0] if g[0] < 0 else np.inf, np.inf, np.inf])
    lo_b = np.array([theta[0] if g[0] > 0 else -np.inf, -np.inf, -np.inf])
    t_b, h_b, _, _, _ = _lm_update(theta, r, j, 0.5, lo_b, hi_b)
    assert h_b[0] == 0.0 and t_b[0] == theta[0]
    np.testing.assert_allclose(h_b[1:], -np.linalg.solve(a[1:, 1:] + 0.5 * np.eye(2), g[1:]), rtol=1e-12)


def test_uncertainty_matches_the_inverse_fisher_and_flags_a_null_direction():
    from jaxcell.inference import _uncertainty

    rng = np.random.default_rng(4)
    j = rng.standard_normal((2, 20, 3))
    j[1, :, 2] = j[1, :, 1]  # member 1: parameters 1 and 2 enter only through their sum
    loss = np.array([0.8, 0.5])
    u = _uncertainty(j, loss, n_nuisance=1, sigma_given=False)
    s2 = 2 * loss / (20 - 3 - 1)
    np.testing.assert_allclose(u.s2, s2, rtol=1e-14)
    cov0 = s2[0] * np.linalg.inv(j[0].T @ j[0])
    np.testing.assert_allclose(u.covariance[0], cov0, rtol=1e-10)
    np.testing.assert_allclose(u.stderr[0], np.sqrt(np.diag(cov0)), rtol=1e-10)
    np.testing.assert_allclose(np.diag(u.correlation[0]), 1.0, rtol=1e-12)
    assert not u.unidentified[0].any()
    assert np.isfinite(u.stderr[1, 0]) and np.isinf(u.stderr[1, 1:]).all()
    k = int(np.flatnonzero(u.unidentified[1])[0])
    v = u.directions[1][:, k]
    np.testing.assert_allclose(np.abs(v), [0.0, 2 ** -0.5, 2 ** -0.5], atol=1e-8)  # D-k-like ridge: (0, 1, -1)/√2
    assert v[1] * v[2] < 0
    np.testing.assert_array_equal(_uncertainty(j, loss, 1, sigma_given=True).s2, 1.0)


def test_missing_points_marked_nan_give_the_fit_of_the_subset():
    """NaN in observed marks a missing point: the fit (values, standard errors, noise level, scale) equals
    the fit of the present points alone, for additive and multiplicative noise."""
    x = np.linspace(0.0, 100.0, 41)
    rng = np.random.default_rng(3)
    truth = 2.5 * np.exp(-x / 23.0) + 0.1
    obs = truth * np.exp(rng.normal(0, 0.05, x.size))
    missing = np.zeros(x.size, bool)
    missing[[0, 7, 8, 20, 33]] = True
    keep = ~missing
    with_nan = np.where(missing, np.nan, obs)
    for noise, nuisance in (("additive", "scale+offset"), ("multiplicative", "scale")):
        full = jc.fit(lambda p: jnp.exp(-jnp.asarray(x) / p["lam"]) + p["b"], with_nan,
                      {"lam": 10.0, "b": 0.05}, nuisance=nuisance if noise == "multiplicative" else "scale",
                      noise=noise)
        sub = jc.fit(lambda p: (jnp.exp(-jnp.asarray(x) / p["lam"]) + p["b"])[keep], obs[keep],
                     {"lam": 10.0, "b": 0.05}, nuisance=nuisance if noise == "multiplicative" else "scale",
                     noise=noise)
        for k in ("lam", "b"):
            assert full.params[k] == pytest.approx(sub.params[k], rel=1e-6), (noise, k)
            assert full.stderr[k] == pytest.approx(sub.stderr[k], rel=1e-5), (noise, k)
        assert full.sigma == pytest.approx(sub.sigma, rel=1e-5)
        assert full.scale == pytest.approx(sub.scale, rel=1e-6)
        assert np.all(full.residuals[missing] == 0)
    with pytest.raises(ValueError, match="NaN everywhere"):
        jc.fit(lambda p: jnp.exp(-jnp.asarray(x) / p["lam"]), np.full(x.size, np.nan), {"lam": 10.0})


def test_optax_lbfgs_reaches_the_levenberg_marquardt_optimum():
    """optimizer=optax.lbfgs() on the same loss: the same optimum (1e-4 in log-parameters) and the same
    standard errors; the gradient-norm tolerance is reported when max_steps runs out."""
    optax = pytest.importorskip("optax")
    with jax.enable_x64(True):
        g = jc.Grid((60,), 2.0)
        x = g.centers(0)
        rng = np.random.default_rng(5)

        def predict(p):
            m = jc.Model(g, jc.Substrate("s", p["D"], p["k"], boundary={"x-": jc.Dirichlet(1.0)}))
            _, traj = jc.simulate(m, m.init(), 600.0, 20.0, save_at=[200.0, 600.0])
            return traj.fields[:, 0]

        obs = np.asarray(predict({"D": 2.0, "k": 2e-3})) + rng.normal(0, 0.01, (2, x.size))
        lm = jc.fit(predict, obs, {"D": 1.0, "k": 1e-3})
        lb = jc.fit(predict, obs, {"D": 1.0, "k": 1e-3}, optimizer=optax.lbfgs(), max_steps=200, tol=1e-9)
        assert lb.converged, lb.warnings
        for k in ("D", "k"):
            assert abs(np.log(lb.params[k] / lm.params[k])) < 1e-4
            assert lb.stderr[k] == pytest.approx(lm.stderr[k], rel=1e-3)
        short = jc.fit(predict, obs, {"D": 1.0, "k": 1e-3}, optimizer=optax.adam(0.05), max_steps=3)
        assert not short.converged and any("max_steps" in w for w in short.warnings)
        with pytest.raises(ValueError, match="optax GradientTransformation"):
            jc.fit(predict, obs, {"D": 1.0, "k": 1e-3}, optimizer="lbfgs")


def test_joint_fit_of_two_data_sets_with_their_own_gain_background_and_noise():
    """Two 'embryos' share D and k but were imaged with different gain, background and noise, with gaps:
    the joint fit recovers D and k within 3 standard errors, each set's scale, offset and noise level,
    and is tighter than either set alone."""
    x = np.linspace(0.0, 60.0, 31)
    t = np.array([600.0, 1800.0, 3600.0])

    def model(p):
        lam = jnp.sqrt(p["D"] / p["k"])
        return jnp.exp(-jnp.asarray(x)[None, :] / lam) * (1 - jnp.exp(-p["k"] * jnp.asarray(t)[:, None]))

    truth = {"D": 0.4, "k": 1e-3}
    clean = np.asarray(model(truth))
    rng = np.random.default_rng(11)
    wt = 3.0 * clean + 0.2 + rng.normal(0, 0.02, clean.shape)
    mut = 0.7 * clean + rng.normal(0, 0.01, clean.shape)
    mut[1, 5:9] = np.nan  # a gap in the image
    observed = {"wt": wt, "mutant": mut}
    fit = jc.fit(lambda p: {"wt": model(p), "mutant": model(p)}, observed, {"D": 1.0, "k": 3e-4},
                 nuisance={"wt": "scale+offset", "mutant": "scale"})
    assert fit.converged, fit.warnings
    for k in ("D", "k"):
        assert abs(np.log(fit.params[k] / truth[k])) < 3 * fit.stderr[k], (k, fit.params, fit.stderr)
    assert fit.nuisance["wt"]["scale"] == pytest.approx(3.0, rel=0.02)
    assert fit.nuisance["wt"]["offset"] == pytest.approx(0.2, abs=0.01)
    assert fit.nuisance["mutant"]["scale"] == pytest.approx(0.7, rel=0.02)
    assert fit.nuisance["mutant"]["offset"] is None
    assert fit.nuisance["wt"]["sigma"] == pytest.approx(0.02, rel=0.2)
    assert fit.nuisance["mutant"]["sigma"] == pytest.approx(0.01, rel=0.2)
    alone = jc.fit(model, wt, {"D": 1.0, "k": 3e-4}, nuisance="scale+offset")
    assert fit.stderr["D"] < alone.stderr["D"]
    # given sigmas are used as they are (not re-estimated)
    given = jc.fit(lambda p: {"wt": model(p), "mutant": model(p)}, observed, {"D": 1.0, "k": 3e-4},
                   nuisance={"wt": "scale+offset", "mutant": "scale"}, sigma={"wt": 0.02, "mutant": 0.01})
    assert given.nuisance["wt"]["sigma"] is None
    assert abs(np.log(given.params["D"] / fit.params["D"])) < 0.5 * fit.stderr["D"]
    # an optax optimizer drives the same joint fit (each reweighting pass) to the same optimum
    import optax

    lb = jc.fit(lambda p: {"wt": model(p), "mutant": model(p)}, observed, {"D": 1.0, "k": 3e-4},
                nuisance={"wt": "scale+offset", "mutant": "scale"}, optimizer=optax.lbfgs(), max_steps=300,
                tol=1e-9)
    for k in ("D", "k"):
        assert abs(np.log(lb.params[k] / fit.params[k])) < 1e-4, (k, lb.params, fit.params, lb.warnings)
    with pytest.raises(ValueError, match="nuisance names the sets"):
        jc.fit(lambda p: {"wt": model(p)}, {"wt": wt}, {"D": 1.0, "k": 3e-4}, nuisance={"mutant": "scale"})
    with pytest.raises(ValueError, match="must return a dict with the keys"):
        jc.fit(model, {"wt": wt}, {"D": 1.0, "k": 3e-4})


def test_profile_likelihood_intervals_match_linear_gaussian_closed_form():
    """y = a·x + b·x² with Gaussian noise: the loss is quadratic in (a, b), so the profile-likelihood interval
    is â ± z·σ·√C_aa with C = (XᵀX)⁻¹ when σ is given, and â ± √(RSS(e^{z²/(n−2)} − 1)·C_aa) when σ is
    profiled out (n − 2 degrees of freedom); the fit's grid interval reproduces both (to 2e-4 of the
    half-width, interpolated between grid points)."""
    rng = np.random.default_rng(7)
    x = np.linspace(1.0, 2.0, 30)
    sd = 0.05
    y = 2.0 * x + 0.5 * x**2 + sd * rng.standard_normal(x.size)
    X = np.stack([x, x**2], 1)
    est, rss = np.linalg.lstsq(X, y, rcond=None)[:2]
    C = np.linalg.inv(X.T @ X)

    def predict(p):
        return p["a"] * x + p["b"] * x**2

    for level, sigma in ((0.95, sd), (0.9, None)):
        z = {0.95: 1.959963984540054, 0.9: 1.6448536269514722}[level]
        res = jc.fit(predict, y, {"a": 1.0, "b": 1.0}, sigma=sigma, profile=level)
        for i, name in enumerate("ab"):
            half = z * sd * np.sqrt(C[i, i]) if sigma is not None else np.sqrt(
                float(rss[0]) * np.expm1(z * z / (x.size - 2)) * C[i, i])
            lo, hi = res.ci[name]
            assert abs(lo - (est[i] - half)) < 2e-4 * half and abs(hi - (est[i] + half)) < 2e-4 * half, \
                (name, level, (lo, hi), est[i], half)
            prof = res.profile[name]
            assert prof["values"].shape == prof["loss"].shape == (41,)
            assert np.nanmin(prof["loss"]) <= prof["threshold"]


def test_profile_reports_a_side_the_data_do_not_bound():
    """A decay length far beyond the data's reach: the profile stays under the threshold above the fit,
    so the upper end is NaN and a warning says so."""
    x = np.linspace(0.0, 1.0, 12)
    y = np.exp(-x / 1e3) * 5.0

    def predict(p):
        return jnp.exp(-x / p["lam"])

    res = jc.fit(predict, y * (1 + 0.01 * np.cos(7 * x)), {"lam": 50.0}, nuisance="scale", profile=True)
    lo, hi = res.ci["lam"]
    assert np.isnan(hi)
    assert any("do not bound lam from above" in w for w in res.warnings), res.warnings
    with pytest.raises(ValueError, match="profile must be"):
        jc.fit(predict, y, {"lam": 50.0}, profile=1.5)


def test_profile_intervals_of_several_data_sets_match_the_joint_closed_form():
    """Two sets sharing (a, b), σ given per set: y_A = a·x + b·x², y_B = a·x + b with a gap; the joint loss
    in s.d. units is quadratic, so the interval is â ± z·√C_aa with C = (Σ X_kᵀX_k/σ_k²)⁻¹."""
    rng = np.random.default_rng(3)
    x = np.linspace(1.0, 2.0, 20)
    sa, sb = 0.05, 0.1
    ya = 2.0 * x + 0.5 * x**2 + sa * rng.standard_normal(x.size)
    yb = 2.0 * x + 0.5 + sb * rng.standard_normal(x.size)
    yb[4] = np.nan
    ok = ~np.isnan(yb)
    Xa, Xb = np.stack([x, x**2], 1), np.stack([x, np.ones_like(x)], 1)[ok]
    A = Xa.T @ Xa / sa**2 + Xb.T @ Xb / sb**2
    est = np.linalg.solve(A, Xa.T @ ya / sa**2 + Xb.T @ yb[ok] / sb**2)
    C = np.linalg.inv(A)

    def predict(p):
        return {"A": p["a"] * x + p["b"] * x**2, "B": p["a"] * x + p["b"]}

    res = jc.fit(predict, {"A": ya, "B": yb}, {"a": 1.0, "b": 1.0}, sigma={"A": sa, "B": sb}, profile=0.95,
                 profile_points=21)
    z = 1.959963984540054
    for i, name in enumerate("ab"):
        half = z * np.sqrt(C[i, i])
        lo, hi = res.ci[name]
        assert abs(lo - (est[i] - half)) < 2e-3 * half and abs(hi - (est[i] + half)) < 2e-3 * half, \
            (name, (lo, hi), est[i], half)


def test_profile_stays_inside_bounds_and_says_where_it_ends_there():
    """b held below its true value by a bound: the fit ends on it (and says so, one set or two), the profile
    grid never leaves the bounds, and the interval contains the estimate and ends at the bound."""
    rng = np.random.default_rng(1)
    x = np.linspace(1.0, 2.0, 30)
    y = 2.0 * x + 0.5 * x**2 + 0.05 * rng.standard_normal(x.size)

    def predict(p):
        return p["a"] * x + p["b"] * x**2

    res = jc.fit(predict, y, {"a": 1.0, "b": 0.3}, sigma=0.05, bounds={"b": (None, 0.4)}, profile=True)
    assert res.params["b"] == pytest.approx(0.4)
    lo, hi = res.ci["b"]
    assert lo < res.params["b"] <= hi == pytest.approx(0.4)
    assert np.all(res.profile["b"]["values"] <= 0.4 * (1 + 1e-12))
    assert any("ends at its bound 0.4" in w for w in res.warnings)
    two = jc.fit(lambda p: {"s": predict(p), "t": predict(p)}, {"s": y, "t": y[::-1][::-1]}, {"a": 1.0, "b": 0.3},
                 sigma=0.05, bounds={"b": (None, 0.4)}, profile=True, profile_points=11)
    assert any("ended at its bound" in w for w in two.warnings)
    assert two.ci["b"][0] < two.params["b"] <= two.ci["b"][1]
    with pytest.raises(ValueError, match="profile_points must be >= 5"):
        jc.fit(lambda p: {"s": predict(p)}, {"s": y}, {"a": 1.0, "b": 0.3}, profile=True, profile_points=1)
    with pytest.raises(ValueError, match="no degree of freedom left"):
        jc.fit(lambda p: {"s": predict(p), "t": predict(p)[:2]}, {"s": y, "t": y[:2]}, {"a": 1.0, "b": 0.3},
               nuisance={"s": None, "t": "scale+offset"})


"""jc.sample_posterior (NUTS) against analytic posteriors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcell as jc

pytest.importorskip("blackjax")


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def _is_normal(post, mean, cov):
    """The draws of log a, log b match N(mean, cov): means within 5 Monte Carlo errors, sds within 10 %;
    returns the summary."""
    summ = post.summary()
    for i, nm in enumerate(("a", "b")):
        t = np.log(post.samples[nm])
        ess = summ[nm]["ess"]
        assert ess > 200, summ
        assert abs(t.mean() - mean[i]) < 5 * np.sqrt(cov[i, i] / ess), (nm, t.mean(), mean[i])
        assert t.std() == pytest.approx(np.sqrt(cov[i, i]), rel=0.1)
    return summ


def test_linear_gaussian_posterior_matches_the_analytic_one():
    """y = θ1·x + θ2 with θ = log(params), known σ, normal priors on θ: the posterior is normal with
    precision XᵀX/σ² + diag(1/s²); NUTS means within 5 Monte Carlo errors, sds within 10 %."""
    x = np.linspace(0.0, 1.0, 20)
    rng = np.random.default_rng(2)
    theta_true = np.array([0.4, -0.3])
    sig = 0.1
    y = theta_true[0] * x + theta_true[1] + rng.normal(0, sig, x.size)
    prior = {"a": (0.0, 1.0), "b": (0.0, 0.5)}

    def predict(p):
        return jnp.log(p["a"]) * jnp.asarray(x) + jnp.log(p["b"])

    X = np.stack([x, np.ones_like(x)], axis=1)
    prec = X.T @ X / sig**2 + np.diag([1 / 1.0**2, 1 / 0.5**2])
    cov = np.linalg.inv(prec)
    mean = cov @ (X.T @ y / sig**2)
    post = jc.sample_posterior(predict, y, {"a": 1.0, "b": 1.0}, prior=prior, sigma=sig, num_samples=1000,
                               num_chains=2, num_warmup=300, key=jax.random.key(0))
    summ = _is_normal(post, mean, cov)
    for nm in ("a", "b"):
        assert summ[nm]["rhat"] < 1.05
    assert set(summ["a"]) == {"mean", "sd", "q05", "q50", "q95", "ess", "rhat"}
    assert post.divergences.sum() == 0


def test_a_steady_profile_pins_the_length_and_leaves_d_and_k_to_their_priors():
    """c = exp(−x/λ), λ = √(D/k): the data fix λ; D and k move together along the ridge as wide as the
    priors allow (sd of log D ≈ 1/√2 for unit priors on both), the noise level sampled too."""
    x = np.linspace(0.0, 80.0, 41)
    rng = np.random.default_rng(4)
    obs = np.exp(-x / 20.0) + rng.normal(0, 0.01, x.size)

    def predict(p):
        return jnp.exp(-jnp.asarray(x) / jnp.sqrt(p["D"] / p["k"]))

    post = jc.sample_posterior(predict, obs, {"D": 0.4, "k": 1e-3},
                               prior={"D": (np.log(0.4), 1.0), "k": (np.log(1e-3), 1.0)},
                               num_samples=800, num_chains=2, num_warmup=400, key=jax.random.key(1))
    lam = np.sqrt(post.samples["D"] / post.samples["k"])
    assert np.std(np.log(lam)) < 0.02
    assert np.mean(lam) == pytest.approx(20.0, rel=0.02)
    assert 0.5 < np.std(np.log(post.samples["D"])) < 0.9
    assert post.summary()["sigma"]["q50"] == pytest.approx(0.01, rel=0.3)


def test_bad_priors_are_refused():
    x = np.linspace(0.0, 1.0, 5)
    with pytest.raises(ValueError, match="prior names 'c'"):
        jc.sample_posterior(lambda p: p["a"] * jnp.asarray(x), x, {"a": 1.0}, prior={"c": (0.0, 1.0)},
                            key=jax.random.key(0))
    with pytest.raises(ValueError, match="sd > 0"):
        jc.sample_posterior(lambda p: p["a"] * jnp.asarray(x), x, {"a": 1.0}, prior={"a": (0.0, 0.0)},
                            key=jax.random.key(0))


def test_several_data_sets_share_parameters_with_their_own_noise():
    """Two sets sharing θ = log(params): y_A = θ1·x + θ2 (σ_A = 0.1), y_B = θ1·x² − θ2 (σ_B = 0.25), a gap in
    B; normal priors: the posterior is normal with precision Σ_k X_kᵀX_k/σ_k² + diag(1/s²) (NUTS means within
    5 Monte Carlo errors, sds within 10 %). Without sigma each set's noise level is sampled on its own."""
    x = np.linspace(0.0, 1.0, 25)
    rng = np.random.default_rng(5)
    th = np.array([0.4, -0.3])
    sa, sb = 0.1, 0.25
    ya = th[0] * x + th[1] + rng.normal(0, sa, x.size)
    yb = th[0] * x**2 - th[1] + rng.normal(0, sb, x.size)
    yb[[3, 11]] = np.nan
    prior = {"a": (0.0, 1.0), "b": (0.0, 0.5)}

    def predict(p):
        ta, tb = jnp.log(p["a"]), jnp.log(p["b"])
        return {"A": ta * jnp.asarray(x) + tb, "B": ta * jnp.asarray(x) ** 2 - tb}

    Xa = np.stack([x, np.ones_like(x)], 1)
    ok = ~np.isnan(yb)
    Xb = np.stack([x**2, -np.ones_like(x)], 1)[ok]
    prec = Xa.T @ Xa / sa**2 + Xb.T @ Xb / sb**2 + np.diag([1.0, 1 / 0.5**2])
    cov = np.linalg.inv(prec)
    mean = cov @ (Xa.T @ ya / sa**2 + Xb.T @ yb[ok] / sb**2)
    obs = {"A": ya, "B": yb}
    post = jc.sample_posterior(predict, obs, {"a": 1.0, "b": 1.0}, prior=prior, sigma={"A": sa, "B": sb},
                               num_samples=800, num_chains=2, num_warmup=300, key=jax.random.key(1))
    assert set(_is_normal(post, mean, cov)) == {"a", "b"}
    free = jc.sample_posterior(predict, obs, {"a": 1.0, "b": 1.0}, prior=prior, num_samples=500, num_chains=2,
                               num_warmup=300, key=jax.random.key(2))
    assert set(free.samples) == {"a", "b", "sigma:A", "sigma:B"}
    assert 0.7 * sa < np.median(free.samples["sigma:A"]) < 1.4 * sa
    assert 0.7 * sb < np.median(free.samples["sigma:B"]) < 1.4 * sb

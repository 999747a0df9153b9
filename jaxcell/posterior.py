"""Bayesian posteriors of a model's parameters by NUTS (blackjax; the extra ``jaxcell[bayes]``).

The parameters are sampled in log space, as :func:`jaxcell.fit` fits them. The
likelihood is :func:`jaxcell.fit`'s: residuals with the nuisance (scale, offset)
profiled in closed form, additive or multiplicative (log) noise, missing points
(NaN) left out. Priors are log-normal, ``prior[name] = (mean, sd)`` of
``log(param)``; a parameter without one has a flat prior on its logarithm. When
``sigma`` is not given the noise level is sampled too, flat on ``log σ``.
Chains start around the least-squares optimum (a ``jc.fit`` first) and adapt
step size and a diagonal mass matrix by Stan's window adaptation; a ridge
such as D and k along constant √(D/k) is then explored along its length.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcell._node import float_dtype
from jaxcell.inference import (
    Predict,
    _check_observed,
    _check_options,
    _check_sets,
    _check_sigma,
    _data,
    _make_residual,
    _sets_residual,
    fit,
)

__all__ = ["Posterior", "sample_posterior"]


@dataclasses.dataclass(frozen=True)
class Posterior:
    """Draws of :func:`sample_posterior`.

    Attributes:
        samples: name -> ``(num_chains·num_samples,)`` draws of the parameter (its own
            units; ``"sigma"`` too when the noise level was sampled).
        chains: name -> ``(num_chains, num_samples)`` the same draws per chain.
        acceptance: mean acceptance probability per chain.
        divergences: divergent transitions per chain.
    """

    samples: dict[str, np.ndarray]
    chains: dict[str, np.ndarray]
    acceptance: np.ndarray
    divergences: np.ndarray

    def summary(self) -> dict[str, dict[str, float]]:
        """name -> {mean, sd, q05, q50, q95, ess (effective sample size), rhat (split R̂ over chains)}."""
        from blackjax.diagnostics import effective_sample_size, potential_scale_reduction

        out = {}
        for name, x in self.samples.items():
            ch = jnp.asarray(self.chains[name])
            q05, q50, q95 = np.quantile(x, [0.05, 0.5, 0.95])
            multi = ch.shape[0] > 1
            out[name] = {"mean": float(np.mean(x)), "sd": float(np.std(x, ddof=1)), "q05": float(q05),
                         "q50": float(q50), "q95": float(q95),
                         "ess": float(jnp.ravel(effective_sample_size(ch))[0]),
                         "rhat": float(jnp.ravel(potential_scale_reduction(ch))[0]) if multi else float("nan")}
        return out


def sample_posterior(predict: Predict, observed: Any, init: Mapping[str, float], *,
                     prior: Mapping[str, tuple[float, float]] | None = None, nuisance: str | None = None,
                     noise: str = "additive", sigma: Any = None, num_samples: int = 1000, num_chains: int = 4,
                     num_warmup: int = 500, key: jax.Array) -> Posterior:
    """Sample the posterior of ``predict``'s positive parameters given ``observed``.

    Args:
        predict, observed, init, nuisance, noise, sigma: as for :func:`jaxcell.fit`
            (NaN marks a missing point). Several data sets (a dict of arrays, ``predict``
            returning a dict): the parameters are shared, each set's nuisance is
            eliminated on its own, and each set whose ``sigma`` is not given has its
            own noise level, sampled as ``"sigma:<set>"`` (flat on its log).
        prior: name -> ``(mean, sd)`` of ``log(param)`` (a log-normal prior);
            parameters not named get a flat prior on ``log(param)``.
        num_samples: draws per chain after warm-up.
        num_chains: independent chains (R̂ needs two or more).
        num_warmup: window-adaptation steps per chain.
        key: a ``jax.random.key``.

    Returns:
        A :class:`Posterior`; ``.summary()`` gives mean, sd, 5/50/95 % quantiles,
        effective sample size and R̂ per parameter.
    """
    try:
        import blackjax
    except ImportError:
        raise ImportError("jc.sample_posterior needs blackjax: pip install 'jaxcell[bayes]'") from None
    if isinstance(observed, Mapping):
        sets, nuis, noises, obs_sets, sig_sets = _check_sets(observed, nuisance, noise, sigma, None)
    else:
        _check_options(nuisance, noise, None)
        sets = ("",)
        obs_sets = {"": _check_observed(observed, noise, missing=True)}
        sig_sets = {"": _check_sigma(sigma, obs_sets[""].shape)}
    names = tuple(init)
    prior = dict(prior or {})
    for nm, pr in prior.items():
        if nm not in names:
            raise ValueError(f"prior names {nm!r}, which init lacks ({list(names)})")
        try:
            m, s = (float(v) for v in pr)
        except (TypeError, ValueError):
            raise ValueError(f"prior[{nm!r}] must be (mean, sd) of log({nm}), got {pr!r}") from None
        if not (math.isfinite(m) and math.isfinite(s) and s > 0):
            raise ValueError(f"prior[{nm!r}] = {pr!r}: the mean must be finite and the sd > 0")
    for what, v in (("num_samples", num_samples), ("num_chains", num_chains), ("num_warmup", num_warmup)):
        if int(v) < 1:
            raise ValueError(f"{what} must be >= 1, got {v}")
    dtype = float_dtype()
    best = fit(predict, observed, init, nuisance=nuisance, noise=noise, sigma=sigma)
    theta_hat = np.log([best.params[n] for n in names])
    parts = [_data(obs_sets[k], sig_sets[k]) for k in sets]
    o, w = jnp.concatenate([p[0] for p in parts]), jnp.concatenate([p[1] for p in parts])
    if sets == ("",):
        resid = _make_residual(predict, names, obs_sets[""].shape, nuisance, noise)
    else:
        resid = _sets_residual(predict, names, tuple((k, obs_sets[k].shape, nuis[k], noises[k]) for k in sets))
    sizes = [obs_sets[k].size for k in sets]
    bounds = np.cumsum([0, *sizes])
    n_obs = [int(np.sum(~np.isnan(obs_sets[k]))) for k in sets]
    sampled = [i for i, k in enumerate(sets) if sig_sets[k] is None]  # sets whose noise level is sampled
    mean = jnp.asarray([prior[n][0] if n in prior else 0.0 for n in names], dtype)
    sd = jnp.asarray([prior[n][1] if n in prior else 1.0 for n in names], dtype)
    has = jnp.asarray([n in prior for n in names])

    def logdensity(x: jax.Array) -> jax.Array:
        theta = x[:len(names)]
        r, _ = resid(theta, o, w)
        ll = jnp.zeros((), dtype)
        for i in range(len(sets)):
            ss = jnp.sum(r[bounds[i]:bounds[i + 1]] ** 2)
            if i in sampled:  # r in the set's data units: σ = exp(log σ), flat on log σ
                log_s = x[len(names) + sampled.index(i)]
                ll = ll - n_obs[i] * log_s - 0.5 * ss * jnp.exp(-2 * log_s)
            else:
                ll = ll - 0.5 * ss
        lp = jnp.sum(jnp.where(has, -0.5 * ((theta - mean) / sd) ** 2, 0.0))
        return ll + lp

    start = list(theta_hat)
    for i in sampled:
        s_hat = best.sigma if sets == ("",) else best.nuisance[sets[i]]["sigma"]
        start.append(math.log(s_hat) if s_hat is not None and np.isfinite(s_hat) and s_hat > 0 else 0.0)
    start = np.asarray(start)
    keys = jax.random.split(key, num_chains)
    draws, acc, div = [], [], []
    warm = blackjax.window_adaptation(blackjax.nuts, logdensity)
    for c in range(num_chains):
        k_init, k_warm, k_run = jax.random.split(keys[c], 3)
        x0 = jnp.asarray(start + 0.01 * np.asarray(jax.random.normal(k_init, start.shape)), dtype)
        (state, params), _ = warm.run(k_warm, x0, num_steps=int(num_warmup))
        kernel = blackjax.nuts(logdensity, **params)

        def one(st: Any, k: jax.Array, kernel: Any = kernel) -> tuple:
            st, info = kernel.step(k, st)
            return st, (st.position, info.acceptance_rate, info.is_divergent)

        _, (pos, a, d) = jax.lax.scan(one, state, jax.random.split(k_run, int(num_samples)))
        draws.append(np.asarray(pos, np.float64))
        acc.append(float(np.mean(a)))
        div.append(int(np.sum(d)))
    chains_x = np.stack(draws)  # (C, N, P[+1])
    labels = list(names) + ["sigma" if sets == ("",) else f"sigma:{sets[i]}" for i in sampled]
    chains = {nm: np.exp(chains_x[:, :, i]) for i, nm in enumerate(labels)}
    return Posterior(samples={k: v.reshape(-1) for k, v in chains.items()}, chains=chains,
                     acceptance=np.asarray(acc), divergences=np.asarray(div))

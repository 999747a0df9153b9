"""Differentiable inference: fit positive model parameters to measured data.

Protocol. The user writes ``predict(params) -> array`` where ``params`` is a dict
of positive scalars (any units: µm²/s, 1/s, ...) and the output has the shape of
``observed``. :func:`fit` minimises ``0.5 * Σ r²`` over ``θ = log(params)`` with
a Levenberg–Marquardt (LM) loop on the residual vector ``r(θ)``; JAX
differentiates through ``predict`` (and so through :func:`jaxcell.simulate` or
:func:`jaxcell.steady_state`) to get the Jacobian ``J = ∂r/∂θ``, forward mode
(``jax.jacfwd``) when there are fewer parameters than residuals, reverse mode
(``jax.jacrev``) otherwise. The value-and-Jacobian function is compiled once
per fit: LM iterations never retrace ``predict``.

Residuals (``o``: observed, ``y``: prediction, both flattened):

* ``noise="additive"``: ``r = w (o − a y − b)``, ``w = 1/sigma`` (1 if not given);
* ``noise="multiplicative"``: ``r = w (log o − log y − log a)`` (log-normal
  noise; needs ``o > 0``; no offset).

Nuisance parameters (``a`` an intensity scale, ``b`` an offset) are eliminated
in closed form for every ``θ`` (variable projection, Golub & Pereyra 1973,
*SIAM J. Numer. Anal.* 10:413): the optimal ``a`` (and ``b``) solve a tiny
linear least-squares problem, and differentiating the projected residual gives
the Jacobian whose ``JᵀJ`` is the Fisher information of ``θ`` with the
nuisances profiled out (the Schur complement), so the standard errors account
for them.

Uncertainty. ``cov = s² (JᵀJ)⁻¹`` in log-parameters, with ``s² = Σ r²/(n − P −
n_nuisance)`` when ``sigma`` is not given, else ``s² = 1``. ``stderr[name]`` is
the standard error of ``log(param)``, i.e. the *relative* error of ``param``
(0.05 means ±5 %). Directions of θ-space along which the Fisher matrix is
(numerically) singular, or along which the standard deviation exceeds
``max_log_sd`` (a factor ``e`` by default), are reported in ``unidentified``
and explained in ``warnings``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping
from fractions import Fraction
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxcell._node import float_dtype

__all__ = ["BatchFitResult", "FitResult", "fit", "fit_batch", "objective"]

NUISANCES = (None, "scale", "scale+offset")
NOISES = ("additive", "multiplicative")
MODES = (None, "forward", "reverse")
_N_NUISANCE = {None: 0, "scale": 1, "scale+offset": 2}

Predict = Callable[[dict[str, jax.Array]], jax.Array]


@dataclasses.dataclass(frozen=True)
class FitResult:
    """Outcome of :func:`fit`.

    Attributes:
        params: fitted values, name -> float, in the units ``predict`` uses.
        stderr: name -> standard error of ``log(param)`` = relative error of
            the parameter (0.05: ±5 %, one s.d.); ``inf`` for a parameter
            that lies in an unidentified direction.
        correlation: ``(P, P)`` correlation of the log-parameters (order of
            ``names``), from the pseudo-inverse of the Fisher matrix.
        covariance: ``(P, P)`` covariance of the log-parameters ``s² (JᵀJ)⁺``.
        loss: history of ``0.5 Σ r²`` (residuals as in the module docstring):
            the value at the start (after any warm-up), then one entry per LM
            iteration (and one after a fallback).
        converged: whether a tolerance was met before ``maxiter``.
        unidentified: directions in log-parameter space that the data do not
            constrain, each a dict name -> unit-vector coefficient (small
            entries dropped), e.g. ``[{"D": 0.71, "k": 0.71}]``.
        warnings: sentences for people (non-identifiability, large errors,
            no convergence, parameters at a bound).
        names: parameter names, in the order of ``correlation``.
        scale: fitted intensity scale ``a`` (None without a nuisance).
        offset: fitted offset ``b`` (None unless ``nuisance="scale+offset"``).
        sigma: noise standard deviation, estimated from the residuals (units of
            ``observed``, or of ``log observed`` for multiplicative noise), or 1
            when ``sigma=`` weights were given (residuals are then in s.d. units).
        iterations: LM iterations used.
        residuals: final residual vector ``(n,)`` (weighted/log as fitted; several
            data sets: concatenated in the order of ``observed``'s keys).
        nuisance: several data sets only: a dict per set ``{"scale", "offset",
            "sigma"}`` (``scale``/``offset`` None where not fitted; ``sigma`` the set's
            estimated noise s.d. in its units, None where ``sigma=`` gave it).
        ci: with ``fit(..., profile=level)``: name -> ``(low, high)``, the
            profile-likelihood confidence interval of the parameter at that level (in
            its units; NaN on a side the profile does not cross within the grid, and
            ``warnings`` says so); None otherwise.
        profile: with ``profile=``: name -> ``{"values": (K,), "loss": (K,),
            "threshold": float}``: the held values, the loss ``0.5 Σ r²`` with the
            other parameters (and nuisances) re-fitted at each, and the loss the
            interval ends at.
    """

    params: dict[str, float]
    stderr: dict[str, float]
    correlation: np.ndarray
    covariance: np.ndarray
    loss: np.ndarray
    converged: bool
    unidentified: list[dict[str, float]]
    warnings: list[str]
    names: tuple[str, ...]
    scale: float | None = None
    offset: float | None = None
    sigma: float = float("nan")
    iterations: int = 0
    residuals: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    nuisance: dict | None = None
    ci: dict[str, tuple[float, float]] | None = None
    profile: dict[str, dict] | None = None


# --------------------------------------------------------------------------- residuals


def _check_options(nuisance: Any, noise: Any, mode: Any) -> None:
    if nuisance not in NUISANCES:
        raise ValueError(f"nuisance must be one of {NUISANCES}, got {nuisance!r}")
    if noise not in NOISES:
        raise ValueError(f"noise must be 'additive' or 'multiplicative', got {noise!r}")
    if noise == "multiplicative" and nuisance == "scale+offset":
        raise ValueError("noise='multiplicative' works on log data, where an additive offset has no closed form: "
                         "use nuisance='scale' (or None), or noise='additive' with nuisance='scale+offset'")
    if mode not in MODES:
        raise ValueError(f"mode must be None (automatic), 'forward' or 'reverse', got {mode!r}")


def _check_observed(observed: Any, noise: str, missing: bool = False) -> np.ndarray:
    """``observed`` as float64; with ``missing``, NaN marks a missing point (at least one must be present)."""
    try:
        obs = np.asarray(observed, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("observed must be an array of numbers") from None
    if obs.size == 0:
        raise ValueError("observed is empty")
    if np.isnan(obs).any() and not missing:
        bad = np.argwhere(np.isnan(obs))[0].tolist()
        raise ValueError(f"observed{bad} is NaN: remove missing points (and the matching predictions) before fitting")
    if np.isnan(obs).all():
        raise ValueError("observed is NaN everywhere: there is nothing to fit")
    if np.isinf(obs).any():
        raise ValueError("observed holds infinite values")
    if noise == "multiplicative" and (obs <= 0).any():
        bad = np.argwhere(obs <= 0)[0].tolist()
        raise ValueError(f"noise='multiplicative' fits log(observed), but observed{bad} = {obs[tuple(bad)]} is not "
                         "positive: drop non-positive points or use noise='additive'")
    return obs


def _check_sigma(sigma: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    if sigma is None:
        return None
    s = np.asarray(sigma, dtype=np.float64)
    try:
        s = np.broadcast_to(s, shape)
    except ValueError:
        raise ValueError(f"sigma must be a scalar or broadcast to observed's shape {shape}, got {s.shape}") from None
    if not (np.isfinite(s).all() and (s > 0).all()):
        raise ValueError("sigma must be finite and > 0 everywhere (one standard deviation per observation)")
    return s


def _check_init(init: Any) -> tuple[tuple[str, ...], np.ndarray]:
    if not isinstance(init, Mapping) or not init:
        raise ValueError("init must be a non-empty dict name -> positive starting value")
    names = tuple(init)
    if not all(isinstance(n, str) for n in names):
        raise ValueError(f"init keys must be parameter names (str), got {names}")
    vals = []
    for n in names:
        try:
            v = float(np.asarray(init[n], dtype=np.float64).reshape(()))
        except (TypeError, ValueError):
            raise ValueError(f"init[{n!r}] must be a scalar number, got {init[n]!r}") from None
        if not (np.isfinite(v) and v > 0):
            raise ValueError(f"init[{n!r}] = {v}: parameters are fitted in log space and must start > 0 "
                             "(fit a signed quantity through a positive reparametrisation)")
        vals.append(v)
    return names, np.log(np.asarray(vals))


def _check_bounds(bounds: Any, names: tuple[str, ...], theta0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lo = np.full(len(names), -np.inf)
    hi = np.full(len(names), np.inf)
    if bounds is None:
        return lo, hi
    if not isinstance(bounds, Mapping):
        raise ValueError("bounds must be a dict name -> (low, high) in the parameter's units (None: unbounded)")
    for n, b in bounds.items():
        if n not in names:
            raise ValueError(f"bounds names {n!r}, which init lacks ({list(names)})")
        try:
            low, high = b
        except (TypeError, ValueError):
            raise ValueError(f"bounds[{n!r}] must be a pair (low, high), got {b!r}") from None
        i = names.index(n)
        if low is not None:
            if not low > 0:
                raise ValueError(f"bounds[{n!r}] low = {low} must be > 0 (parameters are positive)")
            lo[i] = math.log(low)
        if high is not None:
            if not high > 0:
                raise ValueError(f"bounds[{n!r}] high = {high} must be > 0")
            hi[i] = math.log(high)
        if lo[i] > hi[i]:
            raise ValueError(f"bounds[{n!r}] = {b!r} has low > high")
        if not lo[i] - 1e-12 <= theta0[i] <= hi[i] + 1e-12:
            raise ValueError(f"init[{n!r}] = {math.exp(theta0[i]):g} lies outside bounds {b!r}")
    return lo, hi


def _nuisance(y: jax.Array, o: jax.Array, w2: jax.Array, nuisance: str | None,
              noise: str) -> tuple[jax.Array, jax.Array]:
    """Closed-form optimal (scale, offset) for prediction ``y`` and data ``o`` (flat).

    Additive: weighted linear least squares of ``o ≈ a y + b``; multiplicative:
    ``log a`` is the weighted mean log-ratio. A degenerate design (``y`` all
    zero, or constant with an offset) gives ``a = 0`` rather than NaN.
    """
    one, zero = jnp.ones((), y.dtype), jnp.zeros((), y.dtype)
    if nuisance is None:
        return one, zero
    if noise == "multiplicative":
        return jnp.exp(jnp.sum(w2 * (jnp.log(o) - jnp.log(y))) / jnp.sum(w2)), zero
    if nuisance == "scale":
        syy = jnp.sum(w2 * y * y)
        ok = syy > 0
        return jnp.where(ok, jnp.sum(w2 * y * o) / jnp.where(ok, syy, 1), 0), zero
    sw = jnp.sum(w2)
    ym, om = jnp.sum(w2 * y) / sw, jnp.sum(w2 * o) / sw
    vyy = jnp.sum(w2 * (y - ym) ** 2)
    ok = vyy > 1e-30 * jnp.maximum(jnp.sum(w2 * y * y), 1e-300)
    a = jnp.where(ok, jnp.sum(w2 * (y - ym) * (o - om)) / jnp.where(ok, vyy, 1), 0)
    return a, om - a * ym


def _call(predict: Predict, p: dict[str, Any]) -> jax.Array:
    """``predict(p)`` as an array; a parameter it reads but was not given is a clear error."""
    try:
        return jnp.asarray(predict(p))
    except KeyError as e:
        raise ValueError(f"predict raised KeyError({e.args[0]!r}); if {e.args[0]!r} is a model parameter, it is "
                         f"not among those given ({list(p)}): add it to init (fitted) or, in fit_batch, "
                         "to fixed=") from None


def _why_bad_prediction(predict: Predict, params: dict[str, Any], noise: str, dtype: Any) -> str:
    """Why ``predict(params)`` cannot be fitted: the first bad value, its index and what to do ("" if none found).

    With ``noise="multiplicative"`` a value <= 0 has no logarithm. Tiny ones next
    to a large peak are round-off: the implicit, lod and spectral solvers undershoot
    zero by ~1e-7 of the peak in float32 far from the sources.
    """
    try:
        y = np.asarray(_call(predict, {k: jnp.asarray(v, dtype) for k, v in params.items()}), np.float64)
    except Exception:  # noqa: BLE001 - the caller's own error says the rest
        return ""
    flat = y.reshape(-1)
    bad = np.flatnonzero(~np.isfinite(flat))
    if bad.size:
        i = tuple(int(v) for v in np.unravel_index(bad[0], y.shape))
        return (f"; predict returned {flat[bad[0]]} at index {i} ({bad.size} of {flat.size} values not finite): "
                "check the parameters' ranges and the model's stability (a smaller dt)")
    if noise != "multiplicative" or (flat > 0).all():
        return ""
    bad = np.flatnonzero(flat <= 0)
    i = tuple(int(v) for v in np.unravel_index(bad[0], y.shape))
    lo, peak = float(flat.min()), float(np.abs(flat).max())
    if peak > 0 and abs(lo) <= 1e-3 * peak:
        cause = ("round-off negatives or zeros, as the implicit/lod/spectral solvers give far from the sources "
                 f"(in {np.dtype(dtype).name}); clip with jnp.maximum(pred, tiny), use float64 "
                 "(JAX_ENABLE_X64=1) or noise='additive'")
    else:
        cause = ("the model predicts no positive signal there, and log(prediction) is undefined; "
                 "use noise='additive' or leave those points out")
    return (f"; predict returned a value <= 0 at index {i} ({bad.size} of {flat.size} values; min {lo:.3g} "
            f"of a peak {peak:.3g}): {cause}")


def _make_residual(predict: Predict, names: tuple[str, ...], shape: tuple[int, ...], nuisance: str | None,
                   noise: str, fixed_names: tuple[str, ...] = ()) -> Callable[..., tuple[jax.Array, tuple]]:
    """``(theta (P,), o (n,), w (n,)[, fx (F,)]) -> (r (n,), (scale, offset))``: the projected residual (not jitted).

    ``o`` is the flattened data, ``w`` the weights ``1/sigma``, ``fx`` the values
    of the held (not fitted) parameters ``fixed_names``; all are arguments (not
    constants) so that one compiled function serves every data set and held value.
    """
    def residual(theta: jax.Array, o: jax.Array, w: jax.Array, fx: jax.Array | None = None) -> tuple[jax.Array, tuple]:
        p = {n: jnp.exp(theta[i]) for i, n in enumerate(names)}
        p.update({n: fx[i] for i, n in enumerate(fixed_names)})
        y = _call(predict, p)
        if tuple(y.shape) != shape:
            raise ValueError(f"predict(params) returned shape {tuple(y.shape)} but observed has shape {shape}; "
                             "they must match element for element")
        y = y.reshape(-1).astype(o.dtype)
        present = w > 0
        if noise == "multiplicative":  # a missing point's prediction may be <= 0: keep its log finite
            y = jnp.where(present, y, 1.0)
        a, b = _nuisance(y, o, w * w, nuisance, noise)
        if noise == "multiplicative":
            r = w * (jnp.log(o) - jnp.log(y) - jnp.log(a))
        else:
            r = w * (o - a * y - b)
        return jnp.where(present, r, 0.0), (a, b)

    return residual


@functools.lru_cache(maxsize=16)
def _compiled(predict: Predict, names: tuple[str, ...], shape: tuple[int, ...], nuisance: str | None, noise: str,
              mode: str) -> Callable[[jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array, tuple]]:
    """Jitted ``(theta, o, w) -> (r, J = ∂r/∂theta, (scale, offset))``, cached per predict and options.

    One trace of ``predict`` per cache entry: LM iterations and repeated fits of
    new data with the same ``predict`` reuse the compiled code. Holds a
    reference to the 16 most recent ``predict`` functions.
    """
    return _value_and_jac(_make_residual(predict, names, shape, nuisance, noise), mode)


def _value_and_jac(residual: Callable[..., tuple], mode: str) -> Callable[..., tuple]:
    """Jitted ``(theta, o, w) -> (r, J = ∂r/∂theta, nuisances)`` of ``residual(theta, o, w) -> (r, nuisances)``."""
    jac = jax.jacfwd if mode == "forward" else jax.jacrev

    def value_and_jac(theta: jax.Array, o: jax.Array, w: jax.Array) -> tuple[jax.Array, jax.Array, Any]:
        def both(t: jax.Array) -> tuple[jax.Array, tuple]:
            r, ab = residual(t, o, w)
            return r, (r, ab)

        j, (r, ab) = jac(both, has_aux=True)(theta)
        return r, j, ab

    return jax.jit(value_and_jac)


def _data(obs: np.ndarray, sigma: np.ndarray | None) -> tuple[jax.Array, jax.Array]:
    """Flat data and weights ``1/sigma``; a missing (NaN) point gets weight 0 and the placeholder value 1
    (finite, and positive for the logarithm of multiplicative noise), so it counts in no sum."""
    dtype = float_dtype()
    flat = obs.reshape(-1)
    w = 1.0 / sigma.reshape(-1) if sigma is not None else np.ones(obs.size)
    missing = np.isnan(flat)
    return jnp.asarray(np.where(missing, 1.0, flat), dtype), jnp.asarray(np.where(missing, 0.0, w), dtype)


def objective(predict: Predict, observed: Any, *, nuisance: str | None = None, noise: str = "additive",
              sigma: Any = None) -> Callable[[dict[str, Any]], jax.Array]:
    """The loss :func:`fit` minimises, as a differentiable function of the parameters.

    Returns ``loss(params) = 0.5 Σ r²`` (scalar) with the nuisances eliminated
    in closed form; ``params`` is a dict of positive values in natural units,
    so ``jax.grad(loss)(params)`` is ``∂loss/∂param`` (not the log-gradient).
    Arguments as in :func:`fit`.
    """
    _check_options(nuisance, noise, None)
    obs = _check_observed(observed, noise, missing=True)
    sig = _check_sigma(sigma, obs.shape)

    o, w = _data(obs, sig)

    def loss(params: dict[str, Any]) -> jax.Array:
        names = tuple(params)
        res = _make_residual(predict, names, obs.shape, nuisance, noise)
        theta = jnp.log(jnp.stack([jnp.asarray(params[n], float_dtype()) for n in names]))
        r, _ = res(theta, o, w)
        return 0.5 * jnp.sum(r * r)

    return loss


# --------------------------------------------------------------------------- identifiability


def _direction(v: np.ndarray, names: tuple[str, ...], cut: float = 0.05) -> dict[str, float]:
    v = v / np.linalg.norm(v)
    v = v * np.sign(v[np.argmax(np.abs(v))])
    return {n: float(round(c, 3)) for n, c in zip(names, v, strict=True) if abs(c) >= cut}


def _exponent(x: float) -> str:
    f = Fraction(x).limit_denominator(4)
    if abs(float(f) - x) > 0.02:
        return f"{x:.2f}"
    return str(f.numerator) if f.denominator == 1 else f"({f.numerator}/{f.denominator})"


def _monomial(coef: Mapping[str, float]) -> str:
    parts = []
    for n, c in coef.items():
        e = _exponent(c)
        parts.append(n if e == "1" else f"{n}^{e}")
    return "·".join(parts)


def _unidentified_message(d: dict[str, float]) -> str:
    names = list(d)
    if len(names) == 1:
        return (f"the data do not determine {names[0]}: the fit is unchanged when it varies "
                "(log standard deviation above the threshold or Fisher matrix singular along it)")
    moving = _monomial({n: c / abs(d[names[0]]) for n, c in d.items()})
    msg = (f"{', '.join(names[:-1])} and {names[-1]} are not identified separately: the fit is (nearly) "
           f"unchanged along the log-parameter direction {d}, so {moving} is not determined")
    if len(names) == 2:
        a, b = names
        ra = d[b] / d[a]  # orthogonal combination a^1 · b^(-d_a/d_b)... normalised on a
        comb = _monomial({a: 1.0, b: -1.0 / ra})
        msg += f"; only {comb} is determined"
        if abs(abs(ra) - 1) < 0.02 and ra > 0:
            msg += f" (e.g. a decay length λ = √({a}/{b}) when {a} is a diffusivity and {b} a rate)"
    return msg


# --------------------------------------------------------------------------- one LM step, one uncertainty summary


def _lm_update(theta: Any, r: Any, j: Any, mu: Any, lo: Any, hi: Any, xp: Any = np) -> tuple:
    """One projected Levenberg–Marquardt step in log-parameters, for :func:`fit` and :func:`fit_batch`.

    Solves ``(JᵀJ + mu I) h = −Jᵀr`` over the free parameters: a parameter on a
    bound that the gradient pushes outward is held (``h = 0``; solving for it and
    clipping afterwards would leave the free ones creeping). The new point is
    clipped to the bounds. A non-finite solution becomes ``h = 0``.

    Args:
        theta: ``(P,)`` log-parameters (on or inside ``[lo, hi]``).
        r: ``(n,)`` residuals at ``theta``.
        j: ``(n, P)`` Jacobian ``∂r/∂theta``.
        mu: damping ``> 0`` (scalar, units of ``JᵀJ``).
        lo, hi: ``(P,)`` bounds on ``theta`` (``±inf``: none).
        xp: the array module: ``numpy`` (the host loop of :func:`fit`, float64)
            or ``jax.numpy`` (traced and vmapped in :func:`fit_batch`). No Python
            control flow on values, so both give the same step.

    Returns:
        ``(theta_new (P,), h (P,), predicted, g (P,), a (P, P))``: the clipped
        new point, the unclipped step, the reduction of ``0.5 Σ r²`` that the
        linear model predicts for the clipped step ``theta_new − theta``, the
        gradient ``Jᵀr`` and ``JᵀJ``.
    """
    g = j.T @ r
    a = j.T @ j
    free = ~(((theta >= hi) & (g < 0)) | ((theta <= lo) & (g > 0)))
    keep = xp.outer(free, free)
    eye = xp.eye(theta.shape[0], dtype=a.dtype)
    h = -xp.linalg.solve(xp.where(keep, a, 0.0) + xp.where(free, mu, 1.0) * eye, xp.where(free, g, 0.0))
    h = xp.where(xp.all(xp.isfinite(h)), h, 0.0)
    t_new = xp.clip(theta + h, lo, hi)
    step = t_new - theta
    predicted = -(g @ step) - 0.5 * step @ a @ step
    return t_new, h, predicted, g, a


def _lm_damping(mu: Any, nu: Any, loss: Any, loss_new: Any, predicted: Any, xp: Any = np) -> tuple:
    """Accept or reject an LM step and adapt the damping (Nielsen 1999: gain ratio ``rho``).

    A step is accepted when both losses are finite and the gain ratio
    ``rho = (loss − loss_new) / predicted`` is positive; then
    ``mu ← mu · max(1/3, 1 − (2 rho − 1)³)`` and ``nu ← 2``, else ``mu ← mu · nu``
    and ``nu ← 2 nu``. Scalars (or 0-d arrays) of module ``xp`` (numpy or jax.numpy).

    Returns:
        ``(accept, rho, mu_new, nu_new)``.
    """
    ok = predicted > 0
    rho = xp.where(ok, (loss - loss_new) / xp.where(ok, predicted, 1.0), -1.0)
    accept = xp.isfinite(loss_new) & (rho > 0) & xp.isfinite(loss)
    rho_c = xp.clip(rho, 0.0, 1.0)  # same factor on (0, 1], 1/3 above; no overflow for huge |rho|
    mu_new = xp.where(accept, mu * xp.maximum(1.0 / 3.0, 1.0 - (2.0 * rho_c - 1.0) ** 3), mu * nu)
    nu_new = xp.where(accept, 2.0, 2.0 * nu)
    return accept, rho, mu_new, nu_new


class _Uncertainty(NamedTuple):
    """Uncertainty of ``B`` fits in log-parameters (see :func:`_uncertainty`)."""

    s2: np.ndarray  # (B,) noise variance scale s² (1 with sigma=, NaN without degrees of freedom)
    covariance: np.ndarray  # (B, P, P) s² (JᵀJ)⁺
    stderr: np.ndarray  # (B, P) standard error of log(param); inf along a singular direction
    correlation: np.ndarray  # (B, P, P)
    directions: np.ndarray  # (B, P, P) eigenvectors of JᵀJ, one per column
    unidentified: np.ndarray  # (B, P) bool: eigen-direction k is singular or has s.d. > max_log_sd


def _uncertainty(j: np.ndarray, loss: np.ndarray, n_nuisance: int, sigma_given: bool,
                 max_log_sd: float = 1.0) -> _Uncertainty:
    """Covariance, standard errors, correlations and unidentified directions of ``B`` fits (host, float64).

    ``cov = s² (JᵀJ)⁺`` with ``s² = 2 loss / (n − P − n_nuisance)`` (1 when
    ``sigma_given``; NaN without degrees of freedom). The pseudo-inverse drops
    eigen-directions whose eigenvalue is at most ``1e-10`` times the largest;
    a parameter with weight above ``1e-4`` on such a direction gets ``stderr = inf``.
    Non-finite Fisher entries (a member that diverged) count as 0.

    Args:
        j: ``(B, n, P)`` final Jacobians of the residuals in log-parameters.
        loss: ``(B,)`` final ``0.5 Σ r²``.
        n_nuisance: degrees of freedom taken besides the parameters: nuisances eliminated in
            closed form (0, 1, 2) plus missing points; a number or one per member ``(B,)``.
        sigma_given: residuals are in noise s.d. units (``sigma=`` given): ``s² = 1``.
        max_log_sd: a direction with standard deviation above this is unidentified.
    """
    b, n, p = j.shape
    dof = np.broadcast_to(n - p - np.asarray(n_nuisance), (b,))  # per member (missing points differ)
    if sigma_given:
        s2 = np.ones(b)
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            s2 = np.where(dof > 0, 2.0 * np.asarray(loss, np.float64) / np.where(dof > 0, dof, 1), np.nan)
    with np.errstate(invalid="ignore", over="ignore"):
        fisher = j.transpose(0, 2, 1) @ j
    fisher = np.where(np.isfinite(fisher), fisher, 0.0)
    evals, evecs = np.linalg.eigh(fisher)
    top = np.maximum(evals[:, -1:], 1e-300)
    singular = evals <= 1e-10 * top
    inv = np.where(singular, 0.0, 1.0 / np.where(singular, 1.0, evals))
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        cov = (s2[:, None, None] * (evecs * inv[:, None, :])) @ evecs.transpose(0, 2, 1)
        sd_dir = np.sqrt(s2[:, None] * np.where(singular, np.inf, inv))
        unidentified = singular | (sd_dir > max_log_sd)
        var = np.diagonal(cov, axis1=1, axis2=2)
        d = np.sqrt(var)
        corr = cov / (d[:, :, None] * d[:, None, :])
    weight_null = np.sum(evecs ** 2 * singular[:, None, :], axis=2)
    se = np.where(weight_null > 1e-4, np.inf, np.sqrt(np.maximum(var, 0.0)))
    return _Uncertainty(s2, cov, se, corr, evecs, unidentified)


# --------------------------------------------------------------------------- fit


def fit(predict: Predict, observed: Any, init: Mapping[str, float], *, nuisance: str | None = None,
        noise: str = "additive", sigma: Any = None, bounds: Mapping[str, tuple] | None = None,
        mode: str | None = None, maxiter: int = 100, ftol: float = 1e-10, xtol: float = 1e-10,
        gtol: float = 1e-10, max_log_sd: float = 1.0, rel_error_warn: float = 0.1, warmup_steps: int = 0,
        fallback_steps: int = 100, adam_lr: float = 0.05, optimizer: Any = None, max_steps: int = 500,
        tol: float = 1e-8, profile: bool | float = False, profile_points: int = 41) -> FitResult:
    """Fit positive parameters of ``predict`` to ``observed`` by Levenberg–Marquardt in log space.

    Args:
        predict: ``params -> prediction`` with ``params`` a dict of positive
            scalars (traced) and the prediction shaped like ``observed``. Must
            be a JAX-traceable function (e.g. built on :func:`jaxcell.simulate`
            with concrete ``save_at`` times).
        observed: measurements, any shape; NaN marks a missing point, which
            counts in no sum and no degree of freedom (its residual is 0). Several
            data sets: a dict name -> array, ``predict`` then returns a dict with the
            same keys; the parameters are shared, each set has its own nuisance
            (``nuisance``, ``noise`` and ``sigma`` may then be dicts per set) and, when
            its ``sigma`` is not given, its own noise level, estimated by reweighting
            (each set's residuals divided by its estimated s.d., three passes).
        init: name -> starting value (> 0). Fitted in ``log`` space.
        nuisance: None, ``"scale"`` (unknown intensity factor ``a``: fluorescence
            in arbitrary units) or ``"scale+offset"`` (``a y + b``, additive
            noise only). Eliminated in closed form (variable projection).
        noise: ``"additive"`` (residuals ``obs − pred``) or
            ``"multiplicative"`` (``log obs − log pred``; log-normal noise;
            ``observed`` must be > 0).
        sigma: optional standard deviation per observation (scalar or
            broadcastable to ``observed``; for multiplicative noise, of
            ``log observed``). Residuals are divided by it and the error scale
            is then 1 (not re-estimated).
        bounds: optional name -> ``(low, high)`` in the parameter's units
            (either may be None); steps are clipped to them.
        mode: Jacobian mode: None (forward when parameters ≤ residuals, else
            reverse), ``"forward"`` (``jax.jacfwd``) or ``"reverse"`` (``jax.jacrev``).
        maxiter: maximum LM iterations (each one evaluates residuals and Jacobian once).
        ftol, xtol, gtol: convergence on the relative loss decrease of an
            accepted step, on the step length in log space, and on the largest
            cosine between the residual and a Jacobian column.
        max_log_sd: a direction of log-parameter space whose standard deviation
            exceeds this is reported as unidentified (1.0: a factor e).
        rel_error_warn: warn about any parameter whose relative standard error
            exceeds this (0.1: 10 %).
        warmup_steps: Adam steps (``optax.adam``) on the loss before LM starts
            (default 0); can help from a start far from the data.
        fallback_steps: when LM stalls (the damping grows by 1e12 without an
            accepted step) before a tolerance is met, this many Adam steps are
            taken, once, and LM resumes from the best point seen.
        adam_lr: Adam's learning rate, in log-parameter units per step.
        optimizer: an optax ``GradientTransformation`` (e.g. ``optax.lbfgs()``,
            ``optax.adam(0.05)``) that drives the fit instead of Levenberg–Marquardt,
            on the same loss (nuisances eliminated as above) and in log-parameters;
            steps are clipped to ``bounds`` (the optimizer does not know them: with a
            bound active, L-BFGS's curvature model may stall short of the optimum, and
            ``fit.warnings`` then says the gradient tolerance was not reached; LM
            handles bounds). Standard errors are computed as for LM.
        max_steps: at most this many optimizer steps (with ``optimizer=``).
        tol: with ``optimizer=``, the fit stops when the norm of the loss's gradient
            with respect to the log-parameters (without the components of parameters
            held on a bound by it) is at most ``tol``; ``fit.warnings`` says when it
            was not reached.
        profile: False, True (level 0.95) or a level in (0, 1): also compute each
            parameter's profile likelihood and its confidence interval
            (``fit.profile``, ``fit.ci``). Each parameter is held on
            ``profile_points`` values spaced evenly in log around the optimum (to
            ``±2.5·z·stderr``, at least ±2 %, at most a factor e³), the others and
            the nuisances re-fitted at each (:func:`fit_batch`, one compiled
            program); the interval is where the loss crosses ``loss_min + z²/2``
            when ``sigma`` is given, ``loss_min·exp(z²/n)`` when the noise level is
            estimated (σ profiled out; n observed points), with z the standard
            normal quantile of ``(1 + level)/2``; crossings are interpolated
            between grid points, linearly in √(loss − loss_min) against log-parameter.
            Several data sets: each set's noise level is held at its estimate (or
            given ``sigma``), the threshold is ``loss_min + z²/2``, and each held
            value is one :func:`fit` of the others (the held parameter pinned by
            its bounds).
        profile_points: grid points per parameter for ``profile`` (odd: the optimum is one).

    LM is a local method: a start on the wrong side of a flat region (e.g. a
    relaxation time far shorter than the first snapshot) can end on a poor
    local minimum; a large ``sigma`` (estimated noise) or an ``unidentified``
    report at the end are the symptoms. Start from physically plausible values.

    Returns:
        A :class:`FitResult`.

    Raises:
        ValueError: bad options, non-positive ``init``, ``observed`` all NaN or infinite,
            non-positive ``observed`` with multiplicative noise, a prediction
            whose shape differs from ``observed``, or a prediction at ``init``
            that is not finite (or not positive, with multiplicative noise).

    Example:
        >>> import jax.numpy as jnp, numpy as np
        >>> from jaxcell.inference import fit
        >>> x = np.linspace(0.0, 50.0, 11)
        >>> obs = 3.0 * np.exp(-x / 20.0)
        >>> res = fit(lambda p: jnp.exp(-x / p["lam"]), obs, {"lam": 10.0}, nuisance="scale")
        >>> round(res.params["lam"], 3), round(res.scale, 3)
        (20.0, 3.0)
    """
    level = _profile_level(profile)
    if isinstance(observed, Mapping):
        res = _fit_sets(predict, observed, init, nuisance=nuisance, noise=noise, sigma=sigma, bounds=bounds,
                        mode=mode, maxiter=maxiter, ftol=ftol, xtol=xtol, gtol=gtol, max_log_sd=max_log_sd,
                        rel_error_warn=rel_error_warn, fallback_steps=fallback_steps, adam_lr=adam_lr,
                        warmup_steps=warmup_steps, optimizer=optimizer, max_steps=max_steps, tol=tol)
        if level is None:
            return res
        return _profile_sets(predict, observed, res, level, int(profile_points), nuisance=nuisance, noise=noise,
                             sigma=sigma, bounds=bounds)
    _check_options(nuisance, noise, mode)
    obs = _check_observed(observed, noise, missing=True)
    sig = _check_sigma(sigma, obs.shape)
    names, theta0 = _check_init(init)
    lo, hi = _check_bounds(bounds, names, theta0)
    maxiter = int(maxiter)
    if maxiter < 0:
        raise ValueError(f"maxiter must be >= 0, got {maxiter}")
    n_missing = int(np.isnan(obs).sum())
    n, p_count = obs.size - n_missing, len(names)
    n_nuis = _N_NUISANCE[nuisance]
    dtype = float_dtype()

    if mode is None:
        mode = "forward" if p_count <= n else "reverse"
    try:
        evaluate = _compiled(predict, names, obs.shape, nuisance, noise, mode)
    except TypeError:  # an unhashable callable: compile for this fit only
        evaluate = _compiled.__wrapped__(predict, names, obs.shape, nuisance, noise, mode)
    o, w = _data(obs, sig)
    refused: list[np.ndarray] = []  # trial points whose prediction gave a non-finite loss (penalised, rejected)

    def call(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[float, float], float]:
        r, j, (a, b) = evaluate(jnp.asarray(theta, dtype), o, w)
        r = np.asarray(r, np.float64)
        j = np.asarray(j, np.float64)
        loss = 0.5 * float(r @ r)
        if not (np.isfinite(loss) and np.isfinite(j).all()):
            loss = np.inf
            refused.append(np.array(theta))
        return r, j, (float(a), float(b)), loss

    theta = np.clip(theta0, lo, hi)
    r, J, ab, loss = call(theta)
    if not np.isfinite(loss):
        what = "finite and positive" if noise == "multiplicative" else "finite"
        why = _why_bad_prediction(predict, {k: float(np.exp(t)) for k, t in zip(names, theta, strict=True)},
                                  noise, dtype)
        raise ValueError(f"predict(init) gives a non-finite loss or Jacobian: the prediction at {dict(init)} must "
                         f"be {what} (with noise='multiplicative' every predicted value must be > 0){why}")

    if warmup_steps > 0:
        theta, r, J, ab, loss = _adam(call, theta, r, J, ab, loss, lo, hi, int(warmup_steps), adam_lr)
    history = [loss]
    warns: list[str] = []
    converged = False
    it = 0
    if optimizer is not None:
        residual = _make_residual(predict, names, obs.shape, nuisance, noise)
        value_fn = jax.jit(lambda t: 0.5 * jnp.sum(residual(t, o, w)[0] ** 2))
        theta, r, J, ab, loss, history, it, converged = _optax_fit(
            optimizer, call, value_fn, theta, r, J, ab, loss, lo, hi, int(max_steps), float(tol), dtype)
        if not converged:
            warns.append(f"the optimizer did not reach |gradient| <= tol = {tol:g} in {it} steps (max_steps="
                         f"{max_steps}); the loss went from {history[0]:.4g} to {loss:.4g}: raise max_steps, change "
                         "the optimizer's settings, or use the default Levenberg–Marquardt")
        maxiter = 0  # no LM iterations after it
    if maxiter > 0:
        theta, r, J, ab, loss, hist, it, converged = _levenberg_marquardt(
            call, theta, r, J, ab, loss, lo, hi, maxiter, ftol, xtol, gtol, fallback_steps, adam_lr)
        history += hist[1:]
    if not converged and optimizer is None:
        warns.append(f"the fit did not converge in {it} iterations (maxiter={maxiter}); the loss went from "
                     f"{history[0]:.4g} to {loss:.4g}: raise maxiter, start closer, or check the model")
    if refused and not converged:
        at = {nm: float(np.exp(t)) for nm, t in zip(names, refused[-1], strict=True)}
        warns.append(f"{len(refused)} trial step(s) were rejected for a non-finite loss, the last at {at}"
                     f"{_why_bad_prediction(predict, at, noise, dtype)}")

    # ---- uncertainty -----------------------------------------------------------------------
    if sig is None and n - p_count - n_nuis <= 0:
        warns.append(f"{n} observations for {p_count} parameters and {n_nuis} nuisance(s): no degrees of freedom "
                     "left to estimate the noise level, so standard errors are undefined (give sigma=)")
    # a missing point is a zero row of J and r: it takes a degree of freedom away, like a nuisance
    unc = _uncertainty(J[None], np.asarray([loss]), n_nuis + n_missing, sig is not None, max_log_sd)
    s2, cov, se, corr = float(unc.s2[0]), unc.covariance[0], unc.stderr[0], unc.correlation[0]
    unidentified = [_direction(unc.directions[0][:, i], names) for i in np.flatnonzero(unc.unidentified[0])]
    for u in unidentified:
        warns.append(_unidentified_message(u))
    for i, nm in enumerate(names):
        if np.isfinite(se[i]) and se[i] > rel_error_warn:
            warns.append(f"{nm} is poorly determined: relative standard error {100 * se[i]:.0f}% "
                         f"(above {100 * rel_error_warn:.0f}%); the data constrain it weakly")
        if np.isfinite(lo[i]) and theta[i] <= lo[i] + 1e-9 or np.isfinite(hi[i]) and theta[i] >= hi[i] - 1e-9:
            warns.append(f"{nm} = {math.exp(theta[i]):.4g} ended at its bound; its standard error is not meaningful")

    a, b = ab
    ci = prof = None
    if level is not None:
        ci, prof = _profile(predict, obs, {nm: float(math.exp(theta[i])) for i, nm in enumerate(names)},
                            {nm: float(se[i]) for i, nm in enumerate(names)}, loss, level, int(profile_points),
                            nuisance=nuisance, noise=noise, sigma=sigma, bounds=bounds, warns=warns)
    return FitResult(
        params={nm: float(math.exp(theta[i])) for i, nm in enumerate(names)},
        stderr={nm: float(se[i]) for i, nm in enumerate(names)},
        correlation=corr,
        covariance=cov,
        loss=np.asarray(history),
        converged=converged,
        unidentified=unidentified,
        warnings=warns,
        names=names,
        scale=a if nuisance is not None else None,
        offset=b if nuisance == "scale+offset" else None,
        sigma=float(math.sqrt(s2)) if np.isfinite(s2) else float("nan"),
        iterations=it,
        residuals=r,
        ci=ci,
        profile=prof,
    )


def _profile_level(profile: Any) -> float | None:
    if profile is False or profile is None:
        return None
    level = 0.95 if profile is True else profile
    if isinstance(level, (bool, np.bool_)) or not isinstance(level, (int, float, np.integer, np.floating)) \
            or not 0 < level < 1:
        raise ValueError(f"profile must be False, True (0.95) or a level in (0, 1), got {profile!r}")
    return float(level)


def profile_grid(best: float, stderr: float, z: float, points: int,
                 bound: tuple | None = None) -> np.ndarray:
    """Held values for a profile: ``points`` evenly spaced in log around ``best`` to ``±2.5·z·stderr``
    (at least ±2 %, at most a factor e³), ``best`` itself in the middle when ``points`` is odd; values
    beyond ``bound`` = ``(low, high)`` (either None) are replaced by the bound itself (once)."""
    span = float(np.clip(2.5 * z * stderr, 0.02, 3.0)) if np.isfinite(stderr) else 3.0
    values = best * np.exp(np.linspace(-span, span, points))
    if bound is not None:
        low, high = bound
        values = np.clip(values, low if low is not None else 0.0, high if high is not None else np.inf)
        values = np.unique(values)
    return values


def profile_losses(predict: Predict, observed: np.ndarray, params: Mapping[str, float], name: str,
                   values: np.ndarray, *, nuisance: str | None, noise: str, sigma: Any,
                   bounds: Mapping[str, tuple] | None, iterations: int = 30) -> np.ndarray:
    """Loss ``0.5 Σ r²`` ``(K,)`` with ``name`` held at each of ``values`` ``(K,)`` and the other parameters
    re-fitted from ``params`` (one :func:`fit_batch`; one vmapped evaluation when there are no others)."""
    others = {n: v for n, v in params.items() if n != name}
    if others:
        bnd = None if bounds is None else {k: v for k, v in bounds.items() if k != name}
        batch = fit_batch(predict, observed, others, fixed={name: values}, nuisance=nuisance, noise=noise,
                          sigma=sigma, iterations=iterations, bounds=bnd or None)
        return np.asarray(batch.loss, np.float64)
    loss = objective(predict, observed, nuisance=nuisance, noise=noise, sigma=sigma)
    curve = jax.jit(jax.vmap(lambda v: loss({name: v})))
    return np.asarray(curve(jnp.asarray(values, float_dtype())), np.float64)


def _crossing(values: np.ndarray, losses: np.ndarray, low: float, threshold: float, centre: int,
              step: int) -> float:
    """Where the profile first rises above ``threshold`` going from ``centre`` by ``step`` (±1); NaN when it
    does not within the grid. Interpolated in √(loss − low) against log value: linear for a loss that is
    quadratic near its minimum, so the grid's spacing barely matters."""
    i = centre
    root = np.sqrt(np.maximum(losses - low, 0.0))
    target = math.sqrt(threshold - low)
    while 0 <= i + step < len(values):
        j = i + step
        if not np.isfinite(losses[j]):
            return float("nan")
        if losses[j] > threshold:
            f = (target - root[i]) / (root[j] - root[i])
            return float(np.exp(np.log(values[i]) + f * (np.log(values[j]) - np.log(values[i]))))
        i = j
    return float("nan")


def _profile_sets(predict: Predict, observed: Mapping, res: FitResult, level: float, points: int, *,
                  nuisance: Any, noise: Any, sigma: Any, bounds: Mapping[str, tuple] | None) -> FitResult:
    """:func:`_profile` for several data sets: each set's noise level held at its estimate (or given
    ``sigma``), so the loss is in s.d. units and the interval ends at ``loss_min + z²/2``; each held
    value is one :func:`fit` of the others with the held parameter pinned by its bounds (the compiled
    evaluation of the joint fit serves every point)."""
    keys = tuple(observed)
    given = _per_set(sigma, keys, "sigma")
    sig = {k: given[k] if given[k] is not None else res.nuisance[k]["sigma"] for k in keys}
    if points < 5:
        raise ValueError(f"profile_points must be >= 5, got {points}")
    points += 1 - points % 2
    z = float(jax.scipy.special.ndtri((1 + level) / 2))
    warns = list(res.warnings)
    best = fit(predict, observed, res.params, nuisance=nuisance, noise=noise, sigma=sig, bounds=bounds)
    low_fit = float(best.loss[-1])
    ci, prof = {}, {}
    for name in res.names:
        bound = (bounds or {}).get(name)
        values = profile_grid(res.params[name], res.stderr[name], z, points, bound)
        losses = np.full(len(values), np.nan)
        for i, v in enumerate(values):
            b = dict(bounds or {})
            b[name] = (v, v)
            try:
                held = fit(predict, observed, {**res.params, name: v}, nuisance=nuisance, noise=noise, sigma=sig,
                           bounds=b, maxiter=50)
                losses[i] = float(held.loss[-1])
            except ValueError:
                continue
        low = float(np.nanmin(np.append(losses, low_fit)))
        ci[name], prof[name] = _interval(name, values, losses, low, low + z * z / 2, level, warns, bound)
    return dataclasses.replace(res, ci=ci, profile=prof, warnings=warns)


def _interval(name: str, values: np.ndarray, losses: np.ndarray, low: float, threshold: float, level: float,
              warns: list[str], bound: tuple | None = None) -> tuple[tuple[float, float], dict]:
    """The interval where a profile stays under ``threshold`` (NaN on a side it does not cross, with a
    warning; the bound itself where the grid reached the user's ``bound`` there), and the profile's
    record ``{"values", "loss", "threshold"}``."""
    centre = int(np.nanargmin(losses)) if np.isfinite(losses).any() else len(values) // 2
    ends = [_crossing(values, losses, low, threshold, centre, -1), _crossing(values, losses, low, threshold, centre, 1)]
    limits = (None, None) if bound is None else bound
    for k, (side, end) in enumerate((("below", values[0]), ("above", values[-1]))):
        if np.isfinite(ends[k]):
            continue
        edge = limits[k]
        if edge is not None and np.isclose(end, edge, rtol=1e-12) and np.isfinite(losses[0 if k == 0 else -1]):
            ends[k] = float(edge)
            warns.append(f"the {100 * level:g} % profile interval of {name} ends at its bound {edge:g} "
                         f"(the profile stays under its threshold up to it)")
        else:
            warns.append(f"the profile likelihood of {name} stays under its {100 * level:g} % threshold "
                         f"{side} the fit (to {end:.4g}): the data do not bound {name} from {side} there")
    return (ends[0], ends[1]), {"values": values, "loss": losses, "threshold": threshold}


def _profile(predict: Predict, obs: np.ndarray, params: dict[str, float], stderr: dict[str, float],
             loss_min: float, level: float, points: int, *, nuisance: str | None, noise: str, sigma: Any,
             bounds: Mapping[str, tuple] | None, warns: list[str]) -> tuple[dict, dict]:
    """Profile-likelihood intervals and curves of every parameter (see :func:`fit`, ``profile=``)."""
    if points < 5:
        raise ValueError(f"profile_points must be >= 5, got {points}")
    points += 1 - points % 2  # odd: the optimum is on the grid
    z = float(jax.scipy.special.ndtri((1 + level) / 2))
    # degrees of freedom of the noise estimate: points less parameters and eliminated nuisances (the
    # several-set path holds each σ at its estimate with the same count)
    dof = max(int(np.isfinite(obs).sum()) - len(params) - _N_NUISANCE[nuisance], 1)
    ci, prof = {}, {}
    for name, best in params.items():
        bound = (bounds or {}).get(name)
        values = profile_grid(best, stderr[name], z, points, bound)
        losses = profile_losses(predict, obs, params, name, values, nuisance=nuisance, noise=noise, sigma=sigma,
                                bounds=bounds)
        low = float(np.nanmin(np.append(losses, loss_min)))
        threshold = low + z * z / 2 if sigma is not None else low * math.exp(z * z / dof)
        ci[name], prof[name] = _interval(name, values, losses, low, threshold, level, warns, bound)
    return ci, prof


def _per_set(value: Any, keys: tuple[str, ...], what: str) -> dict[str, Any]:
    """One value for every set, or a dict naming each set."""
    if isinstance(value, Mapping):
        if set(value) != set(keys):
            raise ValueError(f"{what} names the sets {sorted(value)} but observed has {sorted(keys)}; give one "
                             "value for all or one per set")
        return dict(value)
    return {k: value for k in keys}


def _sets_residual(predict: Predict, names: tuple[str, ...], segments: tuple) -> Callable:
    """``(theta, o, w) -> (r, ab (S, 2))`` for several data sets: ``segments`` holds per set
    ``(key, shape, nuisance, noise)``; each set's nuisance is eliminated on its own part of ``o``."""

    def residual(theta: jax.Array, o: jax.Array, w: jax.Array) -> tuple[jax.Array, jax.Array]:
        p = {n: jnp.exp(theta[i]) for i, n in enumerate(names)}
        ys = predict(p)
        if not isinstance(ys, Mapping) or set(ys) != {k for k, *_ in segments}:
            raise ValueError("with several data sets, predict(params) must return a dict with the keys of observed "
                             f"({[k for k, *_ in segments]})")
        rs, abs_ = [], []
        start = 0
        for key, shape, nuis, noise in segments:
            size = int(np.prod(shape))
            y = jnp.asarray(ys[key])
            if tuple(y.shape) != tuple(shape):
                raise ValueError(f"predict(params)[{key!r}] has shape {tuple(y.shape)} but observed[{key!r}] has "
                                 f"shape {tuple(shape)}")
            y = y.reshape(-1).astype(o.dtype)
            ok, wk = o[start:start + size], w[start:start + size]
            present = wk > 0
            if noise == "multiplicative":
                y = jnp.where(present, y, 1.0)
            a, b = _nuisance(y, ok, wk * wk, nuis, noise)
            r = wk * (jnp.log(ok) - jnp.log(y) - jnp.log(a)) if noise == "multiplicative" else wk * (ok - a * y - b)
            rs.append(jnp.where(present, r, 0.0))
            abs_.append(jnp.stack([a, b]))
            start += size
        return jnp.concatenate(rs), jnp.stack(abs_)

    return residual


@functools.lru_cache(maxsize=16)
def _compiled_sets(predict: Predict, names: tuple[str, ...], segments: tuple, mode: str) -> Callable:
    """Jitted ``(theta, o, w) -> (r, J, ab (S, 2))`` of :func:`_sets_residual`."""
    return _value_and_jac(_sets_residual(predict, names, segments), mode)


def _check_sets(observed: Mapping, nuisance: Any, noise: Any, sigma: Any,
                mode: Any) -> tuple[tuple[str, ...], dict, dict, dict, dict]:
    """Several data sets checked: ``(keys, nuisance, noise, observed, sigma)``, the last four dicts per set."""
    keys = tuple(observed)
    if not keys or not all(isinstance(k, str) for k in keys):
        raise ValueError("several data sets: observed must be a non-empty dict name (str) -> array")
    nuis, noises, sigmas = (_per_set(v, keys, w) for v, w in ((nuisance, "nuisance"), (noise, "noise"),
                                                                 (sigma, "sigma")))
    obs, sig = {}, {}
    for k in keys:
        _check_options(nuis[k], noises[k], mode)
        try:
            obs[k] = _check_observed(observed[k], noises[k], missing=True)
            sig[k] = _check_sigma(sigmas[k], obs[k].shape)
        except ValueError as e:
            raise ValueError(f"data set {k!r}: {e}") from None
    return keys, nuis, noises, obs, sig


def _fit_sets(predict: Predict, observed: Mapping, init: Mapping[str, float], *, nuisance: Any, noise: Any,
              sigma: Any, bounds: Any, mode: Any, maxiter: int, ftol: float, xtol: float, gtol: float,
              max_log_sd: float, rel_error_warn: float, fallback_steps: int, adam_lr: float, warmup_steps: int = 0,
              optimizer: Any = None, max_steps: int = 500, tol: float = 1e-8) -> FitResult:
    """:func:`fit` of several data sets with shared parameters (see its ``observed``); each pass of the
    noise-level reweighting is a Levenberg–Marquardt fit, or an ``optimizer`` run when one is given."""
    keys, nuis, noises, obs, sig = _check_sets(observed, nuisance, noise, sigma, mode)
    names, theta0 = _check_init(init)
    lo, hi = _check_bounds(bounds, names, theta0)
    dtype = float_dtype()
    segments = tuple((k, obs[k].shape, nuis[k], noises[k]) for k in keys)
    sizes = [obs[k].size for k in keys]
    n_missing = sum(int(np.isnan(obs[k]).sum()) for k in keys)
    n_total = sum(sizes) - n_missing
    n_nuis = sum(_N_NUISANCE[nuis[k]] for k in keys)
    if mode is None:
        mode = "forward" if len(names) <= n_total else "reverse"
    try:
        evaluate = _compiled_sets(predict, names, segments, mode)
    except TypeError:
        evaluate = _compiled_sets.__wrapped__(predict, names, segments, mode)
    o_parts, w_parts = zip(*(_data(obs[k], sig[k]) for k in keys))
    o = jnp.concatenate(o_parts)
    w0 = [np.asarray(x, np.float64) for x in w_parts]
    scale = {k: 1.0 for k in keys}  # each set's estimated noise s.d. (1 where sigma is given)

    def weights() -> jax.Array:
        return jnp.asarray(np.concatenate([w0[i] / scale[k] for i, k in enumerate(keys)]), dtype)

    w = weights()

    def call(theta: np.ndarray) -> tuple:
        r, j, ab = evaluate(jnp.asarray(theta, dtype), o, w)
        r, j = np.asarray(r, np.float64), np.asarray(j, np.float64)
        loss = 0.5 * float(r @ r)
        if not (np.isfinite(loss) and np.isfinite(j).all()):
            loss = np.inf
        return r, j, np.asarray(ab, np.float64), loss

    theta = np.clip(theta0, lo, hi)
    r, J, ab, loss = call(theta)
    if not np.isfinite(loss):
        raise ValueError(f"predict(init) gives a non-finite loss or Jacobian for some data set at {dict(init)}: "
                         "every prediction must be finite (and > 0 for noise='multiplicative')")
    unknown = [k for k in keys if sig[k] is None]
    for k in unknown:
        nk = int(np.sum(~np.isnan(obs[k])))
        if nk - _N_NUISANCE[nuis[k]] - len(names) * nk / n_total <= 0:
            raise ValueError(f"data set {k!r} has {nk} observed point(s) for its {_N_NUISANCE[nuis[k]]} nuisance(s) "
                             "and its share of the parameters: no degree of freedom left to estimate its noise "
                             f"level; give sigma={{{k!r}: ...}} for it (or more points)")
    history: list[float] = []
    it_total, converged = 0, False
    if warmup_steps > 0:
        theta, r, J, ab, loss = _adam(call, theta, r, J, ab, loss, lo, hi, int(warmup_steps), adam_lr)
    resid = _sets_residual(predict, names, segments)
    for _ in range(3 if unknown else 1):
        if optimizer is not None:
            w_now = w
            value_fn = jax.jit(lambda t, w_now=w_now: 0.5 * jnp.sum(resid(t, o, w_now)[0] ** 2))
            theta, r, J, ab, loss, hist, it, converged = _optax_fit(
                optimizer, call, value_fn, theta, r, J, ab, loss, lo, hi, int(max_steps), float(tol), dtype)
        else:
            theta, r, J, ab, loss, hist, it, converged = _levenberg_marquardt(
                call, theta, r, J, ab, loss, lo, hi, int(maxiter), ftol, xtol, gtol, fallback_steps, adam_lr)
        history += hist
        it_total += it
        if not unknown:
            break
        # each set's noise level from its own residuals (in its own units), shared parameters' degrees of
        # freedom split between the sets in proportion to their points; then refit with the new weights
        start = 0
        for i, k in enumerate(keys):
            rk = r[start:start + sizes[i]] * scale[k]
            start += sizes[i]
            if k in unknown:
                nk = sizes[i] - int(np.isnan(obs[k]).sum())
                dof = nk - _N_NUISANCE[nuis[k]] - len(names) * nk / n_total
                scale[k] = float(np.sqrt(rk @ rk / dof)) if dof > 0 and rk @ rk > 0 else scale[k]
        w = weights()
        r, J, ab, loss = call(theta)
    warns: list[str] = []
    if not converged and optimizer is not None:
        warns.append(f"the optimizer did not reach |gradient| <= tol = {tol:g} (max_steps={max_steps} per pass): "
                     "raise max_steps, change the optimizer's settings, or use the default Levenberg–Marquardt")
    elif not converged:
        warns.append(f"the fit did not converge in {it_total} iterations (maxiter={maxiter} per pass): raise "
                     "maxiter, start closer, or check the model")
    for i, nm in enumerate(names):
        if np.isfinite(lo[i]) and theta[i] <= lo[i] + 1e-9 or np.isfinite(hi[i]) and theta[i] >= hi[i] - 1e-9:
            warns.append(f"{nm} = {math.exp(theta[i]):.4g} ended at its bound; its standard error is not meaningful")
    # residuals are in s.d. units now (given sigma, or each set's estimate): the error scale is 1
    unc = _uncertainty(J[None], np.asarray([loss]), n_nuis + n_missing, True, max_log_sd)
    cov, se, corr = unc.covariance[0], unc.stderr[0], unc.correlation[0]
    unidentified = [_direction(unc.directions[0][:, i], names) for i in np.flatnonzero(unc.unidentified[0])]
    warns += [_unidentified_message(u) for u in unidentified]
    for i, nm in enumerate(names):
        if np.isfinite(se[i]) and se[i] > rel_error_warn:
            warns.append(f"{nm} is poorly determined: relative standard error {100 * se[i]:.0f}% "
                         f"(above {100 * rel_error_warn:.0f}%); the data constrain it weakly")
    per_set = {k: {"scale": float(ab[i, 0]) if nuis[k] is not None else None,
                   "offset": float(ab[i, 1]) if nuis[k] == "scale+offset" else None,
                   "sigma": None if sig[k] is not None else scale[k]} for i, k in enumerate(keys)}
    return FitResult(
        params={nm: float(math.exp(theta[i])) for i, nm in enumerate(names)},
        stderr={nm: float(se[i]) for i, nm in enumerate(names)},
        correlation=corr, covariance=cov, loss=np.asarray(history), converged=converged,
        unidentified=unidentified, warnings=warns, names=names, sigma=float("nan"), iterations=it_total,
        residuals=r, nuisance=per_set)


def _levenberg_marquardt(call: Callable, theta: np.ndarray, r: np.ndarray, J: np.ndarray, ab: Any, loss: float,
                         lo: np.ndarray, hi: np.ndarray, maxiter: int, ftol: float, xtol: float, gtol: float,
                         fallback_steps: int, adam_lr: float) -> tuple:
    """LM in log-parameters from ``theta`` (``call(theta) -> (r, J, ab, loss)``); an Adam fallback, once,
    when the damping runs away. Returns ``(theta, r, J, ab, loss, history, iterations, converged)``."""
    history = [loss]
    converged = False
    mu = 1e-3 * max(float(np.max(np.diag(J.T @ J))), 1e-300)
    nu = 2.0
    used_fallback = False
    it = 0
    while it < maxiter:
        if loss == 0.0:
            converged = True
            break
        g = J.T @ r
        cols = np.linalg.norm(J, axis=0)
        rn = math.sqrt(2 * loss)
        cos = np.abs(g) / np.where(cols > 0, cols * rn, np.inf)
        if np.max(cos, initial=0.0) <= gtol:
            converged = True
            break
        t_new, h, predicted, _, A = _lm_update(theta, r, J, mu, lo, hi)
        if np.linalg.norm(h) <= xtol * (np.linalg.norm(theta) + xtol):
            converged = True
            break
        r_new, J_new, ab_new, loss_new = call(t_new)
        it += 1
        accept, _, mu_new, nu_new = _lm_damping(mu, nu, loss, loss_new, predicted)
        mu, nu = float(mu_new), float(nu_new)
        if accept:
            decrease = loss - loss_new
            theta, r, J, ab, loss = t_new, r_new, J_new, ab_new, loss_new
            history.append(loss)
            if decrease <= ftol * loss_new:
                converged = True
                break
        else:
            history.append(loss)
            scale_a = max(float(np.max(np.diag(A))), 1e-300)
            if mu > 1e12 * scale_a or not np.isfinite(mu):
                if used_fallback or fallback_steps <= 0:
                    break
                used_fallback = True
                theta, r, J, ab, loss = _adam(call, theta, r, J, ab, loss, lo, hi, fallback_steps, adam_lr)
                history.append(loss)
                mu = 1e-3 * max(float(np.max(np.diag(J.T @ J))), 1e-300)
                nu = 2.0

    return theta, r, J, ab, loss, history, it, converged


def _optax_fit(optimizer: Any, call: Callable, value_fn: Callable, theta: np.ndarray, r: np.ndarray, J: np.ndarray,
               ab: tuple, loss: float, lo: np.ndarray, hi: np.ndarray, steps: int, tol: float,
               dtype: Any) -> tuple:
    """Minimise ``0.5 Σ r²`` over log-parameters with an optax transformation (host loop, one compiled
    evaluation per step; line searches such as L-BFGS's call ``value_fn``). Returns the final
    ``(theta, r, J, ab, loss, history, steps, converged)``."""
    import optax  # only here, as in _adam

    if not hasattr(optimizer, "init") or not hasattr(optimizer, "update"):
        raise ValueError(f"optimizer must be an optax GradientTransformation (e.g. optax.lbfgs()), got {optimizer!r}")
    if steps < 1 or not (np.isfinite(tol) and tol >= 0):
        raise ValueError(f"max_steps must be >= 1 and tol >= 0, got max_steps={steps}, tol={tol}")
    opt = optax.with_extra_args_support(optimizer)
    params = jnp.asarray(theta, dtype)
    state = opt.init(params)
    # one compiled update: called eagerly, a line search (L-BFGS's) would be traced and compiled anew
    # at every step (about a second each)
    update = jax.jit(lambda g, st, prm, val: opt.update(g, st, prm, value=val, grad=g, value_fn=value_fn))
    history = [loss]
    g = J.T @ r
    converged = False
    it = 0
    def projected(g: np.ndarray, t: np.ndarray) -> float:
        # a parameter held on a bound by a gradient pushing outward is converged there (as in LM)
        out = ((t >= hi) & (g < 0)) | ((t <= lo) & (g > 0))
        return float(np.linalg.norm(np.where(out, 0.0, g)))

    while it < steps:
        if projected(g, theta) <= tol:
            converged = True
            break
        upd, state = update(jnp.asarray(g, dtype), state, params, jnp.asarray(loss, dtype))
        t = np.clip(np.asarray(params, np.float64) + np.asarray(upd, np.float64), lo, hi)
        r_t, J_t, ab_t, loss_t = call(t)
        it += 1
        if not np.isfinite(loss_t):
            break
        theta, r, J, ab, loss = t, r_t, J_t, ab_t, loss_t
        params = jnp.asarray(theta, dtype)
        g = J.T @ r
        history.append(loss)
    else:
        converged = projected(g, theta) <= tol
    return theta, r, J, ab, loss, history, it, converged


def _adam(call: Callable, theta: np.ndarray, r: np.ndarray, J: np.ndarray, ab: tuple, loss: float,
          lo: np.ndarray, hi: np.ndarray, steps: int, lr: float) -> tuple:
    """A few Adam steps on ``0.5 Σ r²`` (gradient ``Jᵀr`` from the same compiled function); keeps the best."""
    import optax  # only here: a fit without Adam steps, and `jaxcell run`, do not pay its import

    opt = optax.adam(lr)
    state = opt.init(jnp.asarray(theta))
    best = (theta, r, J, ab, loss)
    t = theta
    g = J.T @ r
    for _ in range(steps):
        upd, state = opt.update(jnp.asarray(g), state)
        t = np.clip(t + np.asarray(upd, np.float64), lo, hi)
        r_t, J_t, ab_t, loss_t = call(t)
        if not np.isfinite(loss_t):
            break
        g = J_t.T @ r_t
        if loss_t < best[4]:
            best = (t, r_t, J_t, ab_t, loss_t)
    return best


# --------------------------------------------------------------------------- batched fits (vmap)


class BatchFitResult(NamedTuple):
    """Outcome of :func:`fit_batch`: ``B`` independent fits, member ``i`` at index ``i`` of every array.

    Attributes:
        params: name -> ``(B,)`` fitted values, in the units ``predict`` uses.
        stderr: name -> ``(B,)`` standard error of ``log(param)`` (relative
            error; ``sigma² (JᵀJ)⁻¹`` as in :func:`fit`); ``inf`` where the
            Fisher matrix is singular along a direction involving the parameter.
        loss: ``(B,)`` final ``0.5 Σ r²`` (``inf`` if the member's loss became non-finite).
        converged: ``(B,)`` bool: finite loss, relative loss change over the
            last iterations at most ``tol``, and residual (nearly) orthogonal
            to the Jacobian columns (largest cosine at most ``gtol``).
        names: parameter names (order of ``init``).
        scale: ``(B,)`` fitted intensity scale ``a`` (None without a nuisance).
        offset: ``(B,)`` fitted offset ``b`` (None unless ``nuisance="scale+offset"``).
        sigma: ``(B,)`` noise standard deviation estimated from the residuals
            (1 when ``sigma=`` was given; NaN without degrees of freedom).
        loss_history: ``(B, iterations + 1)`` loss at the start and after each iteration.
    """

    params: dict[str, np.ndarray]
    stderr: dict[str, np.ndarray]
    loss: np.ndarray
    converged: np.ndarray
    names: tuple[str, ...]
    scale: np.ndarray | None
    offset: np.ndarray | None
    sigma: np.ndarray
    loss_history: np.ndarray

    @property
    def best(self) -> int:
        """Index of the member with the lowest (finite) loss: the winner of a many-starting-points ensemble."""
        loss = np.where(np.isfinite(self.loss), self.loss, np.inf)
        return int(np.argmin(loss))


_CONV_WINDOW = 3  # iterations over which the relative loss change is measured for ``converged``


@functools.lru_cache(maxsize=16)
def _compiled_batch(predict: Predict, names: tuple[str, ...], shape: tuple[int, ...], nuisance: str | None,
                    noise: str, mode: str, iterations: int, damping: float,
                    fixed_names: tuple[str, ...] = ()) -> Callable:
    """Jitted, vmapped LM: ``(theta0 (B, P), o (B, n), w (B, n), fx (B, F), lo (P,), hi (P,)) -> dict of (B, ...)``.

    ``lo``, ``hi`` bound log-parameters (±inf: none); steps are clipped to them.
    """
    residual = _make_residual(predict, names, shape, nuisance, noise, fixed_names)
    jac = jax.jacfwd if mode == "forward" else jax.jacrev

    def evaluate(theta: jax.Array, o: jax.Array, w: jax.Array, fx: jax.Array) -> tuple:
        def both(t: jax.Array) -> tuple[jax.Array, tuple]:
            r, ab = residual(t, o, w, fx)
            return r, (r, ab)

        j, (r, (a, b)) = jac(both, has_aux=True)(theta)
        loss = 0.5 * jnp.sum(r * r)
        ok = jnp.isfinite(loss) & jnp.all(jnp.isfinite(j))
        return r, j, a, b, jnp.where(ok, loss, jnp.inf)

    def one(theta0: jax.Array, o: jax.Array, w: jax.Array, fx: jax.Array, lo: jax.Array,
            hi: jax.Array) -> dict[str, jax.Array]:
        theta0 = jnp.clip(theta0, lo, hi)
        r0, j0, a0, b0, loss0 = evaluate(theta0, o, w, fx)
        tiny = jnp.asarray(1e-300 if theta0.dtype == jnp.float64 else 1e-30, theta0.dtype)
        mu0 = damping * jnp.maximum(jnp.max(jnp.diag(j0.T @ j0)), tiny)

        def step(carry: tuple, _: None) -> tuple:
            theta, r, j, a, b, loss, mu, nu = carry
            t_new, _, predicted, _, big_a = _lm_update(theta, r, j, mu, lo, hi, xp=jnp)
            r_n, j_n, a_n, b_n, loss_n = evaluate(t_new, o, w, fx)
            accept, _, mu_new, nu_new = _lm_damping(mu, nu, loss, loss_n, predicted, xp=jnp)
            # no stall detection here (no Python control flow): the damping is kept finite instead
            scale_a = jnp.maximum(jnp.max(jnp.diag(big_a)), tiny)
            mu_new = jnp.clip(mu_new, 1e-20 * scale_a, 1e20 * scale_a)
            nu_new = jnp.minimum(nu_new, 1e6)
            sel = functools.partial(jnp.where, accept)
            carry = (sel(t_new, theta), sel(r_n, r), sel(j_n, j), sel(a_n, a), sel(b_n, b), sel(loss_n, loss),
                     mu_new, nu_new)
            return carry, carry[5]

        init = (theta0, r0, j0, a0, b0, loss0, mu0, jnp.asarray(2.0, theta0.dtype))
        (theta, r, j, a, b, loss, _, _), hist = jax.lax.scan(step, init, None, length=iterations)
        return {"theta": theta, "r": r, "j": j, "a": a, "b": b, "loss": loss,
                "history": jnp.concatenate([loss0[None], hist])}

    return jax.jit(jax.vmap(one, in_axes=(0, 0, 0, 0, None, None)))


def _batch_fixed(fixed: Any, names: tuple[str, ...]) -> tuple[tuple[str, ...], np.ndarray, int | None]:
    """``fixed`` of scalars and/or ``(B,)`` arrays -> (names, values ``(B or 1, F)``, B or None)."""
    if fixed is None:
        return (), np.zeros((1, 0)), None
    if not isinstance(fixed, Mapping):
        raise ValueError("fixed must be a dict name -> held value (scalar or (B,) array)")
    cols, size = [], None
    for n, v in fixed.items():
        if not isinstance(n, str):
            raise ValueError(f"fixed keys must be parameter names (str), got {n!r}")
        if n in names:
            raise ValueError(f"{n!r} is both fitted (init) and held (fixed); give it in one of them")
        try:
            a = np.asarray(v, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"fixed[{n!r}] must be a number or a 1D array of numbers, got {v!r}") from None
        if a.ndim > 1 or (a.ndim == 1 and a.size == 0) or not np.all(np.isfinite(a)):
            raise ValueError(f"fixed[{n!r}] must be a finite scalar or non-empty (B,) array, got shape "
                             f"{a.shape} with values {a.reshape(-1)[:5]}")
        if a.ndim == 1:
            if size is not None and a.size != size:
                raise ValueError(f"fixed arrays have different lengths ({size} and {a.size} for {n!r})")
            size = a.size
        cols.append(a)
    b = size if size is not None else 1
    return tuple(fixed), np.stack([np.broadcast_to(a, (b,)) for a in cols], axis=1), size


def _batch_init(init: Any) -> tuple[tuple[str, ...], np.ndarray, int | None]:
    """``init`` of scalars and/or ``(B,)`` arrays -> (names, log-values ``(B or 1, P)``, B or None)."""
    if not isinstance(init, Mapping) or not init:
        raise ValueError("init must be a non-empty dict name -> positive starting value (scalar or (B,) array)")
    names = tuple(init)
    if not all(isinstance(n, str) for n in names):
        raise ValueError(f"init keys must be parameter names (str), got {names}")
    cols: dict[str, np.ndarray] = {}
    size: int | None = None
    for n in names:
        try:
            v = np.asarray(init[n], dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"init[{n!r}] must be a number or a 1D array of numbers, got {init[n]!r}") from None
        if v.ndim > 1:
            raise ValueError(f"init[{n!r}] has shape {v.shape}: give a scalar or a (B,) array of starting values")
        if v.ndim == 1:
            if v.size == 0:
                raise ValueError(f"init[{n!r}] is an empty array")
            if size is not None and v.size != size:
                raise ValueError(f"init arrays have different lengths ({size} and {v.size} for {n!r}): "
                                 "every batched starting value needs one entry per member")
            size = v.size
        bad = ~(np.isfinite(v) & (v > 0))
        if bad.any():
            where = f"[{int(np.argmax(bad.reshape(-1)))}]" if v.ndim else ""
            raise ValueError(f"init[{n!r}]{where} = {v.reshape(-1)[np.argmax(bad.reshape(-1))]}: parameters are "
                             "fitted in log space and must start > 0")
        cols[n] = v
    b = size if size is not None else 1
    theta = np.stack([np.log(np.broadcast_to(cols[n], (b,))) for n in names], axis=1)
    return names, theta, size


def fit_batch(predict: Predict, observed: Any, init: Mapping[str, Any], *, nuisance: str | None = None,
              noise: str = "additive", sigma: Any = None, iterations: int = 30, damping: float = 1e-3,
              tol: float = 1e-8, gtol: float = 1e-6, fixed: Mapping[str, Any] | None = None,
              bounds: Mapping[str, tuple] | None = None) -> BatchFitResult:
    """Fit ``B`` problems at once: many profiles and/or many starting points, as one compiled program.

    A pure-JAX Levenberg–Marquardt in log-parameters with a fixed number of
    iterations (``jax.lax.scan``; the damping adapts per member with
    ``jnp.where``), mapped over the members with ``jax.vmap`` and compiled once
    (cached per ``predict`` and options, like :func:`fit`). Residuals, noise
    models and the closed-form nuisance elimination are those of :func:`fit`
    (see the module docstring), and so are the LM step and the uncertainty
    (:func:`_lm_update`, :func:`_uncertainty`). No stall detection and no Adam
    fallback: members that end far from a minimum are reported by ``converged``
    and by their ``loss``.

    ``predict`` must be vmappable: built from ``jc.*`` calls (e.g.
    :func:`jaxcell.simulate`, :func:`jaxcell.steady_state`, ``grid.sample``)
    with the parameters as traced values, no Python control flow on them, and
    every quantity that fixes array shapes or step counts (``t_end``, ``dt``,
    ``save_at``, sample points) concrete.

    Args:
        predict: ``params -> prediction`` as in :func:`fit` (params: dict of
            positive scalars, in your units: µm²/s, 1/s, ...).
        observed: ``(*shape)`` (one data set, shared by every member) or
            ``(B, *shape)`` (one data set per member), ``*shape`` being the
            shape of ``predict``'s output; no NaN.
        init: name -> starting value (> 0): a scalar (shared) or a ``(B,)``
            array (one per member, e.g. many starting points). Observed and
            init are broadcast to the same ``B``.
        nuisance, noise, sigma: as in :func:`fit`; ``sigma`` broadcasts to
            ``(B, *shape)``.
        iterations: LM iterations (each one evaluates residuals and Jacobian once).
        damping: initial LM damping relative to the largest diagonal entry of ``JᵀJ``.
        tol: ``converged`` needs a relative loss change of at most ``tol``
            over the last 3 iterations.
        gtol: ... and the largest cosine between the residual and a Jacobian
            column at most ``gtol`` (so a stalled member is not converged).
        fixed: name -> value of a parameter that ``predict`` needs but that is
            held, not fitted: a scalar or a ``(B,)`` array (one per member,
            e.g. the grid of a profile likelihood). Finite; names distinct
            from ``init``'s. Held values are traced, so new values reuse the
            compiled program.
        bounds: optional name -> ``(low, high)`` as in :func:`fit` (either may
            be None); every member's steps are clipped to them.

    Returns:
        A :class:`BatchFitResult` (``(B,)`` arrays; ``.best`` is the index of the lowest loss).

    Raises:
        ValueError: bad options; non-positive or non-finite ``init``; ``init``
            arrays of unequal length or whose length differs from the batch of
            ``observed``; NaN in ``observed``; ``observed`` shaped neither like
            the prediction nor like a batch of it; a non-finite loss at
            every member's start. A member that alone starts at a non-finite
            loss (e.g. one bad point of an ensemble) stays at its start and is
            reported with ``loss = inf``, ``converged = False``.

    Example:
        >>> import jax.numpy as jnp, numpy as np
        >>> from jaxcell.inference import fit_batch
        >>> x = np.linspace(0.0, 50.0, 11)
        >>> obs = np.stack([3.0 * np.exp(-x / lam) for lam in (10.0, 20.0)])  # (2, 11)
        >>> res = fit_batch(lambda p: jnp.exp(-x / p["lam"]), obs, {"lam": 15.0}, nuisance="scale")
        >>> np.round(res.params["lam"], 3).tolist(), np.round(res.scale, 3).tolist()
        ([10.0, 20.0], [3.0, 3.0])
    """
    _check_options(nuisance, noise, None)
    names, theta0, b_init = _batch_init(init)
    fixed_names, fx0, b_fix = _batch_fixed(fixed, names)
    for i, row in enumerate(theta0):
        try:
            lo, hi = _check_bounds(bounds, names, row)
        except ValueError as e:
            raise ValueError(f"member {i}: {e}" if len(theta0) > 1 else str(e)) from None
    iterations = int(iterations)
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if not (np.isfinite(damping) and damping > 0):
        raise ValueError(f"damping must be > 0, got {damping}")
    obs = _check_observed(observed, noise, missing=True)
    dtype = float_dtype()

    probe = {n: jax.ShapeDtypeStruct((), dtype) for n in names + fixed_names}
    try:
        shape = tuple(jax.eval_shape(lambda p: _call(predict, p), probe).shape)
    except jax.errors.ConcretizationTypeError:
        raise ValueError("predict must be traceable with traced parameters (no Python control flow on them; "
                         "t_end, dt and save_at concrete)") from None
    if obs.shape == shape:
        b_obs = None
    elif obs.ndim == len(shape) + 1 and obs.shape[1:] == shape:
        b_obs = obs.shape[0]
    else:
        raise ValueError(f"observed has shape {obs.shape}, but predict returns {shape}: give observed as "
                         f"{shape} (one data set) or (B, *{shape}) (one per member)")
    sizes = {what: b for what, b in (("observed data sets", b_obs), ("init entries", b_init),
                                     ("fixed entries", b_fix)) if b is not None}
    if len(set(sizes.values())) > 1:
        raise ValueError("batch sizes differ: " + ", ".join(f"{b} {what}" for what, b in sizes.items())
                         + " (give equal lengths, or a single data set / scalar values to share)")
    batch = next(iter(sizes.values()), 1)
    obs_b = np.broadcast_to(obs, (batch, *shape)) if b_obs is None else obs
    theta_b = np.broadcast_to(theta0, (batch, len(names)))
    fx_b = np.broadcast_to(fx0, (batch, len(fixed_names)))
    sig = _check_sigma(sigma, (batch, *shape))

    n, p_count = math.prod(shape), len(names)
    mode = "forward" if p_count <= n else "reverse"
    key = (predict, names, shape, nuisance, noise, mode, iterations, float(damping), fixed_names)
    try:
        run = _compiled_batch(*key)
    except TypeError:  # an unhashable callable: compile for this call only
        run = _compiled_batch.__wrapped__(*key)
    flat = obs_b.reshape(batch, n)
    gone = np.isnan(flat)  # missing points: weight 0, placeholder 1 (as in fit)
    o = jnp.asarray(np.where(gone, 1.0, flat), dtype)
    w = jnp.asarray(np.where(gone, 0.0, np.ones((batch, n)) if sig is None else 1.0 / sig.reshape(batch, n)), dtype)
    out = {k: np.asarray(v, np.float64)
           for k, v in run(jnp.asarray(theta_b, dtype), o, w, jnp.asarray(fx_b, dtype), jnp.asarray(lo, dtype),
                           jnp.asarray(hi, dtype)).items()}

    hist = out["history"]
    bad0 = ~np.isfinite(hist[:, 0])
    if bad0.all():
        start = {nm: float(np.exp(theta_b[0, k])) for k, nm in enumerate(names)}
        what = "finite and positive" if noise == "multiplicative" else "finite"
        why = _why_bad_prediction(predict, {**start, **{nm: float(fx_b[0, k]) for k, nm in enumerate(fixed_names)}},
                                  noise, dtype)
        raise ValueError(f"every member starts at a non-finite loss or Jacobian: the prediction at init (member 0: "
                         f"{start}) must be {what} (with noise='multiplicative' every predicted value must be > 0)"
                         f"{why}")

    loss = out["loss"]
    r, J = out["r"], out["j"]  # (B, n), (B, n, P)
    window = min(_CONV_WINDOW, iterations)
    prev = hist[:, -1 - window]
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.abs(prev - loss) / np.maximum(np.abs(loss), 1e-300)
        cols = np.linalg.norm(J, axis=1)  # (B, P)
        rn = np.linalg.norm(r, axis=1, keepdims=True)
        cos = np.abs(np.einsum("bnp,bn->bp", J, r)) / np.where(cols > 0, cols * rn, np.inf)
    cos = np.where(rn > 0, cos, 0.0)
    g = np.einsum("bnp,bn->bp", J, r)
    theta = out["theta"]
    held = ((theta >= hi - 1e-9) & (g < 0)) | ((theta <= lo + 1e-9) & (g > 0))
    cos = np.where(held, 0.0, cos)  # on a bound with the gradient pushing outward: optimal there
    converged = np.isfinite(loss) & (rel <= tol) & (np.max(cos, axis=1) <= gtol)

    unc = _uncertainty(J, loss, _N_NUISANCE[nuisance] + gone.sum(axis=1), sigma is not None)
    se, s2 = unc.stderr, unc.s2

    return BatchFitResult(
        params={nm: np.exp(out["theta"][:, k]) for k, nm in enumerate(names)},
        stderr={nm: se[:, k] for k, nm in enumerate(names)},
        loss=loss,
        converged=converged,
        names=names,
        scale=out["a"] if nuisance is not None else None,
        offset=out["b"] if nuisance == "scale+offset" else None,
        sigma=np.sqrt(s2),
        loss_history=hist,
    )

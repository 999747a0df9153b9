"""The ``jaxcell fit`` command: fit D, k (and optionally the source flux) to a measured 1D profile.

Reads a fit specification (TOML, format in :func:`run_fit_cli`) and a CSV of
measurements, builds the 1D model (:class:`jaxcell.model.Model`, steady state or
simulated time course), fits it with :func:`jaxcell.inference.fit`, computes
each parameter's profile likelihood with :func:`jaxcell.inference.fit_batch`,
and writes ``fit.json`` and PNG figures to an output folder that appears in one
rename (:mod:`jaxcell.atomic`). The fitting maths lives in :mod:`jaxcell.inference`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcell._node import float_dtype
from jaxcell.atomic import staging, why_not_replaceable, write_text
from jaxcell.grid import Grid
from jaxcell.inference import NOISES, FitResult, Predict, fit, profile_losses
from jaxcell.model import Model
from jaxcell.scenario import Checker, ScenarioError, read_numeric_csv
from jaxcell.simulate import simulate
from jaxcell.solvers import get as get_solver
from jaxcell.solvers import names as solver_names
from jaxcell.steady import steady_state
from jaxcell.substrate import Dirichlet, Flux, Substrate

__all__ = ["run_fit_cli"]

_SPEC_TOP = ("title", "description", "data", "model", "fit")
_SPEC_DATA = ("csv", "name", "nuisance")
_SPEC_MODEL = ("length", "spacing", "source_flux", "boundary_far", "solver", "dt")
_SPEC_FIT = ("init", "nuisance", "noise", "maxiter")
_SPEC_PARAMS = ("D", "k", "q")
_MARKERS = ("fit.json",)  # an output folder holding these is ours to replace
_PROFILE_POINTS = 9
_PROFILE_MAXITER = 15


@dataclasses.dataclass(frozen=True)
class _FitSpec:
    """A checked fit specification: the data (µm, s, value units) and the model and fit options."""

    label: str
    csv: str
    position: np.ndarray
    time: np.ndarray | None
    value: np.ndarray
    length: float
    spacing: float
    source_flux: float
    boundary_far: str
    solver: str
    dt: float
    init: dict[str, float]
    nuisance: str | None
    noise: str
    maxiter: int
    sets: tuple = ()  # several data sets ([[data]] tables): (name, csv, rows, nuisance) each; the arrays
    # above then hold all their rows, set after set


def _spec_error(file: str, key: str, problem: str, fix: str = "") -> Exception:
    """A one-line error naming ``file``, ``key``, the problem and the fix (what the CLI prints)."""
    return ScenarioError(file, key, problem, fix)


def _read_fit_csv(path: Path, label: str, key: str = "data.csv") -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """The data file: ``(position (M,) µm, time (M,) s or None, value (M,))``, one entry per row."""
    if not path.is_file():
        raise _spec_error(label, key, f"data file {str(path)!r} does not exist",
                          "give a path relative to the spec file")
    out = read_numeric_csv(path, ("position", "value"), ("time",), what="data file (µm, s)",
                           may_be_missing=("value",))  # an empty value is a missing point (NaN)
    if "time" in out and np.any(out["time"] < 0):
        i = int(np.argmax(out["time"] < 0)) + 2
        raise _spec_error(str(path), f"line {i}, column time", "times must be >= 0 s (the run starts at rest at 0)",
                          "shift the times so the experiment starts at 0")
    return out["position"], out.get("time"), out["value"]


def _load_fit_spec(spec_path: str) -> _FitSpec:
    """Read and check SPEC.toml and its data file; raises :class:`ScenarioError` (file, key, fix)."""
    label = str(spec_path)
    path = Path(spec_path)
    if not path.is_file():
        raise _spec_error(label, "", "no such fit specification file", "check the path")
    try:
        raw = tomllib.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise _spec_error(label, "", f"cannot read the file ({e.__class__.__name__})",
                          "check it is a UTF-8 text file you can read") from None
    except tomllib.TOMLDecodeError as e:
        raise _spec_error(label, "", f"not valid TOML ({e})", "fix the syntax at that line") from None
    c = Checker(label)
    c.keys(raw, "", _SPEC_TOP, required=("data", "model", "fit"))
    tables = raw["data"] if isinstance(raw["data"], list) else [raw["data"]]
    if not tables:
        raise c.err("data", "is empty", 'give [data] csv = "profile.csv", or one [[data]] table per data set')
    for i, t in enumerate(tables):
        key = "data" if len(tables) == 1 else f"data[{i}]"
        c.keys(c.table(t, key), key, _SPEC_DATA, required=("csv",))
    data = tables[0]
    model = c.table(raw["model"], "model")
    c.keys(model, "model", _SPEC_MODEL, required=("length", "spacing"))
    fitt = c.table(raw["fit"], "fit")
    c.keys(fitt, "fit", _SPEC_FIT, required=("init",))

    length = c.number(model["length"], "model.length", "µm", positive=True)
    spacing = c.number(model["spacing"], "model.spacing", "µm", positive=True)
    n = round(length / spacing)
    if n < 2 or abs(n * spacing - length) > 1e-6 * length:
        raise c.err("model.spacing", f"length {length:g} µm is not a whole number (>= 2) of voxels of {spacing:g} µm",
                    "choose a spacing that divides the length")
    source_flux = c.number(model.get("source_flux", 1.0), "model.source_flux", "amount/s", positive=True)
    boundary_far = c.string(model.get("boundary_far", "noflux"), "model.boundary_far", ("noflux", "dirichlet"))
    solver = c.string(model.get("solver", "implicit"), "model.solver", solver_names())
    dt = c.number(model["dt"], "model.dt", "s", positive=True) if "dt" in model else None

    init_t = c.table(fitt["init"], "fit.init")
    c.keys(init_t, "fit.init", _SPEC_PARAMS, required=("D", "k"))
    units = {"D": "µm²/s", "k": "1/s", "q": "amount/s"}
    init = {k: c.number(v, f"fit.init.{k}", units[k], positive=True) for k, v in init_t.items()}
    nuis = c.string(fitt.get("nuisance", "none"), "fit.nuisance", ("none", "scale", "scale+offset"))
    noise = c.string(fitt.get("noise", "additive"), "fit.noise", NOISES)
    if nuis == "scale+offset" and noise == "multiplicative":
        raise c.err("fit.nuisance", "an offset needs additive noise", 'use nuisance = "scale" or noise = "additive"')
    maxiter = c.integer(fitt.get("maxiter", 100), "fit.maxiter", minimum=1)

    if len(tables) > 1:
        return _load_sets(c, label, path, tables, length, spacing, source_flux, boundary_far, solver, dt, init,
                          None if nuis == "none" else nuis, noise, maxiter)
    csv_name = data["csv"]
    if not isinstance(csv_name, str):
        raise c.err("data.csv", "must be a string (a path)", 'write csv = "profile.csv"')
    position, time, value = _read_fit_csv(path.resolve().parent / csv_name, label)
    _check_rows(c, csv_name, position, time, value, length, dt, noise)
    return _FitSpec(label, csv_name, position, time, value, length, spacing, source_flux, boundary_far, solver,
                    dt if dt is not None else 1.0, init, None if nuis == "none" else nuis, noise, maxiter)


def _load_sets(c: Checker, label: str, path: Path, tables: list, length: float, spacing: float, source_flux: float,
               boundary_far: str, solver: str, dt: float | None, init: dict, nuisance: str | None, noise: str,
               maxiter: int) -> _FitSpec:
    """Several ``[[data]]`` tables: one data set each (its own CSV, name and nuisance), shared physics."""
    sets, rows = [], []
    for i, t in enumerate(tables):
        key = f"data[{i}]"
        csv_name = t["csv"]
        if not isinstance(csv_name, str):
            raise c.err(f"{key}.csv", "must be a string (a path)", 'write csv = "disc1.csv"')
        name = c.string(t.get("name", Path(csv_name).stem), f"{key}.name")
        if not re.fullmatch(r"[\w.+-]+", name):
            raise c.err(f"{key}.name", f"{name!r} is not a plain name (it names figure files)",
                        "use letters, digits, '_', '-', '.' or '+'")
        if any(name == x[0] for x in sets):
            raise c.err(f"{key}.name", f"must be a new, non-empty name, got {name!r}",
                        "give each data set its own name")
        nu = c.string(t.get("nuisance", nuisance or "none"), f"{key}.nuisance",
                      ("none", "scale", "scale+offset"))
        if nu == "scale+offset" and noise == "multiplicative":
            raise c.err(f"{key}.nuisance", "an offset needs additive noise", 'use "scale" or fit.noise = "additive"')
        position, time, value = _read_fit_csv(path.resolve().parent / csv_name, label, f"{key}.csv")
        _check_rows(c, csv_name, position, time, value, length, dt, noise)
        if i and (time is None) != (rows[0][1] is None):
            raise c.err(f"{key}.csv", "has a time column where the first data set has none, or the other way round",
                        "give every data set the same kind of data (all steady profiles or all time courses)")
        sets.append((name, csv_name, len(value), None if nu == "none" else nu))
        rows.append((position, time, value))
    position = np.concatenate([r[0] for r in rows])
    time = None if rows[0][1] is None else np.concatenate([r[1] for r in rows])
    value = np.concatenate([r[2] for r in rows])
    return _FitSpec(label, ", ".join(x[1] for x in sets), position, time, value, length, spacing, source_flux,
                    boundary_far, solver, dt if dt is not None else 1.0, init, nuisance, noise, maxiter, tuple(sets))


def _check_rows(c: Checker, csv_name: str, position: np.ndarray, time: np.ndarray | None, value: np.ndarray,
                length: float, dt: float | None, noise: str) -> None:
    """A data file's rows against the model: positions inside [0, length], dt given for a time course,
    values > 0 for multiplicative noise."""
    bad = (position < -1e-9 * length) | (position > length * (1 + 1e-9))
    if bad.any():
        i = int(np.argmax(bad))
        raise _spec_error(csv_name, f"line {i + 2}, column position",
                          f"{position[i]:g} µm lies outside the domain [0, {length:g}] µm",
                          "fix the position or enlarge model.length")
    if time is not None and dt is None:
        raise c.err("model.dt", "missing (the data have a time column, so the model is simulated)",
                    "add dt = ... (s) to [model]")
    if noise == "multiplicative" and np.any(value <= 0):
        i = int(np.argmax(value <= 0))
        raise _spec_error(csv_name, f"line {i + 2}, column value",
                          f"value {value[i]:g} is not > 0, which multiplicative noise needs",
                          'drop that row or use noise = "additive"')


def _diffusion_cap(spec: _FitSpec) -> float | None:
    """The static bound on a fitted D (µm²/s, 10 × its start) that a time course with a solver
    needing one (``Solver.needs_diffusion_bound``, e.g. explicit) runs under; None when not needed."""
    needed = get_solver(spec.solver).needs_diffusion_bound and spec.time is not None
    return 10.0 * spec.init["D"] if needed else None


def _fit_predict(spec: _FitSpec) -> Predict:
    """``params -> prediction (M,)`` at the data rows: D (µm²/s), k (1/s) and optionally q (amount/s) in ``params``.

    Without a time column: the steady state sampled at the positions; with one:
    a run from rest saved at the unique times, then row ``i`` reads its
    (time, position). Traceable and vmappable in the parameters.
    """
    grid = Grid((round(spec.length / spec.spacing),), spacing=spec.spacing)
    far = {"x+": Dirichlet(0.0)} if spec.boundary_far == "dirichlet" else {}
    if spec.time is None:
        points = spec.position[:, None]

        def predict(p: dict[str, jax.Array]) -> jax.Array:
            flux = p.get("q", spec.source_flux)
            m = Model(grid, [Substrate("signal", diffusion=p["D"], decay=p["k"],
                                       boundary={"x-": Flux(flux), **far})], solver=spec.solver)
            return grid.sample(steady_state(m)[0], points)

        return predict
    times, ti = np.unique(spec.time, return_inverse=True)
    xs, xi = np.unique(spec.position, return_inverse=True)
    points = xs[:, None]
    t_end = float(times[-1])

    def predict_t(p: dict[str, jax.Array]) -> jax.Array:
        flux = p.get("q", spec.source_flux)
        m = Model(grid, [Substrate("signal", diffusion=p["D"], decay=p["k"],
                                   boundary={"x-": Flux(flux), **far})], solver=spec.solver,
                  max_diffusion=_diffusion_cap(spec))
        _, tr = simulate(m, m.init(), t_end=t_end, dt=spec.dt, save_at=times)
        frames = grid.sample(tr.fields[:, 0], points)  # (T, M)
        return frames[ti, xi]

    return predict_t


def _profile(predict: Predict, spec: _FitSpec, res: FitResult) -> dict[str, dict[str, list]]:
    """Profile likelihood: loss with each parameter held on a grid around the optimum, the others re-fitted.

    The grid of held values is one :func:`fit_batch` per parameter (one
    compiled program, the held value traced), started from the best fit
    (:func:`jaxcell.inference.profile_losses`).

    Returns:
        name -> ``{"values": [...] (parameter units), "loss": [...] (0.5 Σ r², None where not finite)}``,
        up to ``_PROFILE_POINTS`` entries each.
    """
    out: dict[str, dict[str, list]] = {}
    for name in res.names:
        best = res.params[name]
        se = res.stderr[name]
        span = float(np.clip(3.0 * se, 0.1, 1.0)) if np.isfinite(se) else 1.0
        values = best * np.exp(np.linspace(-span, span, _PROFILE_POINTS))
        cap = _diffusion_cap(spec) if name == "D" else None
        if cap is not None:  # the solver cannot run past its static bound
            values = values[values <= cap * (1 + 1e-12)]
        capped = _diffusion_cap(spec) if name != "D" and "D" in res.params else None
        try:
            losses = profile_losses(predict, spec.value, res.params, name, values, nuisance=spec.nuisance,
                                    noise=spec.noise, sigma=None, iterations=_PROFILE_MAXITER,
                                    bounds=None if capped is None else {"D": (None, capped)}).tolist()
        except ValueError:
            losses = [float("nan")] * len(values)
        out[name] = {"values": [float(v) for v in values], "loss": [_finite(v) for v in losses]}
    return out


def _fit_figures(folder: Path, spec: _FitSpec, res: FitResult, pred: np.ndarray,
                 profile: dict[str, dict[str, list]]) -> None:
    """Write ``residuals.png`` (data, model ``a·pred + b`` and residuals) and ``profile_<name>.png`` to ``folder``.

    ``pred`` is the unscaled prediction ``(M,)`` at the fitted parameters, ``profile`` as from :func:`_profile`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a = 1.0 if res.scale is None else res.scale
    b = 0.0 if res.offset is None else res.offset
    _residual_figure(plt, folder / "residuals.png", spec.position, spec.time, spec.value, a * pred + b,
                     res.residuals.reshape(-1), spec.noise, ", ".join(f"{n} = {v:.3g}" for n, v in res.params.items()))
    s2 = res.sigma ** 2 if np.isfinite(res.sigma) and res.sigma > 0 else 1.0
    best = float(res.loss[-1])
    for name, prof in profile.items():
        fig, ax = plt.subplots(figsize=(5.0, 3.6))
        loss = np.array([np.nan if x is None else x for x in prof["loss"]], np.float64)
        ax.plot(prof["values"], (loss - best) / s2, "o-")
        ax.axvline(res.params[name], color="k", lw=0.8, ls=":")
        ax.axhline(1.92, color="r", lw=0.8, ls="--", label="95% (Δ = 1.92)")
        ax.set_xscale("log")
        ax.set_xlabel(name)
        ax.set_ylabel("Δ loss / σ²")
        ax.set_title(f"profile likelihood of {name}")
        ax.legend(fontsize="small")
        fig.tight_layout()
        fig.savefig(folder / f"profile_{name}.png", dpi=100)
        plt.close(fig)


def _run_sets(spec: _FitSpec, predict_all: Predict, cap: float | None, out: Path) -> int:
    """``jaxcell fit`` of several ``[[data]]`` sets: one joint :func:`fit` (shared D, k, q; each set's own
    nuisance and noise level) with 95 % profile-likelihood intervals; ``fit.json`` and one
    ``residuals_<set>.png`` per set, ``profile_<param>.png`` per parameter."""
    names = [x[0] for x in spec.sets]
    edges = np.cumsum([0] + [x[2] for x in spec.sets])
    observed = {nm: spec.value[edges[i]:edges[i + 1]] for i, nm in enumerate(names)}

    def predict(p: dict[str, jax.Array]) -> dict[str, jax.Array]:
        y = predict_all(p)
        return {nm: y[edges[i]:edges[i + 1]] for i, nm in enumerate(names)}

    try:
        res = fit(predict, observed, spec.init, nuisance={x[0]: x[3] for x in spec.sets}, noise=spec.noise,
                  maxiter=spec.maxiter, bounds=None if cap is None else {"D": (None, cap)}, profile=0.95,
                  profile_points=21)
    except ValueError as e:
        raise _spec_error(spec.label, "fit", f"the fit failed: {e}",
                          "check [fit] init (plausible starting values) and [model]") from None
    pred = np.asarray(predict_all({n: jnp.asarray(v, float_dtype()) for n, v in res.params.items()}), np.float64)
    summary = {
        **_summary(spec, res),
        "data": {x[0]: x[1] for x in spec.sets},
        "ci95": {n: [_finite(lo), _finite(hi)] for n, (lo, hi) in res.ci.items()},
        "sets": {nm: {k: (None if v is None else _finite(v)) for k, v in nu.items()}
                 for nm, nu in res.nuisance.items()},
        "loss": float(res.loss[-1]),
        "iterations": int(res.iterations),
        "noise": spec.noise,
        "profile": {n: {"values": [float(v) for v in p["values"]], "loss": [_finite(v) for v in p["loss"]],
                        "threshold": float(p["threshold"])} for n, p in res.profile.items()},
    }
    _publish(out, summary, lambda folder: _sets_figures(folder, spec, res, pred, edges))
    print(f"jaxcell: fit {spec.label} ({len(names)} data sets): "
          + ", ".join(f"{n} = {v:.4g} [{res.ci[n][0]:.3g}, {res.ci[n][1]:.3g}]" for n, v in res.params.items())
          + f" (95 % profile intervals){'' if res.converged else ', NOT converged'}; outputs in {out}")
    for w in res.warnings:
        print(f"jaxcell: warning: {w}")
    return 0


def _sets_figures(folder: Path, spec: _FitSpec, res: FitResult, pred: np.ndarray, edges: np.ndarray) -> None:
    """``residuals_<set>.png`` (each set's data against its gain·model + background) and
    ``profile_<param>.png`` (loss − minimum against the held value, the 95 % threshold)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for i, (name, _, _, _) in enumerate(spec.sets):
        sl = slice(edges[i], edges[i + 1])
        nu = res.nuisance[name]
        a = 1.0 if nu["scale"] is None else nu["scale"]
        b = 0.0 if nu["offset"] is None else nu["offset"]
        _residual_figure(plt, folder / f"residuals_{name}.png", spec.position[sl],
                         None if spec.time is None else spec.time[sl], spec.value[sl], a * pred[sl] + b,
                         res.residuals[sl], spec.noise, f"{name}: scale {a:.3g}, offset {b:.3g}",
                         "residual / the set's noise s.d.")
    for name, prof in res.profile.items():
        fig, ax = plt.subplots(figsize=(5.0, 3.6))
        low = float(np.nanmin(prof["loss"]))
        ax.plot(prof["values"], prof["loss"] - low, "o-", ms=3)
        ax.axhline(prof["threshold"] - low, color="r", lw=0.8, ls="--", label="95 %")
        lo, hi = res.ci[name]
        ax.axvspan(lo if np.isfinite(lo) else prof["values"][0], hi if np.isfinite(hi) else prof["values"][-1],
                   color="C0", alpha=0.15, label="95 % profile interval")
        ax.set(xlabel=name, ylabel="Δ loss (s.d. units)", title=f"profile likelihood of {name}")
        ax.legend(fontsize="small")
        fig.tight_layout()
        fig.savefig(folder / f"profile_{name}.png", dpi=100)
        plt.close(fig)


def _publish(out: Path, summary: dict, draw: Callable[[Path], None]) -> None:
    """``fit.json`` and the figures ``draw(folder)`` makes, written beside ``out`` and renamed into place."""
    try:
        with staging(out, _MARKERS) as folder:
            write_text(folder / "fit.json", json.dumps(summary, indent=2, allow_nan=False) + "\n")
            draw(folder)
    except FileExistsError as e:  # out changed while fitting
        raise _spec_error(str(out), "", str(e), "choose another --out") from None


def _summary(spec: _FitSpec, res: FitResult) -> dict:
    """What ``fit.json`` says of any fit: spec, parameters, errors, λ, correlation, warnings, convergence."""
    return {
        "spec": spec.label,
        "params": res.params,
        "stderr": {n: _finite(v) for n, v in res.stderr.items()},
        "lambda_um": math.sqrt(res.params["D"] / res.params["k"]),
        "correlation": {"names": list(res.names),
                        "matrix": [[_finite(x) for x in row] for row in np.asarray(res.correlation)]},
        "warnings": list(res.warnings),
        "unidentified": res.unidentified,
        "converged": bool(res.converged),
    }


def _residual_figure(plt: Any, path: Path, pos: np.ndarray, times: np.ndarray | None, val: np.ndarray,
                     model_y: np.ndarray, residuals: np.ndarray, noise: str, title: str,
                     residual_label: str | None = None) -> None:
    """Data (points) against the model (lines), one colour per time, over the residuals; saved to ``path``."""
    fig, (ax0, ax1) = plt.subplots(2, 1, figsize=(6.4, 6.4), sharex=True, height_ratios=(2, 1))
    groups = [(None, np.ones(val.shape, bool))] if times is None else [(t, times == t) for t in np.unique(times)]
    for t, sel in groups:
        order = np.argsort(pos[sel])
        lab = "" if t is None else f" t = {t:g} s"
        line = ax0.plot(pos[sel][order], model_y[sel][order], "-", label=f"model{lab}")[0]
        ax0.plot(pos[sel], val[sel], "o", ms=3, color=line.get_color(), label=f"data{lab}")
        ax1.plot(pos[sel], residuals[sel], "o", ms=3, color=line.get_color())
    if noise == "multiplicative":
        ax0.set_yscale("log")
    ax0.set_ylabel("value")
    ax0.legend(fontsize="small")
    ax0.set_title(title)
    ax1.axhline(0.0, color="k", lw=0.8)
    ax1.set_xlabel("position (µm)")
    ax1.set_ylabel(residual_label or ("log residual" if noise == "multiplicative" else "residual"))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _finite(x: float) -> float | None:
    """``x`` as a float, or None (JSON null) when it is not finite."""
    return float(x) if np.isfinite(x) else None


def run_fit_cli(spec_path: str, out_dir: str | None) -> int:
    """``jaxcell fit SPEC.toml [--out DIR]``: fit D, k (and optionally the source flux) to a measured 1D profile.

    SPEC.toml (unknown keys are errors)::

        title = "..."                       # optional free text
        description = "..."
        [data]
        csv = "profile.csv"                 # relative to the spec; header row with columns
                                            # position (µm), value, and optionally time (s)
        # or several data sets (embryos, discs) sharing D, k (and q), one table each:
        # [[data]]
        # name = "disc1"; csv = "disc1.csv"; nuisance = "scale+offset"   # name, nuisance optional
        [model]                             # a 1D domain [0, length] µm
        length = 150.0                      # µm
        spacing = 2.5                       # µm, must divide length
        source_flux = 1.0                   # inward flux at x- (amount/s); default 1.0
        boundary_far = "noflux"             # x+ face: "noflux" (default) or "dirichlet" (held at 0)
        solver = "implicit"                 # any of jaxcell.solvers.names(); default "implicit". For
                                            #  time courses with a solver that needs a static bound
                                            #  (explicit), D is kept <= 10 × init D
        dt = 30.0                           # s; required when the data have a time column
        [fit]
        init = { D = 0.05, k = 1e-4 }       # starting values (µm²/s, 1/s); add q = ... to fit the source flux
        nuisance = "none"                   # "none" (default), "scale" or "scale+offset"
        noise = "additive"                  # or "multiplicative" (log-normal; values > 0)
        maxiter = 100                       # Levenberg–Marquardt iterations

    Without a ``time`` column the model is the steady state (:func:`jaxcell.steady_state`);
    with one it is :func:`jaxcell.simulate` from rest (c = 0 at t = 0) saved at the
    unique times, and each row is compared with the model at its (time, position).
    The model's prediction at the data positions (linear interpolation, ``grid.sample``)
    is fitted with :func:`fit`.

    Writes DIR (default ``./jaxcell-fit``), atomically (a temporary folder beside
    it, renamed at the end; an existing DIR is replaced only if it holds a
    ``fit.json``):

    * ``fit.json``: ``params``, ``stderr`` (standard error of log(param) = relative
      error; null where unidentified), ``correlation`` (names, matrix), ``warnings``,
      ``unidentified``, ``converged``, ``lambda_um`` = √(D/k), scale/offset, noise
      sigma, loss, iterations, and the profile likelihood values;
    * ``residuals.png``: data against the fitted model, and the residuals;
    * ``profile_<param>.png``: the profile likelihood of each parameter: the loss
      (over σ²) with that parameter fixed at 9 values around the optimum and the
      others re-fitted (at most 15 iterations each).

    Several ``[[data]]`` tables: one joint fit (each set its own nuisance, from its table or
    ``[fit] nuisance``, and its own estimated noise level) with 95 % profile-likelihood
    intervals (:func:`jaxcell.fit`, ``profile=0.95``, 21 points); ``fit.json`` adds ``ci95``
    and ``sets`` (each set's scale, offset and sigma), and the figures are
    ``residuals_<set>.png`` per set and ``profile_<param>.png``.

    Matplotlib (the ``jaxcell[io]`` extra) is imported lazily.

    Returns:
        0 on success. Raises :class:`jaxcell.scenario.ScenarioError` (one line: file,
        key, fix; the CLI prints it and exits 2) for a bad spec, data file, output
        folder or a failed fit; nothing is written then.
    """
    spec = _load_fit_spec(spec_path)
    out = Path(out_dir if out_dir is not None else "jaxcell-fit")
    problem = why_not_replaceable(out, _MARKERS)
    if problem is not None:
        raise _spec_error(str(out), "", problem, "choose another --out (jaxcell only replaces folders it wrote)")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise _spec_error("jaxcell fit", "", "the figures need matplotlib, which is not installed",
                          "install the extra: pip install 'jaxcell[io]'") from None

    predict = _fit_predict(spec)
    cap = _diffusion_cap(spec)
    if spec.sets:
        return _run_sets(spec, predict, cap, out)
    try:
        res = fit(predict, spec.value, spec.init, nuisance=spec.nuisance, noise=spec.noise, maxiter=spec.maxiter,
                  bounds=None if cap is None else {"D": (None, cap)})
    except ValueError as e:
        raise _spec_error(spec.label, "fit", f"the fit failed: {e}",
                          "check [fit] init (plausible starting values) and [model]") from None
    if cap is not None and res.params["D"] >= 0.99 * cap:
        note = (f"D = {res.params['D']:.4g} µm²/s stopped at the {spec.solver} solver's bound 10 × init D = "
                f'{cap:.4g}: raise [fit] init D or use solver = "implicit"')
        res = dataclasses.replace(res, warnings=[*res.warnings, note])
    pred = np.asarray(predict({n: jnp.asarray(v, float_dtype()) for n, v in res.params.items()}), np.float64)
    profile = _profile(predict, spec, res)

    summary = {
        **_summary(spec, res),
        "data": spec.csv,
        "scale": None if res.scale is None else _finite(res.scale),
        "offset": None if res.offset is None else _finite(res.offset),
        "sigma": _finite(res.sigma),
        "loss": float(res.loss[-1]),
        "iterations": int(res.iterations),
        "nuisance": spec.nuisance,
        "noise": spec.noise,
        "profile": profile,
    }
    _publish(out, summary, lambda folder: _fit_figures(folder, spec, res, pred, profile))
    lam = summary["lambda_um"]
    print(f"jaxcell: fit {spec.label}: " + ", ".join(f"{n} = {v:.4g}" for n, v in res.params.items())
          + f" (λ = {lam:.3g} µm){'' if res.converged else ', NOT converged'}; outputs in {out}")
    for w in res.warnings:
        print(f"jaxcell: warning: {w}")
    return 0



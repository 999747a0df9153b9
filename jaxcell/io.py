"""Running a scenario for people: chunked simulation, snapshots, and the output folder.

:func:`run_scenario` advances a :class:`jaxcell.scenario.Scenario` one saved frame
at a time (the same compiled step function every chunk), writing each frame and
a snapshot of the full state atomically into ``DIR.partial/`` next to the output
folder ``DIR``. When the run ends it writes, inside ``DIR.partial/``:

* ``fields.zarr``: an xarray-readable Zarr store: ``concentration`` with dims
  ``(time, substrate, x[, y[, z]])`` (s, µm), the cells' ``position``
  ``(cell, axis)`` and per-frame ``bound_receptors``, ``free_receptors``,
  ``secretion``, ``uptake``, ``local_concentration`` ``(time, cell, substrate)``
  and ``activated`` ``(time, cell)``; ``units`` attributes on everything and the
  scenario (every parameter, seed, versions) in the store's attributes;
* ``summary.json``: the mass budget per substrate (:func:`jaxcell.budget`), the
  fraction of responders activated, run time and steps;
* PNG figures: mid-plane heat map with cells, radial profile around the
  secreting cells against the steady state of the same model (cells' rates
  frozen at the last frame), and the fraction of responders in their state
  (e.g. activated, hypoxic) over time;

and only then renames it to ``DIR``. A crash or bad input therefore never leaves
a half-written ``DIR``; ``DIR.partial/`` keeps the snapshots and the run's
``--set`` values for ``--resume``, and a lock file that keeps a second run out.
Zarr, xarray and matplotlib are the ``jaxcell[io]`` extra, imported lazily.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import importlib
import importlib.util
import json
import os
import shlex
import shutil
import socket
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcell._version import __version__
from jaxcell.atomic import why_not_replaceable, write_npz, write_text
from jaxcell.cells import coupling_weights, gather
from jaxcell.grid import AXES
from jaxcell.model import State
from jaxcell.scenario import Scenario, ScenarioError
from jaxcell.simulate import budget, simulate

__all__ = ["OutputError", "StopRequested", "require_io", "run_scenario", "saved_overrides"]

_MARK = ".jaxcell-partial"
_LOCK = "jaxcell.lock"
FIGURES = ("field_midplane.png", "radial_profile.png", "activation.png")
CELL_FIGURE = "cells.png"  # scenarios whose cells live ([[rules]]): counts over time and tracks
BODY_FIGURE = "body.png"  # scenarios with [[compartments]]: what reaches the body, over time
TISSUE_FIGURE = "tissue.png"  # scenarios with an extracellular matrix or flow: how the medium shapes the signal


class OutputError(RuntimeError):
    """A problem with the output folder or the optional packages (one-line message)."""


class StopRequested(RuntimeError):
    """Raised after ``stop_after_chunks`` chunks (a test hook that imitates a killed run).

    ``what`` says where it stopped, without the advice to resume.
    """

    def __init__(self, what: str) -> None:
        super().__init__(f"{what}; continue with --resume")
        self.what = what


def require_io(figures: bool = True, *, check_only: bool = False) -> tuple[Any, Any, Any]:
    """Import zarr, xarray and matplotlib (Agg; only with ``figures``), or raise :class:`OutputError` saying how
    to install them.

    With ``check_only`` the packages are only looked up, not imported (a
    fraction of a second sooner at start-up); the result is then ``(None,) * 3``.
    """
    mods: list[Any] = []
    for name in ("zarr", "xarray", "matplotlib"):
        if name == "matplotlib" and not figures:
            mods.append(None)
            continue
        try:
            if check_only:
                if importlib.util.find_spec(name) is None:
                    raise ImportError(name)
                mods.append(None)
            else:
                mods.append(importlib.import_module(name))
        except ImportError:
            raise OutputError(f"writing outputs needs {name}, which is not installed; "
                              f"install the extra: pip install 'jaxcell[io]'") from None
    if mods[2] is not None:
        mods[2].use("Agg")
    return mods[0], mods[1], mods[2]


# ---------------------------------------------------------------------------------------------
# Atomic files and the in-progress folder


def partial_dir(out: Path) -> Path:
    """The in-progress folder of output folder ``out``: ``out.partial`` beside it."""
    return out.with_name(out.name + ".partial")


def source_key(source: str) -> str:
    """A scenario's source as a run records it: built-ins by name, files by absolute path (so
    ``tiny.toml`` and ``./tiny.toml``, or the same file from another folder, are one scenario)."""
    return source if source.startswith("builtin:") else str(Path(source).resolve())


def _meta(sc: Scenario) -> dict:
    return {"fingerprint": sc.fingerprint(), "jaxcell": __version__,
            "precision": str(jnp.result_type(float)), "scenario": sc.name, "source": source_key(sc.source)}


def saved_overrides(out: str | Path, source: str | None = None) -> list[str] | None:
    """The ``--set`` values of the interrupted run in ``out.partial/`` (None: no such run to resume, or,
    given the ``source`` about to run (a label as :func:`jaxcell.scenario.load` makes it), a run of
    another scenario, whose values must not be applied to this one).

    ``jaxcell run --resume`` without ``--set`` reuses them, so the command it
    prints after an interruption continues the same run.
    """
    mark = partial_dir(Path(out).absolute()) / _MARK
    try:
        old = json.loads(mark.read_text("utf-8") or "{}")
    except (OSError, ValueError):
        return None
    if not isinstance(old, dict) or (source is not None and old.get("source") != source_key(source)):
        return None
    got = old.get("overrides")
    return [str(x) for x in got] if isinstance(got, list) else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by someone else
    except OSError:
        return False
    return True


def _take_lock(part: Path) -> Path:
    """Create ``part/jaxcell.lock`` atomically (O_CREAT | O_EXCL) holding this process's id and host.

    A lock left by a process that no longer runs on this host is taken over.

    Raises:
        OutputError: another live run holds it (the message names it and how to clear a stale lock).
    """
    lock = part / _LOCK
    host = socket.gethostname()
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                info = json.loads(lock.read_text("utf-8") or "{}")
            except (OSError, ValueError):
                info = {}
            pid, where = info.get("pid"), info.get("host")
            if isinstance(pid, int) and where == host and not _pid_alive(pid):
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()  # stale: its process is gone
                continue
            who = f"process {pid} on {where}" if pid else "another process"
            raise OutputError(f"{part}: another jaxcell run ({who}) is writing this output; wait for it or "
                              f"choose another --out; if no such run is alive, delete {lock}") from None
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps({"pid": os.getpid(), "host": host,
                                 "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}))
        return lock
    raise OutputError(f"{part}: could not take the lock {lock}; delete it if no jaxcell run is writing there")


def _release_lock(lock: Path) -> None:
    """Remove ``lock`` if this process still holds it."""
    with contextlib.suppress(OSError, ValueError):
        if json.loads(lock.read_text("utf-8")).get("pid") == os.getpid():
            lock.unlink()


def _cannot_write(out: Path, e: OSError) -> OutputError:
    where = e.filename or out
    return OutputError(f"{out}: cannot write the output there ({where}: {e.strerror or e}); "
                       f"choose an --out in a folder you can write to")


# ---------------------------------------------------------------------------------------------
# State snapshots


def _save_state(path: Path, state: State, chunk: int) -> None:
    leaves = jax.tree_util.tree_leaves(state)
    write_npz(path, chunk=np.asarray(chunk), t_static=np.asarray(state.t_static, np.float64),
              **{f"leaf{i:04d}": np.asarray(x) for i, x in enumerate(leaves)})


def _load_state(path: Path, template: State) -> tuple[State, int]:
    leaves, treedef = jax.tree_util.tree_flatten(template)
    with np.load(path) as z:
        got = [z[f"leaf{i:04d}"] for i in range(len(leaves)) if f"leaf{i:04d}" in z]
        if len(got) != len(leaves) or any(g.shape != np.shape(x) for g, x in zip(got, leaves, strict=True)):
            raise OutputError(f"{path}: the snapshot does not match the scenario; "
                              f"run again without --resume to start over")
        chunk, t = int(z["chunk"]), float(z["t_static"])
    new = [jnp.asarray(g, dtype=jnp.asarray(x).dtype) for g, x in zip(got, leaves, strict=True)]
    state = jax.tree_util.tree_unflatten(treedef, new)
    from jaxcell._node import replace

    return replace(state, t_static=t), chunk


# ---------------------------------------------------------------------------------------------
# Frames


@functools.partial(jax.jit, static_argnums=(0, 1))
def _local(grid: Any, coupling: str, position: jax.Array, alive: jax.Array, fields: jax.Array) -> jax.Array:
    """Concentration at each cell ``(N, S)``: one compiled call per frame (eagerly, a dozen small dispatches)."""
    return gather(grid, *coupling_weights(grid, position, alive, coupling), fields)


def _frame(sc: Scenario, state: State) -> dict[str, np.ndarray]:
    """Host copy of one saved frame: fields and per-cell states."""
    out = {"t": np.asarray(float(state.t_static)), "fields": np.asarray(state.fields)}
    if state.matrix is not None:
        out["matrix"] = np.asarray(state.matrix)
    if state.compartments:
        for k, v in state.compartments.items():  # flat keys: frames are saved as .npz
            out[f"compartment_{k}"] = np.asarray(v)
        b = budget(state)
        out["reached"] = np.asarray(b["compartments"] + b["cleared"])  # what has left the tissue for the body
        out["made"] = np.asarray(b["secreted"] + b["produced"])
    cells = state.cells
    if cells is not None:
        local = np.asarray(_local(sc.grid, sc.model.coupling, cells.position, cells.alive, state.fields))
        n, s = cells.n, sc.model.n_substrates
        rec = cells.receptors
        out["bound"] = np.asarray(rec.bound) if rec is not None else np.zeros((n, s))
        out["free"] = np.asarray(rec.free) if rec is not None else np.zeros((n, s))
        out["secretion"] = np.asarray(cells.secretion)
        out["uptake"] = np.asarray(cells.uptake)
        out["local"] = local
        out["activated"] = sc.activated(cells, local)
        if sc.behaviour is not None:  # cells that live: where each slot is, and whether it holds a cell
            out["track"] = np.asarray(cells.position)
            out["alive"] = np.asarray(cells.alive)
            out["type"] = np.asarray(cells.type)  # a daughter takes its mother's type into a free slot
            out["responder"] = sc.has_activation(cells)
    return out


def _steps(t0: float, t1: float, dt: float) -> int:
    n = int(np.floor((t1 - t0) / dt * (1 + 1e-12)))
    return n + (1 if (t1 - t0) - n * dt > 1e-9 * dt else 0)


@contextlib.contextmanager
def _progress(enabled: bool, total: int, label: str) -> Iterator[Callable[[int, float], None]]:
    start = time.perf_counter()

    def update(done: int, t: float) -> None:
        if not enabled:
            return
        width = 30
        fill = int(width * done / max(total, 1))
        el = time.perf_counter() - start
        sys.stderr.write(f"\r{label} [{'#' * fill}{'.' * (width - fill)}] {done}/{total} t = {t:g} s  "
                         f"{el:.1f} s ")
        sys.stderr.flush()

    try:
        yield update
    finally:
        if enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()


# ---------------------------------------------------------------------------------------------
# The run


WORK_PER_CALL = 2e8  # voxel-updates (voxels × substrates × steps) in one compiled call at most
CELL_WORK = 10  # voxel-updates a cell costs per step and substrate (exchange, binding); 50 with [[rules]]


def steps_per_call(sc: Scenario) -> int:
    """Most time steps one compiled call of a run may take: :data:`WORK_PER_CALL` voxel-updates (cells
    counted as :data:`CELL_WORK` each), at least 2.

    A frame interval longer than that is advanced in several calls, so that
    Ctrl-C (which Python sees only between calls) stops a run within seconds.
    """
    per_cell = CELL_WORK * (5 if sc.behaviour is not None else 1)
    work = sc.model.n_substrates * (sc.grid.size + per_cell * sc.n_cells)
    return max(2, int(WORK_PER_CALL // max(1, work)))


def _advance(sc: Scenario, state: State, t_end: float, max_steps: int) -> State:
    """``simulate`` from ``state`` to ``t_end`` in calls of at most about ``max_steps`` full steps of dt.

    The frame's n steps are spread evenly over k calls of at least 2 steps each
    (a one-step call compiles without its loop); each call ends on a whole
    number of steps of dt after the frame's start and the last one on ``t_end``
    with the one short step an unsplit call would take. So the steps are those
    of one call and the numbers agree to round-off (XLA may fuse a loop of a few
    steps differently: last-bit differences). A resumed run makes the same
    calls as an uninterrupted one, so it agrees bit for bit.
    """
    dt = sc.run.dt
    t0 = float(state.t_static)
    n = _steps(t0, t_end, dt)
    calls = max(1, min(-(-n // max(2, max_steps)), n // 2))
    ends = [n * (i + 1) // calls for i in range(calls - 1)]
    for done in ends:
        state, _ = simulate(sc.model, state, t_end=t0 + done * dt, dt=dt, behaviour=sc.behaviour, seed=sc.run.seed)
        jax.block_until_ready(state.fields)  # a Ctrl-C lands here, between calls
    state, _ = simulate(sc.model, state, t_end=t_end, dt=dt, behaviour=sc.behaviour, seed=sc.run.seed)
    jax.block_until_ready(state.fields)
    return state


def run_scenario(sc: Scenario, out: str | Path, *, resume: bool = False, progress: bool | None = None,
                 stop_after_chunks: int | None = None, figures: bool = True,
                 log: Callable[[str], None] | None = None, overrides: Sequence[str] = (),
                 max_steps_per_call: int | None = None) -> dict:
    """Run ``sc`` and write its outputs to the folder ``out`` (see the module docstring).

    Args:
        sc: a scenario from :func:`jaxcell.scenario.load`.
        out: output folder; replaced only if it is an earlier jaxcell output.
        resume: continue from the last snapshot in ``out.partial/`` (same
            scenario); ends with the same numbers as an uninterrupted run.
        progress: progress bar on stderr (default: when stderr is a terminal).
        stop_after_chunks: raise :class:`StopRequested` after this many chunks
            (imitates a killed run, for tests).
        figures: write the PNG figures (a few seconds; needs matplotlib).
        log: where one-line notes go (default: stderr).
        overrides: the ``--set`` values ``sc`` was loaded with; kept in
            ``out.partial/`` for a later ``--resume`` (:func:`saved_overrides`).
        max_steps_per_call: steps per compiled call at most (default
            :func:`steps_per_call`); the numbers depend on it only at round-off.

    Returns:
        The summary dict also written to ``summary.json``.

    Raises:
        OutputError: ``out`` may not be written, or another run is writing it
            (a lock file ``out.partial/jaxcell.lock``; one left by a dead process
            is taken over).
    """
    say = log or (lambda m: print(m, file=sys.stderr))
    zarr, xr, mpl = require_io(figures)
    out = Path(out).absolute()
    problem = why_not_replaceable(out, ("summary.json", "fields.zarr"))
    if problem is not None:
        raise OutputError(f"{out}: {problem}; choose another --out (jaxcell only replaces folders it wrote)")
    part = partial_dir(out)
    meta = _meta(sc)
    if part.exists() and not part.is_dir():
        raise OutputError(f"{part}: exists and is not a folder; remove it or choose another --out")
    if part.exists() and os.listdir(part) and not ({_MARK, _LOCK} & set(os.listdir(part))):
        raise OutputError(f"{part}: exists and was not made by jaxcell; remove it or choose another --out")
    if progress is None:
        progress = sys.stderr.isatty()
    max_steps = max_steps_per_call or steps_per_call(sc)

    times = sc.run.save_times()
    state0 = sc.init_state()
    _dry_run(sc, state0)
    try:
        part.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _cannot_write(out, e) from None
    lock = _take_lock(part)
    try:
        state, done, resumed, sim_seconds, chunk_times = _run_chunks(
            sc, part, meta, list(overrides), state0, times, resume=resume, progress=progress,
            stop_after_chunks=stop_after_chunks, max_steps=max_steps, say=say)
        summary = _finish(sc, out, part, state, times, xr, mpl, resumed=resumed, sim_seconds=sim_seconds,
                          chunk_times=chunk_times, figures=figures)
    except BaseException:
        _release_lock(lock)
        raise
    # empty the partial folder while still holding its lock, then let go and remove it: a run that takes
    # the lock in between finds an empty folder, and nothing of its own is deleted
    for entry in part.iterdir():
        if entry != lock:
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
    _release_lock(lock)
    with contextlib.suppress(OSError):
        part.rmdir()
    return summary


def _run_chunks(sc: Scenario, part: Path, meta: dict, overrides: list[str], state0: State, times: np.ndarray, *,
                resume: bool, progress: bool, stop_after_chunks: int | None, max_steps: int,
                say: Callable[[str], None]) -> tuple[State, int, bool, float, list[float]]:
    """Advance frame by frame from the start or the last snapshot in ``part``, writing frames and snapshots."""
    n_chunks = len(times) - 1
    state, done = state0, 0
    resumed = False
    if resume and (part / "state.npz").exists() and (part / _MARK).exists():
        old = json.loads((part / _MARK).read_text("utf-8") or "{}")
        old_set = old.pop("overrides", [])
        if old != meta:
            was = " ".join(f"--set {shlex.quote(o)}" for o in old_set) or "no --set"
            now = " ".join(f"--set {shlex.quote(o)}" for o in overrides) or "no --set"
            raise OutputError(f"{part}: holds a run of a different scenario or settings (it ran {old.get('source')} "
                              f"with {was}; this is {meta['source']} with {now}); resume it with its own "
                              f"scenario and --resume alone, or run again without --resume to start over")
        state, done = _load_state(part / "state.npz", state0)
        resumed = True
        say(f"jaxcell: resuming {sc.name} from t = {times[done]:g} s (frame {done} of {n_chunks})")
    else:
        if resume:
            say(f"jaxcell: no snapshot in {part}; starting from t = 0")
        try:
            for entry in part.iterdir():
                if entry.name != _LOCK:
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
            (part / "frames").mkdir()
            write_text(part / _MARK, json.dumps({**meta, "overrides": overrides}))
            write_text(part / "scenario.toml", sc.text)
            write_npz(part / "frames" / "frame_000000.npz", **_frame(sc, state0))
            _save_state(part / "state.npz", state0, 0)
        except OSError as e:
            raise _cannot_write(part, e) from None

    t_start = time.perf_counter()
    chunk_times = []
    with _progress(progress, n_chunks, sc.name) as bar:
        bar(done, float(times[done]))
        ran = 0
        for k in range(done + 1, n_chunks + 1):
            if stop_after_chunks is not None and ran >= stop_after_chunks:
                raise StopRequested(f"stopped after {ran} chunks at t = {times[k - 1]:g} s as asked")
            t0 = time.perf_counter()
            state = _advance(sc, state, float(times[k]), max_steps)
            frame = _frame(sc, state)
            chunk_times.append(time.perf_counter() - t0)
            write_npz(part / "frames" / f"frame_{k:06d}.npz", **frame)
            _save_state(part / "state.npz", state, k)
            ran += 1
            bar(k, float(times[k]))
    return state, done, resumed, time.perf_counter() - t_start, chunk_times


def _finish(sc: Scenario, out: Path, part: Path, state: State, times: np.ndarray, xr: ModuleType, mpl: ModuleType, *,
            resumed: bool, sim_seconds: float, chunk_times: list[float], figures: bool) -> dict:
    """Write the store, summary and figures into ``part/final`` and publish it as ``out``."""
    n_chunks = len(times) - 1
    final = part / "final"
    if final.exists():
        shutil.rmtree(final)
    final.mkdir()
    frames = [dict(np.load(part / "frames" / f"frame_{k:06d}.npz")) for k in range(n_chunks + 1)]
    ds = _dataset(sc, frames, xr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr: consolidated metadata is not yet part of the v3 spec
        ds.to_zarr(final / "fields.zarr", mode="w", consolidated=True)
    summary = _summary(sc, state, frames, times, resumed=resumed, sim_seconds=sim_seconds,
                       chunk_times=chunk_times)
    if figures:
        _figures(sc, frames, final, mpl)
    if sc.physicell_thickness is not None:
        _physicell_files(sc, frames, final / "physicell")
    summary["outputs"] = {p.name: _size(p) for p in sorted(final.iterdir())}
    write_text(final / "summary.json", json.dumps(summary, indent=2, default=_json_default) + "\n")

    # Publish: the finished folder replaces an earlier jaxcell output in one rename.
    if out.exists():
        os.replace(out, part / "previous")
    os.replace(final, out)
    return summary


def _physicell_files(sc: Scenario, frames: list[dict], folder: Path) -> None:
    """PhysiCell's ``output%08u_microenvironment0.mat`` per frame (what its MATLAB and Python loaders read)."""
    from jaxcell.physicell import write_microenvironment_mat

    folder.mkdir()
    grid = sc.grid
    centers = [grid.centers(a) for a in range(grid.ndim)]
    vol = grid.voxel_volume * sc.physicell_thickness  # PhysiCell's voxel is dx³ in 2D too
    for k, f in enumerate(frames):
        write_microenvironment_mat(folder / f"output{k:08d}_microenvironment0.mat", centers, vol, f["fields"])
    write_text(folder / "scenario.toml", sc.text)  # the translation that ran, a scenario of its own


def _dry_run(sc: Scenario, state: State) -> None:
    """Trace one step (no compile) so that a model the solvers refuse fails before any output exists."""
    try:
        jax.eval_shape(lambda: simulate(sc.model, state, t_end=sc.run.dt, dt=sc.run.dt, behaviour=sc.behaviour,
                                        seed=sc.run.seed)[0].fields)
    except ValueError as e:
        raise ScenarioError(sc.source, "run", str(e).split("\n")[0], "change the scenario accordingly") from None


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(type(x).__name__)


# ---------------------------------------------------------------------------------------------
# Zarr store


def _dataset(sc: Scenario, frames: list[dict], xr: ModuleType) -> Any:
    grid = sc.grid
    axes = list(AXES[: grid.ndim])
    unit_c = f"amount/µm^{grid.ndim}"
    coords: dict[str, Any] = {
        "time": ("time", np.asarray([float(f["t"]) for f in frames]), {"units": "s", "long_name": "time"}),
        "substrate": ("substrate", np.asarray(sc.model.names, dtype=object), {"long_name": "diffusing species"}),
    }
    for a, name in enumerate(axes):
        coords[name] = (name, grid.centers(a), {"units": "µm", "long_name": f"voxel centre {name}"})
    data: dict[str, Any] = {
        "concentration": (("time", "substrate", *axes), np.stack([f["fields"] for f in frames]),
                          {"units": unit_c, "long_name": "concentration at voxel centres"}),
    }
    for cp in sc.model.compartments:
        if f"compartment_{cp.name}" in frames[0]:
            name = cp.name
            data[f"compartment_{name}"] = (("time", "substrate"), np.stack([f[f"compartment_{name}"] for f in frames]),
                                           {"units": unit_c, "long_name": f"concentration in the well-mixed "
                                            f"compartment {name!r}"})
    if "matrix" in frames[0]:
        data["matrix"] = (("time", "substrate", *axes), np.stack([f["matrix"] for f in frames]),
                          {"units": unit_c, "long_name": "ligand bound to the extracellular matrix (jc.Matrix)"})
    n = sc.n_cells
    if n:
        cells = sc.cells
        coords["cell"] = ("cell", np.arange(n), {"long_name": "cell index"})
        coords["axis"] = ("axis", np.asarray(axes, dtype=object), {"long_name": "spatial axis"})
        data["position"] = (("cell", "axis"), np.asarray(cells.position),
                            {"units": "µm", "long_name": "cell position at t = 0 (see track when cells move)"})
        data["cell_type"] = (("cell",), np.asarray(cells.type, np.int32),
                             {"units": "1", "types": json.dumps(list(sc.types)),
                              "long_name": "index into the 'types' attribute"})
        data["responder"] = (("cell",), sc.has_activation(), {"units": "1", "long_name": "has an activation rule"})
        per = (("bound", "bound_receptors", "complexes/cell", "ligand-receptor complexes"),
               ("free", "free_receptors", "receptors/cell", "free surface receptors"),
               ("secretion", "secretion", "amount/s", "secretion rate"),
               ("uptake", "uptake", f"µm^{grid.ndim}/s", "first-order uptake clearance"),
               ("local", "local_concentration", unit_c, "concentration the cell sees"))
        for key, name, unit, long in per:
            data[name] = (("time", "cell", "substrate"), np.stack([f[key] for f in frames]),
                          {"units": unit, "long_name": long})
        data["activated"] = (("time", "cell"), np.stack([f["activated"] for f in frames]),
                             {"units": "1", "long_name": "cell counts as activated (its activation rule)"})
        if "track" in frames[0]:
            data["track"] = (("time", "cell", "axis"), np.stack([f["track"] for f in frames]),
                             {"units": "µm", "long_name": "position of the cell in each slot at each frame; a slot "
                              "freed by a death may hold a daughter at a later frame"})
            data["alive"] = (("time", "cell"), np.stack([f["alive"] for f in frames]),
                             {"units": "1", "long_name": "the slot holds a live cell"})
            data["type_in_slot"] = (("time", "cell"), np.stack([f["type"] for f in frames]).astype(np.int32),
                                    {"units": "1", "types": json.dumps(list(sc.types)),
                                     "long_name": "cell type of the slot's cell at each frame"})
            data["responder_in_slot"] = (("time", "cell"), np.stack([f["responder"] for f in frames]),
                                         {"units": "1", "long_name": "the slot holds a live cell with an "
                                          "activation rule"})
    attrs = {
        "title": sc.config.get("title", ""),
        "description": sc.config.get("description", ""),
        "scenario_name": sc.name,
        "scenario_source": sc.source,
        "scenario": json.dumps(sc.config, default=_json_default),
        "scenario_toml": sc.text,
        "seed": int(sc.run.seed),
        "solver": sc.run.solver,
        "dt_s": float(sc.run.dt),
        "t_end_s": float(sc.run.t_end),
        "save_every_s": float(sc.run.save_every),
        "coupling": sc.run.coupling,
        "jaxcell_version": __version__,
        "jax_version": jax.__version__,
        "numpy_version": np.__version__,
        "precision": str(jnp.result_type(float)),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "units": "lengths µm, times s, concentrations amount/µm^ndim",
    }
    ds = xr.Dataset({k: (d, np.asarray(v), a) for k, (d, v, a) in data.items()},
                    coords={k: (d, np.asarray(v), a) for k, (d, v, a) in coords.items()}, attrs=attrs)
    return ds


# ---------------------------------------------------------------------------------------------
# summary.json


def _summary(sc: Scenario, state: State, frames: list[dict], times: np.ndarray, *, resumed: bool,
             sim_seconds: float, chunk_times: list[float]) -> dict:
    b = {k: np.asarray(v, np.float64) for k, v in budget(state).items()}
    names = sc.model.names
    scale = np.maximum.reduce([np.abs(b[k]) for k in ("initial", "secreted", "inflow", "outflow", "fields")])
    per_sub = {nm: {k: float(b[k][i]) for k in b} for i, nm in enumerate(names)}
    for i, nm in enumerate(names):
        # NaN stays NaN (a broken run must not report a closed budget); no flow at all is residual 0
        per_sub[nm]["relative_residual"] = (float(abs(b["residual"][i]) / scale[i]) if scale[i] > 0
                                            else (float("nan") if np.isnan(scale[i]) else 0.0))
    steps = sum(_steps(float(times[k]), float(times[k + 1]), sc.run.dt) for k in range(len(times) - 1))
    # responders per frame: fixed, or (cells that live) the live cells of a type with a rule
    resps = [f.get("responder", sc.has_activation()) for f in frames]
    resp = resps[-1]
    act: dict[str, Any] = {"fraction_responders_activated": None, "by_type": {}, "over_time": []}
    if sc.n_cells and resp.any():
        last = frames[-1]["activated"]
        act["fraction_responders_activated"] = float(last[resp].mean())
        tid = frames[-1].get("type", np.asarray(sc.cells.type))
        for j, tname in enumerate(sc.types):
            sel = resp & (tid == j)
            if sel.any():
                act["by_type"][tname] = {"cells": int(sel.sum()), "activated": int(last[sel].sum()),
                                         "fraction": float(last[sel].mean())}
        act["over_time"] = [float(f["activated"][r].mean()) if r.any() else 0.0 for f, r in zip(frames, resps)]
    fields = frames[-1]["fields"]
    body: dict[str, Any] = {}
    for i, s in enumerate(sc.model.substrates):
        if s.leak is None:
            continue
        name = s.leak.compartment
        made = float(b["secreted"][i] + b["produced"][i])
        body.setdefault(name, {})[names[i]] = {
            "concentration": float(frames[-1][f"compartment_{name}"][i]),
            "over_time": [float(f[f"compartment_{name}"][i]) for f in frames],
            "fraction_of_made_that_left_the_tissue": (float(b["compartments"][i] + b["cleared"][i]) / made
                                                       if made > 0 else None),
        }
    return {
        "scenario": sc.name,
        "source": sc.source,
        "title": sc.config.get("title", ""),
        "jaxcell_version": __version__,
        "jax_version": jax.__version__,
        "precision": str(jnp.result_type(float)),
        "device": str(jax.devices()[0]),
        "seed": sc.run.seed,
        "solver": sc.run.solver,
        "dt_s": sc.run.dt,
        "t_end_s": sc.run.t_end,
        "frames": len(frames),
        "times_s": [float(t) for t in times],
        "steps": steps,
        "cells": sc.n_cells,
        "voxels": sc.grid.size,
        "resumed": resumed,
        "run_seconds": sim_seconds,
        "first_chunk_seconds_with_compile": chunk_times[0] if chunk_times else None,
        "budget": per_sub,
        "max_concentration": {nm: float(fields[i].max()) for i, nm in enumerate(names)},
        "mean_concentration": {nm: float(fields[i].mean()) for i, nm in enumerate(names)},
        "activation": act,
        "fraction_responders_activated": act["fraction_responders_activated"],
        **({"compartments": body} if body else {}),
    }


# ---------------------------------------------------------------------------------------------
# Figures


def _cell_clearance(sc: Scenario, frame: dict, i: int) -> np.ndarray:
    """Per-cell first-order clearance (µm^ndim/s) of substrate ``i`` at a frame: uptake plus receptor
    internalisation at quasi-steady binding, kon·R_free·kint/(koff+kint), ``(N,)``."""
    clr = np.asarray(frame["uptake"][:, i], np.float64).copy()
    rec = sc.cells.receptors
    if rec is not None:
        kon, koff, kint = (np.asarray(getattr(rec, f))[:, i] for f in ("kon", "koff", "kint"))
        frac = np.where(koff + kint > 0, kint / np.where(koff + kint > 0, koff + kint, 1.0), 0.0)
        clr = clr + kon * frame["free"][:, i] * frac
    return clr


def _steady_reference(sc: Scenario, last: dict) -> np.ndarray | None:
    """The steady state of this scenario's own model (same box, faces and vessel) with every cell's rates
    frozen at the last frame, ``(S, *shape)``, or None when it has none.

    Secretion is the cells' rate at that time (responses included); receptors
    are replaced by the clearance they exert at quasi-steady binding
    (:func:`_cell_clearance`), which makes the model linear for
    :func:`jaxcell.steady_state`. Where the run has reached steady state, the
    simulated field lies on this curve.
    """
    from jaxcell._node import replace
    from jaxcell.model import Model
    from jaxcell.steady import steady_state

    if sc.behaviour is not None:  # cells that move, divide and die are no steady configuration
        return None

    m = sc.model
    model = Model(m.grid, m.substrates, solver="implicit", coupling=m.coupling, dirichlet_mask=m.dirichlet_mask,
                  dirichlet_value=0.0 if m.dirichlet_value is None else m.dirichlet_value,
                  compartments=m.compartments)
    cells = None
    if sc.n_cells:
        clr = np.stack([_cell_clearance(sc, last, i) for i in range(m.n_substrates)], axis=1)
        dtype = np.asarray(sc.cells.uptake).dtype
        cells = replace(sc.cells, secretion=jnp.asarray(last["secretion"], dtype), uptake=jnp.asarray(clr, dtype),
                        receptors=None)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.asarray(steady_state(model, cells))
    except ValueError:
        return None


def _binned(r: np.ndarray, v: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    which = np.digitize(r, edges) - 1
    ok = (which >= 0) & (which < len(edges) - 1)
    cnt = np.bincount(which[ok], minlength=len(edges) - 1)
    tot = np.bincount(which[ok], weights=v[ok], minlength=len(edges) - 1)
    mid = 0.5 * (edges[1:] + edges[:-1])
    has = cnt > 0
    return mid[has], tot[has] / cnt[has]


def _figures(sc: Scenario, frames: list[dict], folder: Path, mpl: ModuleType) -> None:
    """Write the PNG figures (:data:`FIGURES`) of a finished run into ``folder``.

    Args:
        sc: the scenario that ran.
        frames: the saved frames from :func:`_frame`, in time order.
        folder: where the files go.
        mpl: matplotlib, already switched to the Agg backend (:func:`require_io`).
    """
    import matplotlib.pyplot as plt

    _figure_field_midplane(sc, frames[-1], folder / FIGURES[0], plt)
    _figure_radial_profile(sc, frames[-1], folder / FIGURES[1], plt)
    _figure_activation(sc, frames, folder / FIGURES[2], plt)
    if sc.behaviour is not None:
        _figure_cells(sc, frames, folder / CELL_FIGURE, plt)
    if any(s.matrix is not None or s.velocity is not None for s in sc.model.substrates):
        _figure_tissue(sc, frames, folder / TISSUE_FIGURE, plt)
    if "reached" in frames[-1]:
        _figure_body(sc, frames, folder / BODY_FIGURE, plt)


def _cell_layout(sc: Scenario, frame: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Cell positions ``(N, ndim)`` µm and type indices ``(N,)`` (empty arrays when there are no cells).

    With a ``frame`` of a scenario whose cells live (rules), the live cells where
    that frame has them; otherwise the cells as placed.
    """
    if not sc.n_cells:
        return np.zeros((0, sc.grid.ndim)), np.zeros((0,), int)
    pos, tid = np.asarray(sc.cells.position), np.asarray(sc.cells.type)
    if frame is not None and "track" in frame:
        live = frame["alive"]
        return frame["track"][live], frame["type"][live]
    return pos, tid


def _colors(plt: ModuleType) -> list[str]:
    """The colour cycle; cell type ``j`` is drawn in ``colors[j % len(colors)]``."""
    return plt.rcParams["axes.prop_cycle"].by_key()["color"]


def _figure_field_midplane(sc: Scenario, last: dict, path: Path, plt: ModuleType) -> None:
    """``field_midplane.png``: one panel per substrate of the last frame's field (amount/µm^ndim).

    1D: the profile along x with the cells as ticks; 2D: the field; 3D: the
    plane through the middle voxel layer in z with the cells within one voxel of
    it. Cells are drawn by type, filled when activated.
    """
    grid, names = sc.grid, sc.model.names
    ndim, S = grid.ndim, len(names)
    t_last = float(last["t"])
    pos, tid = _cell_layout(sc, last)
    colors = _colors(plt)
    # room for the titles above square panels and the legend below them
    height = 4.4 if ndim == 1 else 3.6 + 1.6 * grid.extent[1] / grid.extent[0]
    fig, axs = plt.subplots(1, S, figsize=(5.2 * S, height), squeeze=False, layout="constrained")
    for i, nm in enumerate(names):
        ax = axs[0, i]
        f = last["fields"][i]
        if ndim == 1:
            ax.plot(grid.centers(0), f, "k-")
            ax.set_xlabel("x (µm)")
            ax.set_ylabel(f"{nm} ({sc.units(i)})")
            for j, tname in enumerate(sc.types):
                sel = tid == j
                ax.plot(pos[sel, 0], np.zeros(sel.sum()), "|", color=colors[j % len(colors)], label=tname)
        else:
            lo, ext = np.asarray(grid.origin), np.asarray(grid.extent)
            if ndim == 3:
                zi = grid.shape[2] // 2
                zc = grid.centers(2)[zi]
                img = f[:, :, zi]
                near = np.abs(pos[:, 2] - zc) <= grid.spacing[2] if len(pos) else np.zeros((0,), bool)
                ax.set_title(f"{nm} in the plane z = {zc:g} µm, t = {t_last:g} s")
            else:
                img = f
                near = np.ones((len(pos),), bool)
                ax.set_title(f"{nm} at t = {t_last:g} s")
            im = ax.imshow(img.T, origin="lower", extent=(lo[0], lo[0] + ext[0], lo[1], lo[1] + ext[1]),
                           cmap="viridis", aspect="equal")
            fig.colorbar(im, ax=ax, label=f"{nm} ({sc.units(i)})", shrink=0.8)
            act = last.get("activated", np.zeros((sc.n_cells,), bool))
            resp = last.get("responder", sc.has_activation())
            if "alive" in last:  # cells that live: pos and tid hold the live cells only
                act, resp = act[last["alive"]], resp[last["alive"]]
            for j, tname in enumerate(sc.types):
                sel = near & (tid == j)
                if not sel.any():
                    continue
                col = colors[j % len(colors)]
                on, off = sel & act, sel & ~act
                state = sc.state_name(j)
                has_rule = bool(resp[sel].any())
                if not has_rule:  # cells without a rule: a few (sources) as large triangles, many as dots
                    few = sel.sum() <= 50
                    ax.scatter(pos[sel, 0], pos[sel, 1], s=36 if few else 6, marker="^" if few else "o",
                               color=col, edgecolors="w" if few else "none", linewidths=0.6, label=tname)
                    continue
                ax.scatter(pos[off, 0], pos[off, 1], s=10, facecolors="none", edgecolors=col, linewidths=0.7,
                           label=f"{tname}, not {state}")
                if on.any():
                    ax.scatter(pos[on, 0], pos[on, 1], s=10, color=col, label=f"{tname}, {state}")
            ax.set_xlabel("x (µm)")
            ax.set_ylabel("y (µm)")
        if len(sc.types) and ndim == 1:
            ax.legend(fontsize=7, loc="best")
    if len(sc.types) and ndim > 1:  # one legend below all panels, off the data and the axis labels
        handles, labels = axs[0, -1].get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, fontsize=7, loc="outside lower center", ncol=min(4, len(labels)),
                       frameon=False)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _figure_radial_profile(sc: Scenario, last: dict, path: Path, plt: ModuleType) -> None:
    """``radial_profile.png``: one panel per substrate, the last frame against the model's own steady state.

    With secreting cells: concentration binned by distance to the nearest cell
    secreting that substrate (µm); without: the profile along x, averaged over
    the other axes. The reference curve is :func:`_steady_reference` binned the
    same way: the same closed box, faces and vessel, so the comparison is fair
    (a free-space point-source formula is not, in a no-flux box).
    """
    names = sc.model.names
    ref = _steady_reference(sc, last)
    fig, axs = plt.subplots(1, len(names), figsize=(5.2 * len(names), 4.0), squeeze=False, layout="constrained")
    t = float(last["t"])
    for i, nm in enumerate(names):
        ax = axs[0, i]
        q = last["secretion"][:, i] if sc.n_cells else np.zeros((0,))
        if "alive" in last:  # cells that live: the secreting cells alive at this frame
            q = np.where(last["alive"], q, 0.0)
        f = last["fields"][i]
        g = None if ref is None else ref[i]
        if (q > 0).any():
            x, sim, steady = _radial(sc, last.get("track", _cell_layout(sc)[0]), q > 0, f, g)
            ax.set_xlabel(f"distance to the nearest cell secreting {nm} (µm)")
            ax.set_title(f"{nm} around the {int((q > 0).sum())} cells secreting it")
        else:
            x = sc.grid.centers(0)
            sim = f.reshape(sc.grid.shape[0], -1).mean(axis=1)
            steady = None if g is None else g.reshape(sc.grid.shape[0], -1).mean(axis=1)
            ax.set_xlabel("x (µm)")
            ax.set_title(f"{nm} along x (mean over the other axes)")
        ax.plot(x, sim, "ko", ms=3, label=f"simulated, t = {t:g} s")
        if steady is not None:
            ax.plot(x, steady, "-", color="C1",
                    label=f"steady state of this model\n(cells' rates at t = {t:g} s)")
        both = sim if steady is None else np.concatenate([sim, steady])
        if np.all(both > 0) and both.max() > 10 * both.min():  # log only when it spans a decade
            ax.set_yscale("log")
        ax.set_ylabel(f"{nm} ({sc.units(i)})")
        # a fixed place: "best" searches every data point at draw time (0.3 s of a 0.4 s figure here);
        # the curves fall with distance, so the upper right is clear
        ax.legend(fontsize=7, loc="upper right")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _radial(sc: Scenario, pos: np.ndarray, src: np.ndarray, f: np.ndarray,
            g: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``f`` (and ``g``) binned by voxel distance to the nearest cell in ``src`` (positions ``pos`` ``(N, ndim)``
    µm; one voxel wide bins, up to half the longest side); voxels are subsampled when there are more than 2e7
    voxel-cell pairs."""
    grid = sc.grid
    idx = np.arange(grid.size)
    if grid.size * src.sum() > 2e7:
        idx = np.sort(np.random.default_rng(0).choice(grid.size, int(2e7 // src.sum()), replace=False))
    sub = np.unravel_index(idx, grid.shape)
    pts = np.stack([grid.centers(a)[sub[a]] for a in range(grid.ndim)], axis=1)
    rmin = np.full(len(idx), np.inf)
    for p in pos[src]:
        rmin = np.minimum(rmin, np.linalg.norm(pts - p, axis=1))
    edges = np.arange(0.0, 0.5 * max(grid.extent) + min(grid.spacing), min(grid.spacing))
    x, sim = _binned(rmin, f.reshape(-1)[idx], edges)
    steady = None if g is None else _binned(rmin, g.reshape(-1)[idx], edges)[1]
    return x, sim, steady


def _without(sc: Scenario, what: str, last: dict) -> np.ndarray | None:
    """Steady state of the scenario's model with its matrix (``what = "matrix"``) or its flow removed."""
    from jaxcell._node import replace

    m = sc.model
    subs = [replace(s, **{what: None}) for s in m.substrates]
    ref = dataclasses.replace(sc, model=replace(m, substrates=tuple(subs)))
    return _steady_reference(ref, last)


def _figure_tissue(sc: Scenario, frames: list[dict], path: Path, plt: ModuleType) -> None:
    """``tissue.png``: what the medium does to each substrate with a matrix or flow.

    Matrix: the free ligand along x (mean over the other axes) at every saved time,
    with the steady state the model has without its matrix, and the ligand on the
    matrix at the last frame: the gradient forms more slowly, while (when nothing
    is degraded on the matrix) its steady shape is the matrix-free one. Flow: the
    last frame's field with the flow's direction, and the profile along x through
    the field's peak against the same model without flow (upstream/downstream asymmetry).
    """
    grid = sc.grid
    rows = [(i, s) for i, s in enumerate(sc.model.substrates) if s.matrix is not None or s.velocity is not None]
    fig, axs = plt.subplots(len(rows), 2, figsize=(11, 4.0 * len(rows)), squeeze=False, layout="constrained")
    x = grid.centers(0)
    last = frames[-1]
    for r, (i, s) in enumerate(rows):
        nm, unit = s.name, sc.units(i)
        if s.matrix is not None:
            ax = axs[r, 0]
            cmap = plt.get_cmap("viridis")
            for j, f in enumerate(frames[1:], 1):
                prof = f["fields"][i].reshape(grid.shape[0], -1).mean(axis=1)
                ax.plot(x, prof, color=cmap(j / max(len(frames) - 1, 1)), lw=1.2,
                        label=f"t = {float(f['t']) / 3600:.3g} h" if j in (1, len(frames) - 1) else None)
            ref = _without(sc, "matrix", last)
            if ref is not None:
                ax.plot(x, ref[i].reshape(grid.shape[0], -1).mean(axis=1), "k--", lw=1.5,
                        label="steady state without the matrix")
            ax.set_xlabel("x (µm)")
            ax.set_ylabel(f"free {nm} ({unit})")
            ax.set_title(f"free {nm} forming over time (light: later)")
            ax.legend(fontsize=7)
            ax = axs[r, 1]
            for key, label, style in (("fields", f"free {nm}", "-"), ("matrix", f"{nm} on the matrix", "--")):
                ax.plot(x, last[key][i].reshape(grid.shape[0], -1).mean(axis=1), style, label=label)
            ax.set_xlabel("x (µm)")
            ax.set_ylabel(f"{nm} ({unit})")
            ax.set_title(f"where the {nm} is at t = {float(last['t']) / 3600:.3g} h")
            ax.legend(fontsize=7)
        else:
            f = last["fields"][i]
            ax = axs[r, 0]
            img = f if grid.ndim == 2 else (f[None] if grid.ndim == 1 else f[:, :, grid.shape[2] // 2])
            if img.ndim == 1:
                img = img[:, None]
            ext = [grid.origin[0], grid.origin[0] + grid.extent[0], 0, 1] if grid.ndim == 1 else \
                [grid.origin[0], grid.origin[0] + grid.extent[0], grid.origin[1], grid.origin[1] + grid.extent[1]]
            im = ax.imshow(np.asarray(img).T, origin="lower", extent=ext, aspect="auto", cmap="magma")
            fig.colorbar(im, ax=ax, label=f"{nm} ({unit})")
            v = np.asarray(s.velocity)
            vmean = v if v.ndim == 1 else v.reshape(v.shape[0], -1).mean(axis=1)
            cx, cy = ext[0] + 0.08 * (ext[1] - ext[0]), ext[2] + 0.9 * (ext[3] - ext[2])
            ax.annotate("", xy=(cx + 0.15 * (ext[1] - ext[0]), cy), xytext=(cx, cy),
                        arrowprops={"arrowstyle": "->", "color": "cyan", "lw": 2})
            ax.text(cx, cy - 0.06 * (ext[3] - ext[2]), f"flow {float(np.linalg.norm(vmean)):.3g} µm/s",
                    color="cyan", fontsize=8)
            ax.set_xlabel("x (µm)")
            ax.set_ylabel("y (µm)" if grid.ndim > 1 else "")
            ax.set_title(f"{nm} at t = {float(last['t']) / 3600:.3g} h")
            ax = axs[r, 1]
            peak = np.unravel_index(int(np.argmax(f)), f.shape)
            line = f[(slice(None),) + tuple(peak[1:])]
            ax.plot(x, line, "k-", label="with flow (simulated)")
            ref = _without(sc, "velocity", last)
            if ref is not None:
                ax.plot(x, ref[i][(slice(None),) + tuple(peak[1:])], "--", color="C0",
                        label="same source without flow (steady state)")
            ax.set_xlabel("x (µm): upstream ← → downstream")
            ax.set_ylabel(f"{nm} ({unit})")
            ax.set_yscale("log")
            ax.set_title(f"{nm} along the flow through its peak")
            ax.legend(fontsize=7)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _figure_body(sc: Scenario, frames: list[dict], path: Path, plt: ModuleType) -> None:
    """``body.png``: each compartment's concentration over time (h), and the share of what the cells secreted
    and the tissue produced that has left the tissue for the compartments (in them now or cleared from them)."""
    t = np.asarray([float(f["t"]) for f in frames]) / 3600
    leaking = [(i, s) for i, s in enumerate(sc.model.substrates) if s.leak is not None]
    fig, axs = plt.subplots(1, 2, figsize=(11, 4.0), layout="constrained")
    for i, s in leaking:
        name = s.leak.compartment
        axs[0].plot(t, [f[f"compartment_{name}"][i] for f in frames], "o-", ms=3, label=f"{s.name} in the {name}")
        made = np.asarray([f["made"][i] for f in frames])
        share = np.where(made > 0, np.asarray([f["reached"][i] for f in frames]) / np.where(made > 0, made, 1), 0)
        axs[1].plot(t, 100 * share, "o-", ms=3, label=f"{s.name} → {name}")
    axs[0].set(xlabel="time (h)", ylabel=f"concentration ({sc.units(leaking[0][0]) if leaking else ''})",
               title=f"{', '.join(sorted({s.leak.compartment for _, s in leaking}))} (well mixed)")
    axs[1].set(xlabel="time (h)", ylabel="% of what was secreted or produced",
               title="what has left the tissue for the body")
    for ax in axs:
        if leaking:
            ax.legend(fontsize=8)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _figure_activation(sc: Scenario, frames: list[dict], path: Path, plt: ModuleType) -> None:
    """``activation.png``: fraction of each type's responders activated over time (s)."""
    _, tid = _cell_layout(sc)
    colors = _colors(plt)
    fig, ax = plt.subplots(figsize=(5.5, 3.8), layout="constrained")
    t = np.asarray([float(fr["t"]) for fr in frames])
    # responders per frame: fixed, or (cells that live) the live cells of a type with a rule
    resp = np.stack([fr.get("responder", sc.has_activation()) for fr in frames])
    tids = np.stack([fr.get("type", tid) for fr in frames])
    if sc.n_cells and resp.any():
        acts = np.stack([fr["activated"] for fr in frames])
        for j, tname in enumerate(sc.types):
            sel = resp & (tids == j)
            if sel.any():
                frac = (acts & sel).sum(axis=1) / np.maximum(sel.sum(axis=1), 1)
                ax.plot(t, frac, "o-", ms=3, color=colors[j % len(colors)], label=f"{tname}: {sc.state_name(j)}")
        ax.legend(fontsize=8, loc="best")
    else:
        ax.text(0.5, 0.5, "no cells with an activation rule", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("time (s)")
    states = {sc.state_name(j) for j in range(len(sc.types))}
    ax.set_ylabel(f"fraction of cells {states.pop()}" if len(states) == 1 else "fraction of cells in the state")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{sc.name}: cells with a threshold rule, over time")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _figure_cells(sc: Scenario, frames: list[dict], path: Path, plt: ModuleType) -> None:
    """``cells.png`` (scenarios with ``[[rules]]``): live cells per type over time (h), and tracks.

    A track is a slot's positions (x, y; µm) while it holds a live cell; it
    ends at the first frame where the slot is empty or where the cell jumped
    farther than its rules let it move in one frame interval (a daughter
    filled a slot freed by a death between two frames).
    """
    colors = _colors(plt)
    t_h = np.asarray([float(fr["t"]) for fr in frames]) / 3600.0
    alive = np.stack([fr["alive"] for fr in frames])
    types = np.stack([fr["type"] for fr in frames])
    tid = types[0]
    track = np.stack([fr["track"] for fr in frames])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    for j, tname in enumerate(sc.types):
        ax1.plot(t_h, (alive & (types == j)).sum(axis=1), "o-", ms=3, color=colors[j % len(colors)], label=tname)
    ax1.set(xlabel="time (h)", ylabel="live cells", title="cells per type")
    ax1.legend(fontsize=8, loc="best")
    # the farthest a cell can go in one frame: every speed the rules and base values allow
    vmax = sum(float(np.max(np.asarray(r.max))) for r in sc.behaviour.rules
               if r.behaviour == "speed" or r.behaviour.startswith("chemotaxis"))
    vmax += sum(float(np.max(np.asarray(v))) for k, v in sc.cells.base.items()
                if k == "speed" or k.startswith("chemotaxis"))
    radius = float(np.max((3 * np.asarray(sc.cells.volume) / (4 * np.pi)) ** (1 / 3)))
    reach = vmax * sc.run.save_every * 1.5 + 2 * radius
    step = np.r_[np.zeros((1, alive.shape[1])), np.linalg.norm(np.diff(track, axis=0), axis=-1)]
    same = np.cumprod(alive & (step <= reach) & (types == tid), axis=0).astype(bool)
    shown = np.flatnonzero(alive[0])[:: max(1, int(alive[0].sum()) // 60)]  # about 60 of the cells at t = 0
    for i in shown:
        col = colors[int(tid[i]) % len(colors)]
        keep = same[:, i]
        ax2.plot(track[keep, i, 0], track[keep, i, 1] if sc.grid.ndim > 1 else t_h[keep], "-", lw=0.8, color=col)
        ax2.plot(track[0, i, 0], track[0, i, 1] if sc.grid.ndim > 1 else 0.0, ".", ms=3, color="k")
    lo, ext = np.asarray(sc.grid.origin), np.asarray(sc.grid.extent)
    ax2.set_xlim(lo[0], lo[0] + ext[0])
    if sc.grid.ndim > 1:
        ax2.set_ylim(lo[1], lo[1] + ext[1])
        ax2.set_aspect("equal")
    ax2.set(xlabel="x (µm)", ylabel="y (µm)" if sc.grid.ndim > 1 else "time (h)",
            title=f"tracks of {len(shown)} cells present at the start (dot: start)")
    fig.suptitle(sc.config.get("title", sc.name), fontsize=9)
    fig.savefig(path, dpi=100)
    plt.close(fig)

"""TOML scenarios: a simulation described in a file that mirrors the Python names.

A scenario is read with the standard library's :mod:`tomllib`, checked in full
before anything runs, and turned into a :class:`jaxcell.Model`, the initial
:class:`jaxcell.Cells` and the run settings. Every problem raises
:class:`ScenarioError` whose message is one line naming the file, the key and
the fix; unknown keys are errors, so typos are caught. Units: lengths µm, times
s, concentrations amount/µm^ndim, secretion amount/s, uptake µm^ndim/s.

Each table has its own reader (``_read_grid``, ``_read_substrates``, ...). The
library's constructors (:class:`jaxcell.Grid`, :class:`jaxcell.Substrate`, the
face conditions, :class:`jaxcell.Model` and its solver) own the domain rules;
their refusals are reported at the key the value came from (:meth:`Checker.at`).

Schema (every table optional unless marked)::

    title = "..."                     # free text
    description = "..."
    [grid]                            # required
    shape = [32, 32, 16]              # voxels per axis (1 to 3 axes)
    spacing = 10.0                    # µm, scalar or one per axis
    origin = 0.0                      # µm, scalar or one per axis
    [[substrates]]                    # required, one or more
    name = "IL-2"
    diffusion = 10.0                  # µm²/s
    decay = 2.8e-5                    # 1/s
    initial = 0.0                     # amount/µm^ndim, uniform start
    boundary = { "x-" = { flux = 1.0 }, "y" = "periodic", "x+" = { dirichlet = 0.0 } }
                                      # per face ("x-", "x+", ...; an axis "y" for both):
                                      # "noflux", "periodic" (whole axes only), { flux = amount/(µm^(ndim-1)·s) },
                                      # { dirichlet = amount/µm^ndim }, { dirichlet = v, at = "voxel" }
                                      # (PhysiCell: the outermost voxel layer held, the face no-flux),
                                      # { robin = { permeability = 0.5, outside = 0.0 } }  (µm/s, amount/µm^ndim)
    production = 0.0                  # by the tissue itself, amount/(µm^ndim·s)
    velocity = [0.5, 0.0]             # uniform interstitial flow, µm/s (faces it crosses: dirichlet or robin)
    matrix = { sites = 1.0, kon = 10.0, koff = 1.0, degradation = 0.0 }  # sites/µm^ndim, µm^ndim/s, 1/s, 1/s
    leak = { compartment = "blood", rate = 1e-4 }   # exchange with a [[compartments]] pool, 1/s
    [[substrates.regions]]            # tissue that differs: the values inside a region (later regions win)
    shape = "box"; lo = [0, 0]; hi = [100, 320]   # shapes as for [vessel]
    diffusion = 2.0; decay = 1e-3; production = 0.0; sites = 5.0; leak = 1e-3
    [[compartments]]                  # well-mixed pools outside the grid
    name = "blood"; volume = 1.6e9; clearance = 1.2e-3   # µm^ndim, 1/s
    [vessel]                          # voxels held at fixed concentrations
    shape = "cylinder"                # "box" (lo, hi), "sphere" (center, radius),
    axis = "z"                        # "cylinder" (3D: axis, center in the other two axes, radius)
    center = [160.0, 160.0]
    radius = 20.0
    value = { "O2" = 1.0 }            # held amount/µm^ndim; substrates not named are held at 0
    [[cells]]                         # populations
    type = "responder"                # label (responses, reports); several populations may share one
    placement = "random"              # "random" (count, lo, hi), "sphere" (count, center, radius),
    count = 1000                      # "lattice" (spacing, lo, hi), "csv" (file with x,y,z columns),
                                      # "positions" (positions = [[x, y, z], ...] µm)
    secretion = { "IL-2" = 0.0 }      # amount/s per cell
    uptake = { "IL-2" = 0.0 }         # µm^ndim/s per cell
    saturation = { "IL-2" = 1.0 }     # BioFVM's secretion toward a target density, amount/µm^ndim,
    saturation_rate = { "IL-2" = 10.0 }  # at this rate, µm^ndim/s per cell: rate·(target − c)
    volume = 2494.0                   # µm³ (informational)
    receptors = { "IL-2" = { total = 1000.0, kon = 0.0515, koff = 2.3e-4, kint = 1.1e-3,
                             synthesis = 0.0, turnover = 0.0 } }
    activation = { signal = "IL-2", bound = 200.0 }   # or concentration = ..., below = true
    base = { speed = 0.003, death = 1e-6 }  # behaviours at rest for [[rules]] (µm/s, 1/s; see jaxcell.rules)
    [[responses]]                     # jc.Response rules
    target = "B"; signal = "A"; max = 10.0; K = 100.0; n = 1.0; basal = 0.0
    cell_type = "responder"; parameter = "secretion"; kind = "bound"
    [[rules]]                         # jc.Rule: signal -> behaviour, run inside the loop (cells that live)
    signal = "PDGF"; kind = "concentration"; behaviour = "chemotaxis:PDGF"; direction = "up"
    max = 0.004; K = 0.05; n = 1.0; cell_type = "fibroblast"
    [run]
    solver = "implicit"; dt = 5.0; t_end = 3600.0; save_every = 300.0; seed = 0; coupling = "nearest"
    capacity = 5000                   # cell slots (>= the cells placed): room for daughters
    held_at_start = true              # false: held voxels start at `initial`, set in the first step (PhysiCell)

A PhysiCell ``PhysiCell_settings.xml`` is read by :mod:`jaxcell.physicell` into
this same schema (:func:`load` takes either; ``--set`` keys are this schema's).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import difflib
import hashlib
import json
import re
import tomllib
import warnings
from collections.abc import Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from jaxcell import solvers
from jaxcell._node import float_dtype
from jaxcell._version import __version__
from jaxcell.behaviour import BEHAVIOURS, UNITS, Rule, Rules, parse_behaviour, rules
from jaxcell.binding import Response
from jaxcell.body import Compartment, Leak
from jaxcell.boundary import DIRICHLET_AT, FACES, Boundary, Dirichlet, Flux, Periodic, Robin, normalise
from jaxcell.cells import Cells, Receptors
from jaxcell.grid import AXES, Grid
from jaxcell.medium import Matrix
from jaxcell.model import Model, State, check_memory
from jaxcell.substrate import Substrate

__all__ = ["DEFAULT", "Checker", "RunConfig", "Scenario", "ScenarioError", "builtin_scenarios", "load",
           "load_scenario", "to_toml"]

DEFAULT = "paracrine_niche"
"""Name of the built-in scenario ``jaxcell run`` uses when given none."""

PLACEMENTS = ("random", "lattice", "sphere", "csv", "positions")


class ScenarioError(ValueError):
    """A scenario or data file is wrong; the message is one line: file, key, problem and fix."""

    def __init__(self, file: str, key: str, problem: str, fix: str = "") -> None:
        msg = f"{file}: {key}: {problem}" if key else f"{file}: {problem}"
        if fix:
            msg += f"; {fix}"
        msg = " ".join(msg.split())  # one line, always
        super().__init__(msg)
        self.file, self.key, self.problem, self.fix = file, key, problem, fix


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """The ``[run]`` table: solver, step ``dt`` (s), end time ``t_end`` (s), frame
    interval ``save_every`` (s), random ``seed`` and cell-grid ``coupling``."""

    solver: str = "implicit"
    dt: float = 1.0
    t_end: float = 3600.0
    save_every: float = 60.0
    seed: int = 0
    coupling: str = "nearest"
    capacity: int = 0  # cell slots; 0: as many as cells placed
    held_at_start: bool = True  # held voxels start at their value (False: at `initial`, as PhysiCell)

    def save_times(self) -> np.ndarray:
        """Frame times (s): 0, save_every, 2·save_every, ... and t_end, ``(T,)``."""
        n = int(np.floor(self.t_end / self.save_every * (1 + 1e-12)))
        times = [i * self.save_every for i in range(n + 1)]
        if self.t_end - times[-1] > 1e-9 * self.save_every:
            times.append(self.t_end)
        return np.asarray(times, np.float64)


@dataclasses.dataclass(frozen=True, eq=False)
class Scenario:
    """A checked scenario, ready to run.

    Attributes:
        name: short name (file stem or built-in name).
        source: where it came from (a path, or ``builtin:<name>``).
        config: the scenario as a plain dict with every default filled in.
        text: the TOML text it was read from.
        model: the :class:`jaxcell.Model`.
        cells: the initial :class:`jaxcell.Cells` (None when there are none).
        run: the :class:`RunConfig`.
        types: cell-type labels; ``cells.type`` indexes into it.
        initial: ``(S,)`` uniform initial concentrations (amount/µm^ndim).
        activation: per-cell reporting rule, arrays ``(N,)``: ``signal`` (substrate
            index, -1: no rule), ``bound`` (1: bound receptors, 0: local
            concentration), ``threshold`` and ``below`` (1: active below it).
        behaviour: the ``[[rules]]`` as a :class:`jaxcell.Rules` (None without rules).
        physicell_thickness: for a PhysiCell settings file, the thickness (µm) of its
            one-voxel 2D slab (1 in 3D): ``jaxcell run`` then also writes PhysiCell's
            microenvironment .mat files; None for TOML scenarios.
    """

    name: str
    source: str
    config: dict
    text: str
    model: Model
    cells: Cells | None
    run: RunConfig
    types: tuple[str, ...]
    initial: np.ndarray
    activation: dict[str, np.ndarray]
    behaviour: Rules | None = None
    activation_by_type: dict[str, np.ndarray] | None = None  # (T,) arrays: the first population's rule per type
    physicell_thickness: float | None = None  # read from PhysiCell XML: its 2D slab thickness (1 in 3D), µm

    @property
    def grid(self) -> Grid:
        return self.model.grid

    @property
    def state(self) -> State:
        """The state at t = 0 (:meth:`init_state`; built anew at each access)."""
        return self.init_state()

    @property
    def dt(self) -> float:
        """Step, s (``run.dt``)."""
        return self.run.dt

    @property
    def t_end(self) -> float:
        """End time, s (``run.t_end``)."""
        return self.run.t_end

    @property
    def save_every(self) -> float:
        """Frame interval, s (``run.save_every``)."""
        return self.run.save_every

    @property
    def n_cells(self) -> int:
        return 0 if self.cells is None else self.cells.n

    def fingerprint(self) -> str:
        """SHA-256 of the checked configuration (identifies a run for ``--resume``)."""
        blob = json.dumps(self.config, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()

    def init_state(self) -> State:
        """The state at t = 0 (uniform initial fields; held vessel voxels at their value)."""
        dtype = float_dtype()
        check_memory(self.model, dtype, self.n_cells)  # before the fields below are allocated
        if not np.any(self.initial):
            state = self.model.init(self.cells, held_at_start=self.run.held_at_start)
        else:
            # the run's dtype (float32 unless x64): no double-size float64 copy of a big grid
            shape = (self.model.n_substrates,) + self.grid.shape
            fields = np.empty(shape, dtype)
            fields[...] = self.initial.astype(dtype).reshape((-1,) + (1,) * self.grid.ndim)
            state = self.model.init(self.cells, fields=fields, held_at_start=self.run.held_at_start)
        if self.behaviour is not None:  # base values recorded now, so snapshots have their final layout
            state = dataclasses.replace(state, cells=self.behaviour.prepare(state.cells, self.model))
        return state

    def activated(self, cells: Cells | None, local: np.ndarray | None) -> np.ndarray:
        """Which cells count as activated, ``(N,)`` bool.

        Args:
            cells: current cells (bound receptors are read from them).
            local: ``(N, S)`` concentration at each cell (amount/µm^ndim).
        """
        act = self._activation_of(cells)
        n = self.n_cells
        if n == 0 or cells is None:
            return np.zeros((n,), bool)
        sig = act["signal"]
        has = sig >= 0
        s = np.where(has, sig, 0)
        rows = np.arange(n)
        if cells.receptors is not None:
            bound = np.asarray(cells.receptors.bound)[rows, s]
        else:
            bound = np.zeros((n,))
        conc = np.zeros((n,)) if local is None else np.asarray(local)[rows, s]
        x = np.where(act["bound"] == 1, bound, conc)
        above = x >= act["threshold"]
        return has & np.where(act["below"] == 1, ~above, above)

    def units(self, i: int) -> str:
        """Units of substrate ``i`` for labels: its ``units`` key, else ``amount/µm^ndim``."""
        return str(self.config["substrates"][i].get("units") or f"amount/µm^{self.grid.ndim}")

    def state_name(self, type_index: int) -> str:
        """What cells of type ``type_index`` are called when their activation rule holds (``state`` key of
        the rule; default "activated")."""
        names = {p["activation"].get("state", "activated") for p in self.config.get("cells", [])
                 if p.get("type") == self.types[type_index] and p.get("activation")}
        return " / ".join(sorted(names)) or "activated"

    def has_activation(self, cells: Cells | None = None) -> np.ndarray:
        """``(N,)`` bool: cells with an activation rule (the responders).

        When cells live (``[[rules]]``), pass the current ``cells``: a slot is a
        responder while it holds a live cell of a type with a rule (a daughter
        takes its mother's type, and so its rule, into a free slot).
        """
        return self._activation_of(cells)["signal"] >= 0

    def _activation_of(self, cells: Cells | None) -> dict[str, np.ndarray]:
        """The per-slot activation arrays for ``cells``: by the slot's current type when cells live."""
        if self.behaviour is None or cells is None or self.activation_by_type is None:
            return self.activation
        tid = np.asarray(cells.type)
        out = {k: v[tid] for k, v in self.activation_by_type.items()}
        out["signal"] = np.where(np.asarray(cells.alive), out["signal"], -1)
        return out


# ---------------------------------------------------------------------------------------------
# Finding and reading scenario files


def builtin_scenarios() -> dict[str, str]:
    """Built-in scenarios: ``{name: title}``."""
    out = {}
    for entry in sorted(resources.files("jaxcell").joinpath("scenarios").iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".toml"):
            try:
                title = str(tomllib.loads(entry.read_text("utf-8")).get("title", ""))
            except tomllib.TOMLDecodeError:
                title = "(unreadable)"
            out[entry.name[: -len(".toml")]] = title
    return out


def _is_file(src: str) -> bool:
    """Whether a scenario argument names a file (else a built-in name)."""
    path = Path(src)
    return path.suffix in (".toml", ".xml") or path.exists() or "/" in src or "\\" in src


def source_label(source: str | Path | None) -> str:
    """The label :func:`load` gives ``source``: the path as given, or ``builtin:<name>``."""
    src = str(DEFAULT if source is None else source)
    return src if _is_file(src) else f"builtin:{src}"


def _read_source(source: str | Path | None) -> tuple[str, str, str, Path]:
    """(name, label for messages, text, base directory for relative data files)."""
    if source is None:
        source = DEFAULT
    src = str(source)
    path = Path(src)
    if _is_file(src):
        if not path.is_file():
            raise ScenarioError(src, "", "no such scenario file",
                                f"check the path, or use a built-in one ({', '.join(builtin_scenarios())})")
        try:
            text = path.read_text("utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ScenarioError(src, "", f"cannot read the file ({e.__class__.__name__})",
                                "check it is a UTF-8 text file you can read") from None
        return path.stem, src, text, path.resolve().parent
    names = builtin_scenarios()
    if src not in names:
        close = difflib.get_close_matches(src, list(names), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ScenarioError(src, "", "neither a scenario file nor a built-in scenario",
                            f"{hint}built-in ones: {', '.join(names)} (jaxcell run --list)")
    entry = resources.files("jaxcell").joinpath("scenarios", f"{src}.toml")
    return src, f"builtin:{src}", entry.read_text("utf-8"), Path(str(entry)).parent


_PATH_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _apply_override(raw: dict, item: str) -> None:
    """Apply one ``KEY=VALUE`` override (``run.t_end=60``, ``cells[1].count=10``); VALUE is TOML."""
    if "=" not in item:
        raise ScenarioError("--set", item, "expected KEY=VALUE", "write e.g. --set run.t_end=60")
    key, value = item.split("=", 1)
    key = key.strip()
    try:
        val = tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        val = value.strip()  # a bare word: a string
    parts: list[str | int] = []
    pos = 0
    for m in _PATH_TOKEN.finditer(key):
        if m.start() != pos and key[pos:m.start()] != ".":
            raise ScenarioError("--set", key, "cannot parse the key", "write table.key or cells[1].key")
        parts.append(m.group(1) if m.group(1) is not None else int(m.group(2)))
        pos = m.end()
    if not parts or pos != len(key):
        raise ScenarioError("--set", key, "cannot parse the key", "write table.key or cells[1].key")
    node: Any = raw
    for i, p in enumerate(parts[:-1]):
        nxt = parts[i + 1]
        if isinstance(p, int):
            if not isinstance(node, list) or not 0 <= p < len(node):
                raise ScenarioError("--set", key, f"index [{p}] is out of range", "count from 0")
            node = node[p]
        else:
            if not isinstance(node, dict):
                raise ScenarioError("--set", key, f"{p!r} is not inside a table", "check the key")
            node = node.setdefault(p, [] if isinstance(nxt, int) else {})
    last = parts[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or not 0 <= last < len(node):
            raise ScenarioError("--set", key, f"index [{last}] is out of range", "count from 0")
        node[last] = val
    elif isinstance(node, dict):
        node[last] = val
    else:
        raise ScenarioError("--set", key, "the key's parent is not a table", "check the key")


# ---------------------------------------------------------------------------------------------
# Checking values


class Checker:
    """Typed getters over a parsed TOML file that raise :class:`ScenarioError` naming the file and key.

    The getters check what TOML cannot (types, units, choices, finite numbers);
    the library's constructors own the domain rules, and :meth:`at` reports
    their refusals at the key the value came from. The fit specification
    reader (:mod:`jaxcell.inference`) uses it too.

    Args:
        file: how messages name the file (a path, or ``builtin:<name>``).
    """

    def __init__(self, file: str) -> None:
        self.file = file

    def err(self, key: str, problem: str, fix: str = "") -> ScenarioError:
        """The :class:`ScenarioError` for ``key`` (dotted, e.g. ``cells[1].count``; "" for the file)."""
        return ScenarioError(self.file, key, problem, fix)

    @contextlib.contextmanager
    def at(self, key: str, fix: str = "") -> Iterator[None]:
        """Report a ValueError raised inside the block as a :class:`ScenarioError` at ``key``.

        The constructor's message (first line) becomes the problem, ``fix`` says
        what to write in the file instead. A :class:`ScenarioError` passes
        unchanged. Example::

            with c.at("grid", "write shape = [32, 32, 16]"):
                grid = Grid(shape, spacing, origin)
        """
        try:
            yield
        except ScenarioError:
            raise
        except ValueError as e:
            raise self.err(key, str(e).split("\n")[0], fix) from None

    def table(self, value: Any, key: str) -> dict:
        if not isinstance(value, dict):
            raise self.err(key, f"must be a table, got {_kind(value)}", f"write [{key}] or {key} = {{ ... }}")
        return value

    def keys(self, table: dict, key: str, allowed: Sequence[str], required: Sequence[str] = ()) -> None:
        for k in table:
            if k not in allowed:
                close = difflib.get_close_matches(k, list(allowed), n=1)
                fix = f"did you mean {close[0]!r}?" if close else f"allowed keys: {', '.join(allowed)}"
                raise self.err(_join(key, k), "unknown key", fix)
        for k in required:
            if k not in table:
                raise self.err(_join(key, k), "missing", f"add {k} = ... to {key or 'the file'}")

    def number(self, value: Any, key: str, unit: str, *, positive: bool = False, nonneg: bool = True) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.err(key, f"must be a number ({unit}), got {_kind(value)}",
                           f"write e.g. {key.split('.')[-1]} = 1.0")
        v = float(value)
        if not np.isfinite(v):
            raise self.err(key, f"must be finite ({unit}), got {value}", "give an ordinary number")
        if positive and v <= 0:
            raise self.err(key, f"must be > 0 ({unit}), got {value}", "give a positive value")
        if nonneg and v < 0:
            raise self.err(key, f"must be >= 0 ({unit}), got {value}", "rates and amounts are non-negative")
        return v

    def integer(self, value: Any, key: str, *, minimum: int = 0, maximum: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.err(key, f"must be an integer, got {_kind(value)}", f"write e.g. {key.split('.')[-1]} = 10")
        if value < minimum:
            raise self.err(key, f"must be >= {minimum}, got {value}", f"give an integer >= {minimum}")
        if maximum is not None and value > maximum:
            raise self.err(key, f"must be <= {maximum:,}, got {value:,}", f"give an integer <= {maximum:,}")
        return int(value)

    def boolean(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.err(key, f"must be true or false, got {_kind(value)} {value!r}", f"write {key} = true")
        return value

    def string(self, value: Any, key: str, choices: Sequence[str] | None = None) -> str:
        if not isinstance(value, str):
            raise self.err(key, f"must be a string, got {_kind(value)}", f'write {key.split(".")[-1]} = "..."')
        if choices is not None and value not in choices:
            close = difflib.get_close_matches(value, list(choices), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise self.err(key, f"unknown value {value!r}", f"{hint}use one of {', '.join(map(repr, choices))}")
        return value

    def vector(self, value: Any, key: str, ndim: int, unit: str, *, positive: bool = False,
               nonneg: bool = False) -> tuple[float, ...]:
        """A number (broadcast to every axis) or a list of ``ndim`` numbers."""
        if isinstance(value, list):
            if len(value) != ndim:
                raise self.err(key, f"has {len(value)} entries but the grid has {ndim} axes",
                               f"give {ndim} numbers ({unit})")
            return tuple(self.number(v, f"{key}[{i}]", unit, positive=positive, nonneg=nonneg)
                         for i, v in enumerate(value))
        return (self.number(value, key, unit, positive=positive, nonneg=nonneg),) * ndim

    def per_substrate(self, value: Any, key: str, names: Sequence[str], unit: str) -> dict[str, float]:
        tab = self.table(value, key)
        out = {}
        for nm, v in tab.items():
            self.substrate_name(nm, _join(key, nm), names)
            out[nm] = self.number(v, _join(key, nm), unit)
        return out

    def substrate_name(self, name: Any, key: str, names: Sequence[str]) -> str:
        name = self.string(name, key)
        if name not in names:
            close = difflib.get_close_matches(name, list(names), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise self.err(key, f"unknown substrate {name!r}",
                           f"{hint}the [[substrates]] are {', '.join(map(repr, names))}")
        return name




def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a table"}.get(type(value), type(value).__name__)


def _join(key: str, sub: str) -> str:
    if not key:
        return sub
    return f"{key}.{sub}" if re.fullmatch(r"[A-Za-z0-9_]+", sub) else f'{key}."{sub}"'


# ---------------------------------------------------------------------------------------------
# The schema


_TOP = ("title", "description", "grid", "compartments", "substrates", "vessel", "cells", "responses", "rules", "run")
_COMPARTMENT = ("name", "volume", "clearance")
_LEAK = ("compartment", "rate")
_GRID = ("shape", "spacing", "origin")
_SUBSTRATE = ("name", "diffusion", "decay", "initial", "boundary", "units", "production", "velocity", "matrix",
              "regions", "leak")
_MATRIX = ("sites", "kon", "koff", "degradation")
_REGION = ("shape", "lo", "hi", "center", "radius", "axis", "diffusion", "decay", "production", "sites", "leak")
_VESSEL = ("shape", "lo", "hi", "center", "radius", "axis", "value")
_CELLS = ("type", "placement", "count", "lo", "hi", "center", "radius", "spacing", "file", "positions",
          "secretion", "uptake", "saturation", "saturation_rate", "receptors", "activation", "volume", "base")
_RECEPTOR = ("total", "kon", "koff", "kint", "synthesis", "turnover")
_RESPONSE = ("target", "signal", "max", "K", "n", "basal", "cell_type", "parameter", "kind")
_ACTIVATION = ("signal", "bound", "concentration", "below", "state")
_FACE_KINDS = ("flux", "dirichlet", "robin")
_RUN = ("solver", "dt", "t_end", "save_every", "seed", "coupling", "capacity", "held_at_start")
_RULE = ("signal", "kind", "behaviour", "direction", "max", "K", "n", "cell_type")
MAX_CAPACITY = 100_000_000  # cell slots a scenario may ask for
_PLACEMENT_KEYS = {
    "random": ("count", "lo", "hi"),
    "sphere": ("count", "center", "radius"),
    "lattice": ("spacing", "lo", "hi"),
    "csv": ("file",),
    "positions": ("positions",),
}


def load(source: str | Path | None = None, overrides: Sequence[str] = ()) -> Scenario:
    """Read, check and build a scenario.

    Args:
        source: a ``.toml`` path, a built-in name (see :func:`builtin_scenarios`)
            or None for the default (:data:`DEFAULT`).
        overrides: ``"KEY=VALUE"`` strings applied before checking, with TOML
            values, e.g. ``"run.t_end=60"``, ``"cells[1].count=100"``, ``"grid.shape=[16,16,8]"``.

    Raises:
        ScenarioError: anything wrong, as one line naming the file, the key and the fix.
    """
    from jaxcell import physicell  # it builds on this module's errors

    name, label, text, base = _read_source(source)
    notes: list[str] = []
    thickness = None
    is_xml = physicell.is_physicell(Path(label), text)
    if is_xml:
        raw, notes, thickness = physicell.translate(text, label, base)
    else:
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ScenarioError(label, "", f"not valid TOML ({e})", "fix the syntax at that line") from None
    for item in overrides:
        _apply_override(raw, item)
    if is_xml:  # the translation is what runs, and what outputs keep
        text = to_toml(raw, header=f"# {label} as read by jaxcell {__version__} (PhysiCell settings, min -> s)\n")
    sc = _build(raw, name, label, text, base)
    if thickness is not None:
        sc = dataclasses.replace(sc, physicell_thickness=thickness)
    if notes:
        still = "; cells hold still, with their secretion and uptake" if sc.n_cells and sc.behaviour is None else ""
        warnings.warn(f"{label}: PhysiCell features left out or changed: {'; '.join(notes)}{still}", UserWarning,
                      stacklevel=2)
    return sc


load_scenario = load  # the public name (jc.load_scenario)


def _toml_key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) and not k.startswith("-") and "-" not in k[-1:] else json.dumps(k)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v), ensure_ascii=False)  # a date or time from --set: a string, which the checks refuse


def to_toml(raw: dict, header: str = "") -> str:
    """A scenario table as TOML text (top-level values, ``[tables]``, ``[[arrays of tables]]``) that
    :mod:`tomllib` reads back to ``raw``."""
    top = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in raw.items()
           if not isinstance(v, dict) and not (isinstance(v, list) and v and all(isinstance(x, dict) for x in v))]
    parts = [header + "\n".join(top)]
    for k, v in raw.items():
        if isinstance(v, dict):
            parts.append(f"[{_toml_key(k)}]\n" + "\n".join(f"{_toml_key(a)} = {_toml_value(b)}" for a, b in v.items()))
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            for row in v:
                parts.append(f"[[{_toml_key(k)}]]\n"
                             + "\n".join(f"{_toml_key(a)} = {_toml_value(b)}" for a, b in row.items()))
    return "\n\n".join(parts) + "\n"


def _build(raw: dict, name: str, label: str, text: str, base: Path) -> Scenario:
    """Check ``raw`` one table at a time, in file order, and build the :class:`Scenario`."""
    c = Checker(label)
    c.keys(raw, "", _TOP, required=("grid", "substrates"))
    config: dict[str, Any] = {k: c.string(raw.get(k, ""), k) for k in ("title", "description")}
    grid, config["grid"] = _read_grid(c, raw["grid"])
    compartments, comp_cfg = _read_compartments(c, raw.get("compartments", []))
    if comp_cfg:
        config["compartments"] = comp_cfg
    substrates, config["substrates"] = _read_substrates(c, raw["substrates"], grid, [cp.name for cp in compartments])
    for i, cp in enumerate(compartments):
        if not any(s.leak is not None and s.leak.compartment == cp.name for s in substrates):
            raise c.err(f"compartments[{i}]", f"no substrate leaks into {cp.name!r}",
                        f"add leak = {{ compartment = {cp.name!r}, rate = ... }} to a [[substrates]] table, or "
                        "remove the compartment")
    names = [s.name for s in substrates]
    run, config["run"] = _read_run(c, raw.get("run", {}))
    pops, types, config["cells"] = _read_populations(c, raw.get("cells", []), grid, names, run.seed, base)
    responses, config["responses"] = _read_responses(c, raw.get("responses", []), names, types, pops)
    behaviour, config["rules"] = _read_rules(c, raw.get("rules", []), names, types, pops)
    mask, value = None, np.zeros((len(names),))
    if "vessel" in raw:
        mask, value, config["vessel"] = _read_vessel(c, raw["vessel"], grid, names)
    model = _make_model(c, grid, substrates, run, mask, value, responses, compartments)
    cells, activation = _make_cells(c, pops, grid, names, run.capacity)
    by_type = _activation_by_type(c, pops, types, activation) if behaviour is not None else None
    if behaviour is not None and cells is not None:
        with c.at("rules", "check the [[rules]] against the substrates, receptors and [[responses]]"):
            behaviour.prepare(cells, model)
        divides = any(r.behaviour == "division" for r in behaviour.rules) or any("division" in p["base"] for p in pops)
        if divides and run.capacity <= sum(p["n"] for p in pops):
            warnings.warn(f"{label}: cells may divide but run.capacity leaves no free slot for daughters, so no "
                          f"division can happen until cells die; set run.capacity above the "
                          f"{sum(p['n'] for p in pops)} cells placed", UserWarning, stacklevel=3)
    initial = np.asarray([s["initial"] for s in config["substrates"]])
    return Scenario(name=name, source=label, config=config, text=text, model=model, cells=cells, run=run,
                    types=tuple(types), initial=initial, activation=activation, behaviour=behaviour,
                    activation_by_type=by_type)


def _rows(c: Checker, value: Any, key: str, what: str) -> list:
    """An array of tables (``[[key]]``) as a list; a single table counts as one row."""
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise c.err(key, f"must be [[{key}]] tables", f"write each {what} as a [[{key}]] table")
    return value


def _read_grid(c: Checker, value: Any) -> tuple[Grid, dict]:
    """The ``[grid]`` table: the :class:`Grid` (µm) and its config. :class:`Grid` owns the
    rules (1 to 3 axes of >= 1 voxels, spacing in µm within its range)."""
    g = c.table(value, "grid")
    c.keys(g, "grid", _GRID, required=("shape",))
    shape = g["shape"]
    if not isinstance(shape, list):
        raise c.err("grid.shape", f"must be a list of 1 to 3 voxel counts, got {shape!r}", "write shape = [32, 32, 16]")
    shape_t = tuple(c.integer(v, f"grid.shape[{i}]") for i, v in enumerate(shape))
    ndim = max(len(shape_t), 1)  # for reading spacing/origin; Grid refuses an empty shape
    spacing = c.vector(g.get("spacing", 1.0), "grid.spacing", ndim, "µm")
    origin = c.vector(g.get("origin", 0.0), "grid.origin", ndim, "µm")
    with c.at("grid", "write shape = [32, 32, 16] (1 to 3 axes, each >= 1 voxel) and spacing in µm"):
        grid = Grid(shape_t, spacing, origin)
    return grid, {"shape": list(shape_t), "spacing": list(spacing), "origin": list(origin)}


def _read_compartments(c: Checker, value: Any) -> tuple[list[Compartment], list[dict]]:
    """The ``[[compartments]]`` tables: well-mixed pools (blood, lymph) substrates may leak into."""
    out: list[Compartment] = []
    cfgs: list[dict] = []
    for i, t in enumerate(_rows(c, value, "compartments", "compartment")):
        key = f"compartments[{i}]"
        t = c.table(t, key)
        c.keys(t, key, _COMPARTMENT, required=("name", "volume"))
        nm = c.string(t["name"], f"{key}.name")
        if not nm or any(cp.name == nm for cp in out):
            raise c.err(f"{key}.name", f"must be a new, non-empty name, got {nm!r}",
                        "give each compartment its own name")
        vol = c.number(t["volume"], f"{key}.volume", "µm^ndim", positive=True)
        kc = c.number(t.get("clearance", 0.0), f"{key}.clearance", "1/s")
        out.append(Compartment(nm, vol, kc))
        cfgs.append({"name": nm, "volume": vol, "clearance": kc})
    return out, cfgs


def _read_substrates(c: Checker, value: Any, grid: Grid,
                     compartments: Sequence[str] = ()) -> tuple[list[Substrate], list[dict]]:
    """The ``[[substrates]]`` tables: one :class:`Substrate` each, and their configs (which
    carry ``initial``, amount/µm^ndim). :class:`Substrate` owns the boundary rules
    (periodic on whole axes, faces the grid has) and the medium's (flow through walls)."""
    rows = value if not isinstance(value, dict) else [value]
    if not isinstance(rows, list) or not rows:
        raise c.err("substrates", "must be one or more [[substrates]] tables", "add [[substrates]] with name = ...")
    substrates: list[Substrate] = []
    cfgs: list[dict] = []
    for i, s in enumerate(rows):
        key = f"substrates[{i}]"
        s = c.table(s, key)
        c.keys(s, key, _SUBSTRATE, required=("name", "diffusion"))
        nm = c.string(s["name"], f"{key}.name")
        if not nm:
            raise c.err(f"{key}.name", "is empty", "give the substrate a name")
        if any(x.name == nm for x in substrates):
            raise c.err(f"{key}.name", f"duplicate substrate name {nm!r}", "give each substrate its own name")
        d = c.number(s["diffusion"], f"{key}.diffusion", "µm²/s")
        k = c.number(s.get("decay", 0.0), f"{key}.decay", "1/s")
        init = c.number(s.get("initial", 0.0), f"{key}.initial", "amount/µm^ndim")
        bkey = f"{key}.boundary"
        faces, face_cfg = {}, {}
        for face, cond in c.table(s.get("boundary", {}), bkey).items():
            faces[face], face_cfg[face] = _read_face(c, face, cond, _join(bkey, face), nm)
        cfg: dict[str, Any] = {"name": nm, "diffusion": d, "decay": k, "initial": init, "boundary": face_cfg}
        medium = _read_medium(c, s, key, grid, cfg, compartments)
        with c.at(bkey, "see the boundary forms in the scenario docs"):
            sub = Substrate(nm, diffusion=medium["diffusion"], decay=medium["decay"], boundary=faces,
                            production=medium["production"], velocity=medium["velocity"], matrix=medium["matrix"],
                            leak=medium["leak"])
            sub.faces(grid.ndim)  # refuses faces the grid lacks
        with c.at(key, "see the substrate keys in the scenario docs"):
            sub.check_grid(grid)  # flow through a no-flux face, maps of the wrong shape
        substrates.append(sub)
        if "units" in s:  # a label for outputs (e.g. "mmHg"); the numbers are what they are
            cfg["units"] = c.string(s["units"], f"{key}.units")
        cfgs.append(cfg)
    return substrates, cfgs


def _read_medium(c: Checker, s: dict, key: str, grid: Grid, cfg: dict, compartments: Sequence[str] = ()) -> dict:
    """A substrate's tissue medium: ``production``, ``velocity``, ``matrix``, ``leak`` and
    ``[[substrates.regions]]`` that set diffusion, decay, production, matrix sites or the leak rate
    inside a region (later regions win).
    Returns the :class:`Substrate` arguments (numbers, or grid-shaped arrays where regions differ)."""
    out: dict[str, Any] = {"diffusion": cfg["diffusion"], "decay": cfg["decay"],
                           "production": c.number(s.get("production", 0.0), f"{key}.production",
                                                  "amount/(µm^ndim·s)")}
    cfg["production"] = out["production"]
    out["velocity"] = None
    if "velocity" in s:
        if not isinstance(s["velocity"], list):  # a number would silently become a diagonal flow
            raise c.err(f"{key}.velocity", f"must be a list of {grid.ndim} numbers (µm/s, one per axis), got "
                        f"{s['velocity']!r}", f"write velocity = {[1.0] + [0.0] * (grid.ndim - 1)} for flow along x")
        out["velocity"] = c.vector(s["velocity"], f"{key}.velocity", grid.ndim, "µm/s")
        cfg["velocity"] = list(out["velocity"])
    out["matrix"], sites = None, None
    if "matrix" in s:
        mkey = f"{key}.matrix"
        mt = c.table(s["matrix"], mkey)
        c.keys(mt, mkey, _MATRIX, required=("sites", "kon"))
        vals = {"sites": c.number(mt["sites"], f"{mkey}.sites", "sites/µm^ndim"),
                "kon": c.number(mt["kon"], f"{mkey}.kon", "µm^ndim/s"),
                "koff": c.number(mt.get("koff", 0.0), f"{mkey}.koff", "1/s"),
                "degradation": c.number(mt.get("degradation", 0.0), f"{mkey}.degradation", "1/s")}
        cfg["matrix"] = dict(vals)
        sites = vals["sites"]
        out["matrix"] = vals
    out["leak"], leak_rate = None, None
    if "leak" in s:
        lkey = f"{key}.leak"
        lt = c.table(s["leak"], lkey)
        c.keys(lt, lkey, _LEAK, required=("compartment",))
        comp = c.string(lt["compartment"], f"{lkey}.compartment")
        if comp not in compartments:
            raise c.err(f"{lkey}.compartment", f"names {comp!r}, which no [[compartments]] table defines",
                        f"add [[compartments]] name = {comp!r}, volume = ..., clearance = ..."
                        + (f" (defined: {', '.join(compartments)})" if compartments else ""))
        leak_rate = c.number(lt.get("rate", 0.0), f"{lkey}.rate", "1/s")
        out["leak"] = comp
        cfg["leak"] = {"compartment": comp, "rate": leak_rate}
    regions = _rows(c, s.get("regions", []), f"{key}.regions", "region")
    maps: dict[str, np.ndarray] = {}
    cfg_regions = []
    for j, r in enumerate(regions):
        rkey = f"{key}.regions[{j}]"
        r = c.table(r, rkey)
        c.keys(r, rkey, _REGION, required=("shape",))
        mask, rcfg = _region(c, r, rkey, grid)
        if not set(r) & {"diffusion", "decay", "production", "sites", "leak"}:
            raise c.err(rkey, "sets nothing", "give it diffusion, decay, production, sites or leak")
        for what, unit in (("diffusion", "µm²/s"), ("decay", "1/s"), ("production", "amount/(µm^ndim·s)"),
                           ("sites", "sites/µm^ndim"), ("leak", "1/s")):
            if what not in r:
                continue
            if what == "sites" and out["matrix"] is None:
                raise c.err(f"{rkey}.sites", "sets matrix sites but the substrate has no matrix",
                            f"add {key}.matrix = {{ sites = ..., kon = ... }}")
            if what == "leak" and out["leak"] is None:
                raise c.err(f"{rkey}.leak", "sets a leak rate but the substrate has no leak",
                            f"add {key}.leak = {{ compartment = ..., rate = 0.0 }}")
            val = c.number(r[what], f"{rkey}.{what}", unit)
            base = {"sites": sites, "leak": leak_rate}.get(what, out.get(what))
            maps.setdefault(what, np.full(grid.shape, float(base)))[mask] = val
            rcfg[what] = val
        cfg_regions.append(rcfg)
    if cfg_regions:
        cfg["regions"] = cfg_regions
    for what, arr in maps.items():
        if what == "sites":
            sites = arr
        elif what == "leak":
            leak_rate = arr
        else:
            out[what] = arr
    if out["leak"] is not None:
        out["leak"] = Leak(out["leak"], leak_rate)
    if out["matrix"] is not None:
        m = out["matrix"]
        with c.at(f"{key}.matrix", "sites, kon, koff and degradation are numbers >= 0"):
            out["matrix"] = Matrix(sites, m["kon"], m["koff"], m["degradation"])
    return out


def _read_face(c: Checker, face: str, cond: Any, key: str, substrate: str) -> tuple[Boundary, Any]:
    """One ``boundary`` entry: ``"periodic"``, ``"noflux"``, ``{ flux = j }``, ``{ dirichlet = v }``
    or ``{ robin = { permeability = P, outside = c_out } }`` (module docstring for units).

    Returns the :class:`jaxcell.boundary.Boundary` and its config. The condition's
    constructor checks its values and :func:`jaxcell.boundary.normalise` the face
    name; their ValueErrors are reported at ``key``.
    """
    if isinstance(cond, str):
        kind = c.string(cond, key, ("periodic", "noflux"))
        cfg: Any = kind
        cond_b: Boundary = Periodic() if kind == "periodic" else Flux(0.0)
    else:
        ct = c.table(cond, key)
        at = None
        if "at" in ct and "dirichlet" in ct:  # { dirichlet = v, at = "voxel" }: PhysiCell's held outer layer
            ct = dict(ct)
            at = c.string(ct.pop("at"), _join(key, "at"), DIRICHLET_AT)
        if len(ct) != 1 or next(iter(ct)) not in _FACE_KINDS:
            raise c.err(key, f"must be {{ flux = value }}, {{ dirichlet = value }}, {{ robin = {{ permeability = "
                        f"value, outside = value }} }}, \"periodic\" or \"noflux\", got {cond!r}",
                        'e.g. "x-" = { flux = 1.0 }')
        kind, v = next(iter(ct.items()))
        vkey = _join(key, kind)
        if kind == "robin":
            rt = c.table(v, vkey)
            c.keys(rt, vkey, ("permeability", "outside"), required=("permeability",))
            p = c.number(rt["permeability"], f"{vkey}.permeability", "µm/s", nonneg=False)
            out = c.number(rt.get("outside", 0.0), f"{vkey}.outside", "amount/µm^ndim", nonneg=False)
            with c.at(vkey, "permeability >= 0 µm/s (0: no-flux) and outside >= 0 amount/µm^ndim"):
                cond_b = Robin(p, out)
            cfg = {"robin": {"permeability": p, "outside": out}}
        else:
            x = c.number(v, vkey, "amount/(µm^(ndim-1)·s)" if kind == "flux" else "amount/µm^ndim", nonneg=False)
            fix = (f'an inward flux; for a sink use "{face}" = {{ dirichlet = 0.0 }}' if kind == "flux"
                   else "concentrations are non-negative")
            with c.at(vkey, fix):
                cond_b = Flux(x) if kind == "flux" else Dirichlet(x, at=at or "face")
            cfg = {kind: x, **({"at": at} if at else {})}
    with c.at(key, f"faces are {', '.join(FACES)}; \"periodic\" takes a whole axis ({', '.join(AXES)}), "
              f'e.g. "y" = "periodic"'):
        normalise({face: cond_b}, substrate)
    return cond_b, cfg


def _read_run(c: Checker, value: Any) -> tuple[RunConfig, dict]:
    """The ``[run]`` table: the :class:`RunConfig` (s) and its config."""
    r = c.table(value, "run")
    c.keys(r, "run", _RUN)
    run = RunConfig(
        solver=c.string(r.get("solver", "implicit"), "run.solver", solvers.names()),
        dt=c.number(r.get("dt", 1.0), "run.dt", "s", positive=True),
        t_end=c.number(r.get("t_end", 3600.0), "run.t_end", "s", positive=True),
        save_every=0.0,
        seed=c.integer(r.get("seed", 0), "run.seed"),
        coupling=c.string(r.get("coupling", "nearest"), "run.coupling", ("nearest", "linear")),
        capacity=c.integer(r.get("capacity", 0), "run.capacity", maximum=MAX_CAPACITY),
        held_at_start=c.boolean(r.get("held_at_start", True), "run.held_at_start"),
    )
    save_every = c.number(r.get("save_every", run.t_end / 10), "run.save_every", "s", positive=True)
    if save_every > run.t_end:
        raise c.err("run.save_every", f"{save_every} s is longer than run.t_end = {run.t_end} s",
                    "make save_every <= t_end")
    if run.dt > save_every * (1 + 1e-12):
        raise c.err("run.dt", f"{run.dt} s is longer than run.save_every = {save_every} s",
                    "make dt <= save_every")
    if run.t_end / save_every > 10000:
        raise c.err("run.save_every", f"gives {int(run.t_end / save_every)} frames", "save fewer frames (<= 10000)")
    run = dataclasses.replace(run, save_every=save_every)
    return run, dataclasses.asdict(run)


def _read_populations(c: Checker, value: Any, grid: Grid, names: Sequence[str], seed: int,
                      base: Path) -> tuple[list[dict], list[str], list[dict]]:
    """The ``[[cells]]`` tables: one population each.

    Returns the populations (dicts with ``type`` index, ``pos`` ``(n, ndim)`` µm,
    ``sec``/``upt``/``rec`` per substrate name, ``vol`` µm³, ``act`` rule or None,
    ``n``), the type labels in first-seen order, and their configs. Random
    placements draw from ``numpy.random.default_rng(seed)`` in file order.
    """
    rows = _rows(c, value, "cells", "population")
    lo_dom = np.asarray(grid.origin)
    hi_dom = lo_dom + np.asarray(grid.extent)
    rng = np.random.default_rng(seed)
    types: list[str] = []
    pops: list[dict] = []
    cfgs: list[dict] = []
    for i, p in enumerate(rows):
        key = f"cells[{i}]"
        p = c.table(p, key)
        c.keys(p, key, _CELLS, required=("placement",))
        tname = c.string(p.get("type", f"cells{i}"), f"{key}.type")
        placement = c.string(p["placement"], f"{key}.placement", PLACEMENTS)
        for k in p:
            if k in ("count", "lo", "hi", "center", "radius", "spacing", "file", "positions") and \
                    k not in _PLACEMENT_KEYS[placement]:
                raise c.err(_join(key, k), f"does not apply to placement = {placement!r}",
                            f"{placement!r} takes {', '.join(_PLACEMENT_KEYS[placement])}; remove {k}")
        pos, place_cfg = _place(c, p, key, placement, grid, lo_dom, hi_dom, rng, base)
        n = pos.shape[0]
        sec = c.per_substrate(p.get("secretion", {}), f"{key}.secretion", names, "amount/s")
        upt = c.per_substrate(p.get("uptake", {}), f"{key}.uptake", names, "µm^ndim/s")
        sat = c.per_substrate(p.get("saturation", {}), f"{key}.saturation", names, "amount/µm^ndim")
        sat_rate = c.per_substrate(p.get("saturation_rate", {}), f"{key}.saturation_rate", names, "µm^ndim/s")
        for nm in sat:
            if nm not in sat_rate:
                raise c.err(_join(f"{key}.saturation", nm), "a target density without a rate does nothing",
                            f"add saturation_rate = {{ {nm!r} = ... }} (µm^ndim/s) or remove it")
        vol = c.number(p.get("volume", 2494.0), f"{key}.volume", "µm³", positive=True)
        recs = _read_receptors(c, p.get("receptors", {}), f"{key}.receptors", names)
        act = _read_activation(c, p["activation"], f"{key}.activation", names, recs) if "activation" in p else None
        base_rates = _read_base(c, p.get("base", {}), f"{key}.base", names)
        if tname not in types:
            types.append(tname)
        pops.append({"type": types.index(tname), "pos": pos, "sec": sec, "upt": upt, "sat": sat,
                     "sat_rate": sat_rate, "vol": vol, "rec": recs, "act": act, "n": n, "base": base_rates})
        cfgs.append({"type": tname, "placement": placement, **place_cfg, "count": n, "secretion": sec,
                     "uptake": upt, **({"saturation": sat, "saturation_rate": sat_rate} if sat_rate else {}),
                     "volume": vol, "receptors": recs, **({"activation": act} if act else {}),
                     **({"base": base_rates} if base_rates else {})})
    return pops, types, cfgs


def _read_receptors(c: Checker, value: Any, key: str, names: Sequence[str]) -> dict[str, dict[str, float]]:
    """A population's ``receptors`` table: ``{substrate: {total, kon, koff, kint, synthesis, turnover}}``."""
    units = {"total": "receptors", "kon": "µm^ndim/s", "synthesis": "receptors/s"}
    recs = {}
    for nm, spec in c.table(value, key).items():
        rk = _join(key, nm)
        c.substrate_name(nm, rk, names)
        spec = c.table(spec, rk)
        c.keys(spec, rk, _RECEPTOR, required=("total", "kon"))
        recs[nm] = {f: c.number(spec.get(f, 0.0), _join(rk, f), units.get(f, "1/s")) for f in _RECEPTOR}
    return recs


def _read_activation(c: Checker, value: Any, key: str, names: Sequence[str], recs: dict) -> dict:
    """A population's ``activation`` rule: ``{signal, bound (bool), threshold, below}``."""
    a = c.table(value, key)
    c.keys(a, key, _ACTIVATION, required=("signal",))
    sig = c.substrate_name(a["signal"], f"{key}.signal", names)
    if ("bound" in a) == ("concentration" in a):
        raise c.err(key, "needs exactly one of bound = (receptors) or concentration = (amount/µm^ndim)",
                    "e.g. activation = { signal = \"IL-2\", bound = 200.0 }")
    by_bound = "bound" in a
    if by_bound and sig not in recs:
        raise c.err(f"{key}.bound", f"these cells have no receptors for {sig!r}",
                    f"add receptors.\"{sig}\" = {{ total = ..., kon = ... }} or use concentration =")
    thr = c.number(a["bound"] if by_bound else a["concentration"], f"{key}.{'bound' if by_bound else 'concentration'}",
                   "receptors" if by_bound else "amount/µm^ndim")
    below = a.get("below", False)
    if not isinstance(below, bool):
        raise c.err(f"{key}.below", f"must be true or false, got {_kind(below)}", "write below = true")
    state = c.string(a.get("state", "activated"), f"{key}.state")  # what outputs call it, e.g. "hypoxic"
    if not state.strip():
        raise c.err(f"{key}.state", "is empty", "name the state, e.g. state = \"hypoxic\", or leave it out")
    return {"signal": sig, "bound": by_bound, "threshold": thr, "below": below, "state": state}


def _receptors_by_type(types: Sequence[str], pops: Sequence[dict]) -> dict[str, set[str]]:
    """``{type label: substrates its populations carry receptors for}``."""
    out: dict[str, set[str]] = {t: set() for t in types}
    for p in pops:
        out[types[p["type"]]].update(p["rec"])
    return out


def _read_cell_type(c: Checker, value: Any, key: str, types: Sequence[str]) -> tuple[str | None, int | None]:
    """A rule's ``cell_type`` (a population's type label, or absent): the label and its index."""
    if value is None:
        return None, None
    ct = c.string(value, f"{key}.cell_type")
    if ct not in types:
        close = difflib.get_close_matches(ct, list(types), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise c.err(f"{key}.cell_type", f"no [[cells]] population has type {ct!r}",
                    f"{hint}types: {', '.join(map(repr, types)) or '(none)'}")
    return ct, types.index(ct)


def _need_receptors(c: Checker, key: str, sig: str, who: Sequence[str], type_receptors: dict[str, set[str]]) -> None:
    """A ``kind = "bound"`` rule: every type it applies to carries receptors for ``sig``."""
    lacking = [t for t in who if sig not in type_receptors[t]]
    if lacking:
        raise c.err(f"{key}.signal", f"cells of type {lacking[0]!r} have no receptors for {sig!r}",
                    f"give them receptors.\"{sig}\", set cell_type, or use kind = \"concentration\"")


def _read_responses(c: Checker, value: Any, names: Sequence[str], types: Sequence[str],
                    pops: Sequence[dict]) -> tuple[list[Response], list[dict]]:
    """The ``[[responses]]`` tables: one :class:`Response` each, and their configs.

    A ``kind = "bound"`` rule needs receptors for its signal on every cell type
    it applies to (``pops`` says which types have which receptors).
    """
    type_receptors = _receptors_by_type(types, pops)
    responses, cfgs = [], []
    for i, rr in enumerate(_rows(c, value, "responses", "rule")):
        key = f"responses[{i}]"
        rr = c.table(rr, key)
        c.keys(rr, key, _RESPONSE, required=("target", "signal", "max", "K"))
        tgt = c.substrate_name(rr["target"], f"{key}.target", names)
        sig = c.substrate_name(rr["signal"], f"{key}.signal", names)
        kind = c.string(rr.get("kind", "bound"), f"{key}.kind", ("bound", "concentration"))
        param = c.string(rr.get("parameter", "secretion"), f"{key}.parameter", ("secretion", "uptake"))
        ct, ct_id = _read_cell_type(c, rr.get("cell_type"), key, types)
        if kind == "bound":
            _need_receptors(c, key, sig, [ct] if ct is not None else types, type_receptors)
        vals = {"max": c.number(rr["max"], f"{key}.max", param),
                "K": c.number(rr["K"], f"{key}.K", "receptors" if kind == "bound" else "amount/µm^ndim",
                              positive=True),
                "n": c.number(rr.get("n", 1.0), f"{key}.n", "Hill exponent", positive=True),
                "basal": c.number(rr.get("basal", 0.0), f"{key}.basal", param)}
        with c.at(key, "check the rule's values"):
            responses.append(Response(tgt, sig, vals["max"], vals["K"], n=vals["n"], basal=vals["basal"],
                                      parameter=param, kind=kind, cell_type=ct_id))
        cfgs.append({"target": tgt, "signal": sig, **vals, "cell_type": ct, "parameter": param, "kind": kind})
    return responses, cfgs


def _read_base(c: Checker, value: Any, key: str, names: Sequence[str]) -> dict[str, float]:
    """A population's ``base`` table: behaviours at rest for the rules, in the units of
    :data:`jaxcell.behaviour.UNITS` (speed and chemotaxis µm/s, division and death 1/s)."""
    out = {}
    for k, v in c.table(value, key).items():
        try:
            head, sub = parse_behaviour(str(k))
        except ValueError:
            head, sub = "", None
        if head in ("", "secretion", "uptake", "saturation_rate"):
            raise c.err(_join(key, k), "is no behaviour with a base value",
                        "use speed, division, death or \"chemotaxis:<substrate>\" (secretion, uptake and "
                        "saturation_rate start from the population's own rates)")
        if sub is not None:
            c.substrate_name(sub, _join(key, k), names)
        out[k] = c.number(v, _join(key, k), UNITS[head])
    return out


def _read_rules(c: Checker, value: Any, names: Sequence[str], types: Sequence[str],
                pops: Sequence[dict]) -> tuple[Rules | None, list[dict]]:
    """The ``[[rules]]`` tables and the populations' ``base`` values as one :class:`jaxcell.Rules`.

    ``cell_type`` names a population's type; a ``kind = "bound"`` rule needs
    receptors for its signal on the cells it applies to.
    """
    type_receptors = _receptors_by_type(types, pops)
    made, cfgs = [], []
    for i, rr in enumerate(_rows(c, value, "rules", "rule")):
        key = f"rules[{i}]"
        rr = c.table(rr, key)
        c.keys(rr, key, _RULE, required=("signal", "behaviour", "max", "K"))
        sig = c.substrate_name(rr["signal"], f"{key}.signal", names)
        kind = c.string(rr.get("kind", "concentration"), f"{key}.kind", ("concentration", "bound"))
        beh = c.string(rr["behaviour"], f"{key}.behaviour")
        _, _, sub = beh.partition(":")
        if sub:
            c.substrate_name(sub, f"{key}.behaviour", names)
        direction = c.string(rr.get("direction", "up"), f"{key}.direction", ("up", "down"))
        ct, ct_id = _read_cell_type(c, rr.get("cell_type"), key, types)
        if kind == "bound":
            _need_receptors(c, key, sig, [ct] if ct is not None else types, type_receptors)
        vals = {"max": c.number(rr["max"], f"{key}.max", "the behaviour's unit"),
                "K": c.number(rr["K"], f"{key}.K", "receptors" if kind == "bound" else "amount/µm^ndim",
                              positive=True),
                "n": c.number(rr.get("n", 1.0), f"{key}.n", "Hill exponent", positive=True)}
        with c.at(key, "behaviour is one of " + ", ".join(BEHAVIOURS)):
            made.append(Rule(sig, kind, beh, direction, vals["max"], vals["K"], vals["n"], ct_id))
        cfgs.append({"signal": sig, "kind": kind, "behaviour": beh, "direction": direction, **vals,
                     "cell_type": ct})
    # behaviours a population gives a base value run even without a rule (plain motility, division);
    # the per-cell values themselves are in Cells.base, which Rules.prepare keeps
    at_rest = sorted({k for p in pops for k in p["base"]})
    if not made and not at_rest:
        return None, cfgs
    with c.at("rules", "give rules of one behaviour and direction the same max"):
        return rules(made, base={k: None for k in at_rest}), cfgs


def _activation_by_type(c: Checker, pops: Sequence[dict], types: Sequence[str],
                        activation: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-type activation arrays ``(T,)`` for runs whose cells live (daughters take their mother's
    type, and so its rule, into free slots): populations of one type must then share one rule."""
    by_type = {k: np.zeros((len(types),), v.dtype) for k, v in activation.items()}
    by_type["signal"][:] = -1
    seen: dict[int, tuple[int, dict | None]] = {}
    start = 0
    for i, p in enumerate(pops):
        first = seen.setdefault(p["type"], (i, p["act"]))
        if first[1] != p["act"]:
            raise c.err(f"cells[{i}].activation", f"differs from cells[{first[0]}], a population of the same type "
                        f"{types[p['type']]!r}; with [[rules]] a daughter takes its type's rule",
                        "give populations of one type the same activation, or different type names")
        if p["act"] is not None:
            for k, v in activation.items():
                by_type[k][p["type"]] = v[start]
        start += p["n"]
    return by_type


def _make_model(c: Checker, grid: Grid, substrates: Sequence[Substrate], run: RunConfig, mask: np.ndarray | None,
                value: np.ndarray, responses: Sequence[Response], compartments: Sequence[Compartment] = ()) -> Model:
    """The :class:`Model`; it and its solver own the rules that join tables.

    A refusal is reported at ``vessel`` when the same model without the held
    voxels is accepted (e.g. held voxels with a periodic axis under
    ``solver = "implicit"``), otherwise at ``run``.
    """
    def build(held: np.ndarray | None) -> Model:
        return Model(grid, substrates, solver=run.solver, coupling=run.coupling, dirichlet_mask=held,
                     dirichlet_value=value if held is not None else 0.0, responses=responses,
                     compartments=compartments)

    try:
        return build(mask)
    except ValueError as e:
        refused = str(e)
    with c.at("run", "choose a run.solver that takes these boundaries and responses (the message names one)"):
        build(None)
    raise c.err("vessel", refused, "set run.solver to the solver the message names, or drop the periodic "
                "boundary or the [vessel]")


def _make_cells(c: Checker, pops: Sequence[dict], grid: Grid, names: Sequence[str],
                capacity: int = 0) -> tuple[Cells | None, dict[str, np.ndarray]]:
    """All populations as one :class:`Cells` (None when there are none) and the
    per-cell activation arrays (see :attr:`Scenario.activation`).

    ``capacity`` > the cells placed adds free slots (``alive`` False) at the end,
    for daughters; they copy their mother when filled.
    """
    n_placed = sum(p["n"] for p in pops)
    if capacity and capacity < n_placed:
        raise c.err("run.capacity", f"{capacity} slots cannot hold the {n_placed} cells placed",
                    f"set capacity >= {n_placed} (or leave it out)")
    n_tot = max(capacity, n_placed) if n_placed else 0
    n_sub = len(names)
    act = {"signal": -np.ones((n_tot,), np.int64), "bound": np.zeros((n_tot,), np.int64),
           "threshold": np.zeros((n_tot,)), "below": np.zeros((n_tot,), np.int64)}
    if not n_tot:
        return None, act
    free = n_tot - n_placed
    # free slots sit at the domain's centre until a daughter fills them (they exchange nothing)
    centre = np.asarray(grid.origin) + np.asarray(grid.extent) / 2
    pos = np.concatenate([p["pos"] for p in pops] + [np.broadcast_to(centre, (free, grid.ndim))])
    tid = np.concatenate([np.full((p["n"],), p["type"]) for p in pops] + [np.zeros((free,), np.int64)])
    base_keys = sorted({k for p in pops for k in p["base"]})
    base = {k: np.zeros((n_tot,)) for k in base_keys}
    sec = np.zeros((n_tot, n_sub))
    upt = np.zeros((n_tot, n_sub))
    sat = np.zeros((n_tot, n_sub))
    sat_rate = np.zeros((n_tot, n_sub))
    vol = np.zeros((n_tot,))
    rec = {f: np.zeros((n_tot, n_sub)) for f in _RECEPTOR}
    any_rec = False
    start = 0
    for p in pops:
        sl = slice(start, start + p["n"])
        for j, nm in enumerate(names):
            sec[sl, j] = p["sec"].get(nm, 0.0)
            upt[sl, j] = p["upt"].get(nm, 0.0)
            sat[sl, j] = p["sat"].get(nm, 0.0)
            sat_rate[sl, j] = p["sat_rate"].get(nm, 0.0)
            if nm in p["rec"]:
                any_rec = True
                for f in _RECEPTOR:
                    rec[f][sl, j] = p["rec"][nm][f]
        vol[sl] = p["vol"]
        for k, v in p["base"].items():
            base[k][sl] = v
        if p["act"]:
            a = p["act"]
            act["signal"][sl] = names.index(a["signal"])
            act["bound"][sl] = int(a["bound"])
            act["threshold"][sl] = a["threshold"]
            act["below"][sl] = int(a["below"])
        start += p["n"]
    receptors = Receptors(**rec) if any_rec else None
    if free:
        vol[n_placed:] = pops[0]["vol"]
    with c.at("cells", "check the [[cells]] tables"):
        cells = Cells(pos, secretion=sec, uptake=upt, saturation=sat, saturation_rate=sat_rate,
                      receptors=receptors, volume=vol, type=tid,
                      alive=np.arange(n_tot) < n_placed, base=base)
        cells = cells.conform(grid, n_sub)
    return cells, act


def _in_domain(c: Checker, key: str, lo: np.ndarray, hi: np.ndarray, lo_dom: np.ndarray,
               hi_dom: np.ndarray) -> None:
    tol = 1e-9 * np.maximum(1.0, np.abs(hi_dom))
    if np.any(lo < lo_dom - tol) or np.any(hi > hi_dom + tol):
        raise c.err(key, f"the region [{lo.tolist()}, {hi.tolist()}] µm leaves the domain "
                    f"[{lo_dom.tolist()}, {hi_dom.tolist()}] µm", "move it inside or enlarge [grid]")


def _box(c: Checker, p: dict, key: str, ndim: int, lo_dom: np.ndarray,
         hi_dom: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lo = np.asarray(c.vector(p["lo"], f"{key}.lo", ndim, "µm", nonneg=False)) if "lo" in p else lo_dom
    hi = np.asarray(c.vector(p["hi"], f"{key}.hi", ndim, "µm", nonneg=False)) if "hi" in p else hi_dom
    if np.any(hi < lo):
        raise c.err(f"{key}.hi", f"hi = {hi.tolist()} lies below lo = {lo.tolist()}", "make hi >= lo on every axis")
    _in_domain(c, f"{key}.lo", lo, hi, lo_dom, hi_dom)
    return lo, hi


def _place(c: Checker, p: dict, key: str, placement: str, grid: Grid, lo_dom: np.ndarray, hi_dom: np.ndarray,
           rng: np.random.Generator, base: Path) -> tuple[np.ndarray, dict]:
    """Cell positions ``(n, ndim)`` µm for one population, and its placement config."""
    ndim = grid.ndim
    if placement == "random":
        if "count" not in p:
            raise c.err(f"{key}.count", "missing", "random placement needs count = <number of cells>")
        n = c.integer(p["count"], f"{key}.count")
        lo, hi = _box(c, p, key, ndim, lo_dom, hi_dom)
        return lo + (hi - lo) * rng.random((n, ndim)), {"lo": lo.tolist(), "hi": hi.tolist()}
    if placement == "sphere":
        for k in ("count", "center", "radius"):
            if k not in p:
                raise c.err(f"{key}.{k}", "missing", "sphere placement needs count, center and radius")
        n = c.integer(p["count"], f"{key}.count")
        ctr = np.asarray(c.vector(p["center"], f"{key}.center", ndim, "µm", nonneg=False))
        rad = c.number(p["radius"], f"{key}.radius", "µm", positive=True)
        _in_domain(c, f"{key}.radius", ctr - rad, ctr + rad, lo_dom, hi_dom)
        d = rng.normal(size=(n, ndim))
        d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-300)
        r = rad * rng.random((n, 1)) ** (1.0 / ndim)
        return ctr + r * d, {"center": ctr.tolist(), "radius": rad}
    if placement == "lattice":
        if "spacing" not in p:
            raise c.err(f"{key}.spacing", "missing", "lattice placement needs spacing = <µm between cells>")
        sp = np.asarray(c.vector(p["spacing"], f"{key}.spacing", ndim, "µm", positive=True))
        lo, hi = _box(c, p, key, ndim, lo_dom, hi_dom)
        counts = np.floor((hi - lo) / sp + 1e-9).astype(int)
        if np.any(counts < 1):
            raise c.err(f"{key}.spacing", f"spacing {sp.tolist()} µm fits no cell in [{lo.tolist()}, {hi.tolist()}]",
                        "use a smaller spacing or a larger box")
        if np.prod(counts) > 10_000_000:
            raise c.err(f"{key}.spacing", f"gives {int(np.prod(counts))} cells", "use a larger spacing")
        axes = [lo[a] + (np.arange(counts[a]) + 0.5) * sp[a] for a in range(ndim)]
        pos = np.stack([m.reshape(-1) for m in np.meshgrid(*axes, indexing="ij")], axis=1)
        return pos, {"lo": lo.tolist(), "hi": hi.tolist(), "spacing": sp.tolist()}
    if placement == "positions":
        if "positions" not in p:
            raise c.err(f"{key}.positions", "missing",
                        f"positions placement needs positions = [[{', '.join(AXES[:ndim])}], ...] (µm)")
        rows = p["positions"]
        if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
            raise c.err(f"{key}.positions", f"must be a list of [{', '.join(AXES[:ndim])}] lists (µm)",
                        "write positions = [[10.0, 20.0], [30.0, 5.0]] (2D)")
        pos = np.asarray([c.vector(r, f"{key}.positions[{j}]", ndim, "µm", nonneg=False) for j, r in enumerate(rows)],
                         float).reshape(-1, ndim)
        _in_domain(c, f"{key}.positions", pos.min(0) if len(pos) else lo_dom, pos.max(0) if len(pos) else lo_dom,
                   lo_dom, hi_dom)
        return pos, {"positions": pos.tolist()}
    # csv
    if "file" not in p:
        raise c.err(f"{key}.file", "missing", "csv placement needs file = \"cells.csv\" (x,y,z columns, µm)")
    fname = c.string(p["file"], f"{key}.file")
    path = (base / fname) if not Path(fname).is_absolute() else Path(fname)
    pos = _read_csv(c, path, f"{key}.file", ndim, lo_dom, hi_dom)
    return pos, {"file": fname}


def read_numeric_csv(path: Path, required: Sequence[str], optional: Sequence[str] = (), *,
                     what: str = "data file", may_be_missing: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """Numeric columns of a CSV with a header row (names case-insensitive).

    Returns ``{name: (rows,) array}`` for every required column and each
    optional one present. A cell of a column in ``may_be_missing`` that is empty,
    ``nan`` or ``NA`` is a missing value (NaN). Anything else wrong (unreadable,
    no rows, a missing column, a cell that is not a finite number) raises
    :class:`ScenarioError` naming the file, the line and the column.
    """
    header_hint = ",".join(required) + (f" (optional {','.join(optional)})" if optional else "")
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = [r for r in csv.reader(fh) if any(x.strip() for x in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ScenarioError(str(path), "", f"cannot read the {what} ({e.__class__.__name__})",
                            f"give a UTF-8 CSV with a header row {header_hint}") from None
    if len(rows) < 2:
        raise ScenarioError(str(path), "", f"the {what} is empty (no data rows)",
                            f"write a header row {header_hint} and one row per entry")
    header = [h.strip().lower() for h in rows[0]]
    missing = [a for a in required if a not in header]
    if missing:
        raise ScenarioError(str(path), "header", f"missing column(s) {', '.join(missing)} (got {rows[0]})",
                            f"the first row must name the columns {header_hint}")
    cols = list(required) + [a for a in optional if a in header]
    out = {a: np.zeros(len(rows) - 1) for a in cols}
    for i, row in enumerate(rows[1:], start=2):
        for a in cols:
            k = header.index(a)
            if a in may_be_missing and (k >= len(row) or row[k].strip().lower() in ("", "nan", "na")):
                out[a][i - 2] = np.nan
                continue
            try:
                v = float(row[k])
            except (IndexError, ValueError):
                got = row[k] if k < len(row) else "nothing"
                raise ScenarioError(str(path), f"line {i}, column {a}", f"expected a number, got {got!r}",
                                    "fix that row") from None
            if not np.isfinite(v):
                raise ScenarioError(str(path), f"line {i}, column {a}", f"{v} is not finite",
                                    "give a finite number")
            out[a][i - 2] = v
    return out


def _read_csv(c: Checker, path: Path, key: str, ndim: int, lo_dom: np.ndarray, hi_dom: np.ndarray) -> np.ndarray:
    if not path.is_file():
        raise c.err(key, f"cell file {str(path)!r} does not exist", "give a path relative to the scenario file")
    cols = read_numeric_csv(path, AXES[:ndim], what="cell file (positions in µm)")
    pos = np.stack([cols[a] for a in AXES[:ndim]], axis=1)
    tol = 1e-9 * np.maximum(1.0, np.abs(hi_dom))
    outside = np.any((pos < lo_dom - tol) | (pos > hi_dom + tol), axis=1)
    if outside.any():
        i = int(np.argmax(outside))
        raise ScenarioError(str(path), f"line {i + 2}", f"cell at {pos[i].tolist()} µm lies outside the domain "
                            f"[{lo_dom.tolist()}, {hi_dom.tolist()}] µm", "move it inside or enlarge [grid]")
    return pos


def _region(c: Checker, v: dict, key: str, grid: Grid) -> tuple[np.ndarray, dict]:
    """A region of the grid: ``shape = "box"`` (lo, hi), ``"sphere"`` (center, radius; a disc in 2D) or
    ``"cylinder"`` (3D: axis, center in the other two axes, radius); its voxel mask and config."""
    shape = c.string(v.get("shape"), f"{key}.shape", ("box", "sphere", "cylinder"))
    need = {"box": ("lo", "hi"), "sphere": ("center", "radius"), "cylinder": ("axis", "center", "radius")}[shape]
    for k in ("lo", "hi", "center", "radius", "axis"):
        if k in v and k not in need:
            raise c.err(f"{key}.{k}", f"does not apply to shape = {shape!r}",
                        f"{shape!r} takes {', '.join(need)}; remove {k}")
        if k in need and k not in v:
            raise c.err(f"{key}.{k}", "missing", f"shape = {shape!r} needs {', '.join(need)}")
    ndim = grid.ndim
    # open (broadcasting) coordinates: the mask is the only array of grid size built here
    mesh = np.meshgrid(*(grid.centers(a) for a in range(ndim)), indexing="ij", sparse=True)
    cfg: dict[str, Any] = {"shape": shape}
    if shape == "box":
        lo = np.asarray(c.vector(v["lo"], f"{key}.lo", ndim, "µm", nonneg=False))
        hi = np.asarray(c.vector(v["hi"], f"{key}.hi", ndim, "µm", nonneg=False))
        mask = np.ones(grid.shape, bool)
        for a in range(ndim):
            mask &= (mesh[a] >= lo[a]) & (mesh[a] <= hi[a])
        cfg.update(lo=lo.tolist(), hi=hi.tolist())
    elif shape == "sphere":
        ctr = np.asarray(c.vector(v["center"], f"{key}.center", ndim, "µm", nonneg=False))
        rad = c.number(v["radius"], f"{key}.radius", "µm", positive=True)
        d2 = sum((mesh[a] - ctr[a]) ** 2 for a in range(ndim))
        mask = d2 <= rad**2
        cfg.update(center=ctr.tolist(), radius=rad)
    else:
        if ndim != 3:
            raise c.err(f"{key}.shape", f"a cylinder needs a 3D grid (this one is {ndim}D)",
                        "use shape = \"sphere\" (a disc in 2D) or \"box\"")
        axis = c.string(v["axis"], f"{key}.axis", AXES)
        ai = AXES.index(axis)
        others = [a for a in range(3) if a != ai]
        ctr = np.asarray(c.vector(v["center"], f"{key}.center", 2, "µm", nonneg=False))
        rad = c.number(v["radius"], f"{key}.radius", "µm", positive=True)
        d2 = sum((mesh[a] - ctr[j]) ** 2 for j, a in enumerate(others))
        mask = d2 <= rad**2
        cfg.update(axis=axis, center=ctr.tolist(), radius=rad)
    mask = np.broadcast_to(mask, grid.shape).copy()  # a cylinder's mask is constant along its axis
    if not mask.any():
        what = "vessel" if key == "vessel" else "region"
        raise c.err(key, f"the {what} contains no voxel centre", "enlarge it or move it inside the domain")
    cfg["voxels"] = int(mask.sum())
    return mask, cfg


def _read_vessel(c: Checker, value: Any, grid: Grid, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray, dict]:
    v = c.table(value, "vessel")
    c.keys(v, "vessel", _VESSEL, required=("shape",))
    mask, cfg = _region(c, v, "vessel", grid)
    vals = c.per_substrate(v.get("value", {}), "vessel.value", names, "amount/µm^ndim")
    value = np.asarray([vals.get(nm, 0.0) for nm in names])
    cfg["value"] = {nm: float(x) for nm, x in zip(names, value, strict=True)}
    return mask, value, cfg

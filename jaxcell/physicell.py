"""PhysiCell's own files: a ``PhysiCell_settings.xml`` (and the cells.csv it names) as a scenario.

:func:`translate` reads the XML into the TOML scenario schema of
:mod:`jaxcell.scenario` (so ``--set`` keys, checks and outputs are those of any
scenario); :func:`jaxcell.scenario.load` calls it for ``.xml`` files and keeps
the translation as the scenario's TOML text. The semantics are PhysiCell's, read
from its source (``modules/PhysiCell_settings.cpp``, ``core/PhysiCell_cell.cpp``,
``modules/PhysiCell_geometry.cpp``, ``BioFVM/BioFVM_microenvironment.cpp``,
``BioFVM/BioFVM_solvers.cpp``, ``BioFVM/BioFVM_basic_agent.cpp``):

* minutes become seconds (diffusion µm²/min, decay and rates 1/min, export
  amount/min, ``max_time``, ``dt_diffusion`` and save intervals in min);
  PhysiCell's core works in min and µm, so other ``time_units`` or
  ``space_units`` are refused; per-value ``units`` attributes are not read (nor
  are they by PhysiCell);
* the domain ``[x_min, x_max] × ...`` with voxel ``dx`` (``dy``, ``dz`` must
  equal it: BioFVM's solver uses ``dx`` on every axis); with ``use_2D`` the z
  range becomes one voxel of thickness ``dz`` centred on z = 0, and the jaxcell
  grid is 2D: its fields are PhysiCell's values (per µm³ of that slab), and
  per-cell uptake, secretion and export are divided by the thickness so that
  every voxel update is BioFVM's (budget amounts are then per µm of thickness);
* each ``<variable>``'s Dirichlet condition holds the outermost voxel layer
  (``Dirichlet(at="voxel")``), per face from ``<Dirichlet_options>``; faces exist
  only when some variable's outer ``enabled`` is true; values are imposed around
  every sweep and not at t = 0 (``run.held_at_start = false``);
* cell definitions with PhysiCell's inheritance (``default`` / ID 0 is the
  parent of definitions without ``parent_type``, whose secretion is reset to 0);
  secretion per cell is BioFVM's ``(ρ + dt·V/V_voxel·S·T)/(1 + dt·V/V_voxel·(S+U))``
  then ``ρ += dt·E/V_voxel``, i.e. ``saturation_rate = S·V``, ``saturation = T``,
  ``uptake = U·V``, ``secretion = E`` with V the definition's ``volume/total``;
* the initial cells of ``<initial_conditions><cell_positions>`` (both csv
  formats: ``x,y,z,ID`` rows, or a header ``x,y,z,type[,volume,...]`` with type
  names); cells outside the domain are inactive in PhysiCell and left out here;
* solver ``"lod"`` (BioFVM's scheme), ``dt = dt_diffusion``, ``t_end = max_time``,
  frames every ``full_data`` interval.

* the rules CSVs of ``<cell_rules>`` whose signal is a substrate and whose
  behaviour is a substrate's secretion (``saturation_rate``), uptake or export
  become ``[[rules]]`` (:func:`_rules`).

What jaxcell does not simulate (cycle, death, motility, mechanics,
interactions, intracellular models, other rules, custom code) is returned as
notes, which :func:`jaxcell.scenario.load` reports in one warning line.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxcell.scenario import ScenarioError

__all__ = ["MINUTE", "is_physicell", "translate", "write_microenvironment_mat"]

MINUTE = 60.0
"""Seconds per PhysiCell time unit (its core works in minutes)."""

_FACES = (("xmin", "x-"), ("xmax", "x+"), ("ymin", "y-"), ("ymax", "y+"), ("zmin", "z-"), ("zmax", "z+"))
_TIME_UNITS = ("", "min", "mins", "minute", "minutes")
_SPACE_UNITS = ("", "micron", "microns", "micrometer", "micrometers", "micrometre", "micrometres", "um", "µm")
_DEFAULT_VOLUME = 2494.0  # µm³, PhysiCell's Volume() default
# phenotype blocks and options jaxcell does not simulate: (XML path under <phenotype>, what it is)
_NOT_SIMULATED = (("cycle", "cycle (division)"), ("death", "death"), ("motility", "motility"),
                  ("mechanics", "mechanics"), ("cell_interactions", "interactions"),
                  ("cell_transformations", "transformations"), ("cell_integrity", "integrity"),
                  ("intracellular", "intracellular model"))
_RESET = {"motility", "interactions", "transformations"}  # what a definition without parent_type does not inherit


def is_physicell(path: Path, text: str) -> bool:
    """Whether a scenario file is XML (PhysiCell's settings) rather than TOML."""
    return path.suffix.lower() == ".xml" or text.lstrip().startswith("<")


class _Reader:
    """Element look-ups with one-line errors naming the file and the element path."""

    def __init__(self, label: str) -> None:
        self.label = label

    def err(self, where: str, problem: str, fix: str = "") -> ScenarioError:
        return ScenarioError(self.label, where, problem, fix)

    def text(self, el: ET.Element | None, path: str) -> str | None:
        node = el.find(path) if el is not None else None
        return None if node is None or node.text is None else node.text

    def number(self, el: ET.Element | None, path: str, where: str, default: float | None = None) -> float:
        raw = self.text(el, path)
        if raw is None or not raw.strip():
            if default is None:
                raise self.err(f"{where}/{path}", "missing", f"add <{path.split('/')[-1]}> with a number")
            return default
        try:
            v = float(raw)
        except ValueError:
            raise self.err(f"{where}/{path}", f"expected a number, got {raw.strip()!r}", "write a number") from None
        if not math.isfinite(v):
            raise self.err(f"{where}/{path}", f"{v} is not finite", "write a finite number")
        return v


def _true(raw: str | None) -> bool:
    """PhysiCell's (pugixml's) boolean: true iff the first character is one of 1 t T y Y."""
    return bool(raw) and raw[0] in "1tTyY"


def translate(text: str, label: str, base: Path) -> tuple[dict, list[str], float]:
    """A PhysiCell settings file as a raw scenario (the TOML schema of :mod:`jaxcell.scenario`).

    Args:
        text: the XML.
        label: the file's name for messages.
        base: its folder (the cells.csv is looked for relative to it and to its parent,
            PhysiCell's project folder).

    Returns:
        ``(raw, notes, thickness)``: the scenario table, what jaxcell does not simulate,
        and the 2D slab thickness (µm; 1 in 3D) by which per-cell rates were divided.

    Raises:
        ScenarioError: not PhysiCell XML, a missing element or file, unknown units,
            a domain that is not a whole number of voxels; one line naming the element.
    """
    r = _Reader(label)
    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        raise r.err("", f"not valid XML ({e})", "give a PhysiCell_settings.xml") from None
    if root.tag != "PhysiCell_settings":
        raise r.err("", f"not a PhysiCell settings file (root element <{root.tag}>)",
                    "give a PhysiCell_settings.xml (root <PhysiCell_settings>) or a .toml scenario")
    notes: list[str] = []
    grid, ndim, thick = _domain(r, root)
    run = _overall(r, root, notes)
    substrates = _microenvironment(r, root, ndim, notes)
    names = [s["name"] for s in substrates]
    defs = _cell_definitions(r, root, names)
    specs = _read_rules(r, root, base, defs, names, notes)
    per_volume = {x["type"] for x in specs if x["key"] != "E"}  # types whose rules act on rates per volume
    cells, placed = _initial_cells(r, root, base, grid, ndim, thick, defs, names, notes, per_volume)
    rules = _expand_rules(r, root, specs, placed, thick, notes)
    for _, what in _NOT_SIMULATED:
        who = [nm for nm, d in defs.items() if what in d["does"] and nm in {t for t, _ in placed.values()}]
        if who:
            notes.append(f"{what} of {', '.join(who)}")
    _other_sections(root, notes)
    raw: dict[str, Any] = {"title": f"PhysiCell settings {label}", "grid": grid, "substrates": substrates}
    if cells:
        raw["cells"] = cells
    if rules:
        raw["rules"] = rules
    raw["run"] = run
    return raw, notes, thick


def _domain(r: _Reader, root: ET.Element) -> tuple[dict, int, float]:
    """The ``[grid]`` table, the number of axes and the 2D slab thickness (1 in 3D)."""
    dom = root.find("domain")
    if dom is None:
        raise r.err("domain", "missing", "add <domain> with x_min ... z_max and dx")
    two_d = _true(r.text(dom, "use_2D"))
    dx = r.number(dom, "dx", "domain")
    if dx <= 0:
        raise r.err("domain/dx", f"must be > 0 µm, got {dx}", "give the voxel size in µm")
    for other in ("dy",) if two_d else ("dy", "dz"):  # in 2D, dz is only the slab's thickness
        v = r.number(dom, other, "domain", default=dx)
        if abs(v - dx) > 1e-9 * dx:
            raise r.err(f"domain/{other}", f"{other} = {v} differs from dx = {dx}: BioFVM's solver uses dx on every "
                        "axis, so PhysiCell itself would be wrong", f"set {other} = {dx} (cubic voxels)")
    dz = r.number(dom, "dz", "domain", default=dx)
    if dz <= 0:
        raise r.err("domain/dz", f"must be > 0 µm, got {dz}", "give the voxel size in µm")
    axes = ("x", "y") if two_d else ("x", "y", "z")
    shape, origin = [], []
    for a in axes:
        lo, hi = r.number(dom, f"{a}_min", "domain"), r.number(dom, f"{a}_max", "domain")
        n = (hi - lo) / dx
        if not n >= 1 or abs(n - round(n)) > 1e-6 * max(1.0, n):
            raise r.err(f"domain/{a}_max", f"the {a} range [{lo:g}, {hi:g}] µm is {n:.4g} voxels of dx = {dx:g} µm, "
                        "not a whole number (PhysiCell would add a partial voxel)",
                        f"make {a}_max − {a}_min a multiple of dx, e.g. {a}_max = {lo + max(1, round(n)) * dx:g}")
        shape.append(int(round(n)))
        origin.append(lo)
    return {"shape": shape, "spacing": dx, "origin": origin}, len(axes), (dz if two_d else 1.0)


def _overall(r: _Reader, root: ET.Element, notes: list[str]) -> dict:
    """The ``[run]`` table: times in s, BioFVM's solver, PhysiCell's first-step Dirichlet."""
    ov = root.find("overall")
    if ov is None:
        raise r.err("overall", "missing", "add <overall> with <max_time> (min) and <dt_diffusion>")
    tu = (r.text(ov, "time_units") or "").strip()
    if tu.lower() not in _TIME_UNITS:
        raise r.err("overall/time_units", f"unknown time unit {tu!r}: PhysiCell's rates and times are per minute",
                    "write <time_units>min</time_units> with every time in minutes")
    su = (r.text(ov, "space_units") or "").strip()
    if su.lower() not in _SPACE_UNITS:
        raise r.err("overall/space_units", f"unknown space unit {su!r}: PhysiCell's lengths are in microns",
                    "write <space_units>micron</space_units> with every length in µm")
    t_end = r.number(ov, "max_time", "overall")
    dt = r.number(ov, "dt_diffusion", "overall", default=0.01)  # PhysiCell's default diffusion_dt
    if t_end <= 0 or dt <= 0:
        raise r.err("overall", f"max_time = {t_end:g} and dt_diffusion = {dt:g} min must be > 0",
                    "give positive times in minutes")
    every = r.number(root, "save/full_data/interval", "save", default=t_end)
    if every <= 0:
        raise r.err("save/full_data/interval", f"must be > 0 min, got {every:g}", "give the save interval in min")
    every = min(every, t_end)
    if t_end / every > 10000:
        raise r.err("save/full_data/interval", f"{every:g} min gives {int(t_end / every)} frames over max_time "
                    f"{t_end:g} min; jaxcell keeps at most 10000", f"raise the interval to at least "
                    f"{t_end / 10000:g} min (or --set run.save_every=... in s)")
    if dt > every:
        notes.append(f"dt_diffusion {dt:g} min is longer than the save interval {every:g} min (jaxcell steps "
                     f"{every:g} min)")
        dt = every
    ratio = every / dt
    if abs(ratio - round(ratio)) > 1e-6 * ratio:
        notes.append(f"save interval {every:g} min is not a multiple of dt_diffusion {dt:g} min (PhysiCell skips "
                     "such saves; jaxcell shortens the step before each frame)")
    return {"solver": "lod", "dt": dt * MINUTE, "t_end": t_end * MINUTE, "save_every": every * MINUTE,
            "coupling": "nearest", "held_at_start": False}


def _microenvironment(r: _Reader, root: ET.Element, ndim: int, notes: list[str]) -> list[dict]:
    """The ``[[substrates]]`` tables: D and decay per s, initial values, held outer layers."""
    me = root.find("microenvironment_setup")
    if me is None:
        raise r.err("microenvironment_setup", "missing",
                    "add <microenvironment_setup> with one <variable> per substrate")
    variables = me.findall("variable")
    if not variables:
        raise r.err("microenvironment_setup", "has no <variable>", "add a <variable name=...> per substrate")
    subs, active, values, outer = [], [], [], False
    for i, v in enumerate(variables):
        where = f"microenvironment_setup/variable[{i}]"
        name = (v.get("name") or "").strip()
        if not name:
            raise r.err(where, "has no name attribute", "write <variable name=\"oxygen\" ...>")
        if any(s["name"] == name for s in subs):
            raise r.err(f"{where}", f"duplicate variable name {name!r}", "give each substrate its own name")
        where = f"microenvironment_setup/variable[@name='{name}']"
        D = r.number(v, "physical_parameter_set/diffusion_coefficient", where, default=0.0)
        k = r.number(v, "physical_parameter_set/decay_rate", where, default=0.0)
        init = r.number(v, "initial_condition", where, default=0.0)
        dbc = v.find("Dirichlet_boundary_condition")
        value = r.number(v, "Dirichlet_boundary_condition", where, default=0.0)
        on = dbc is not None and _true(dbc.get("enabled"))
        outer = outer or on
        act = {f: on for f, _ in _FACES}
        val = {f: value for f, _ in _FACES}
        for bv in v.findall("Dirichlet_options/boundary_value"):
            ident = bv.get("ID") or ""
            for f, _ in _FACES:
                if f in ident:  # PhysiCell matches the ID as a substring
                    act[f] = _true(bv.get("enabled"))
                    val[f] = r.number(bv, ".", f"{where}/Dirichlet_options/boundary_value[@ID='{ident}']",
                                      default=0.0)
        used = [val[f] for f, _ in _FACES if act[f]]  # a value on a face that is off is never used
        for what, x in (("diffusion_coefficient", D), ("decay_rate", k), ("initial_condition", init),
                        ("Dirichlet value", min(used, default=0.0))):
            if x < 0:
                raise r.err(where, f"{what} = {x:g} is negative", "concentrations and rates are >= 0")
        sub: dict[str, Any] = {"name": name, "diffusion": D / MINUTE, "decay": k / MINUTE, "initial": init}
        units = (v.get("units") or "").strip()
        if units:
            sub["units"] = units
        subs.append(sub)
        active.append(act)
        values.append(val)
    faces = [(f, face) for f, face in _FACES[: 2 * ndim] if outer and any(a[f] for a in active)]
    for sub, act, val in zip(subs, active, values):
        bnd = {face: {"dirichlet": val[f], "at": "voxel"} for f, face in faces if act[f]}
        if bnd:
            sub["boundary"] = bnd
    opts = me.find("options")
    if opts is not None:
        ic = opts.find("initial_condition")
        if ic is not None and _true(ic.get("enabled")):
            notes.append("initial conditions from a file (options/initial_condition; uniform initial_condition "
                         "values used)")
        dn = opts.find("dirichlet_nodes")
        if dn is not None and _true(dn.get("enabled")):
            notes.append("Dirichlet nodes from a file (options/dirichlet_nodes)")
    return subs


def _cell_definitions(r: _Reader, root: ET.Element, names: Sequence[str]) -> dict:
    """``{name: {"id", "volume", "S", "T", "U", "E", "does"}}`` per cell definition, with PhysiCell's
    inheritance; rates per minute as written; ``does``: what of :data:`_NOT_SIMULATED` its cells do."""
    zero = {nm: 0.0 for nm in names}
    # PhysiCell's built-in default cell cycles (Ki67) and dies (apoptosis 0.00319/60 per min) unless told
    defaults = {"id": 0, "volume": _DEFAULT_VOLUME, "S": dict(zero), "T": dict(zero), "U": dict(zero),
                "E": dict(zero), "does": {"cycle (division)", "death"}}
    legacy = _true(r.text(root, "options/legacy_cell_defaults_copy"))
    defs: dict[str, dict] = {}
    for i, cd in enumerate(root.findall("cell_definitions/cell_definition")):
        name = (cd.get("name") or "").strip()
        ident = (cd.get("ID") or "").strip()
        where = f"cell_definitions/cell_definition[@name='{name}']"
        if not name:
            raise r.err(f"cell_definitions/cell_definition[{i}]", "has no name attribute",
                        "write <cell_definition name=\"tumor\" ID=\"0\">")
        is_default = name == "default" or ident == "0"
        parent_name = (cd.get("parent_type") or "").strip()
        if parent_name and parent_name not in defs:
            raise r.err(where, f"parent_type {parent_name!r} is not defined above it",
                        "define the parent cell_definition first")
        parent = defs[parent_name] if parent_name else defaults
        d = {"volume": parent["volume"], **{x: dict(parent[x]) for x in "STUE"}, "does": set(parent["does"])}
        if not parent_name and not is_default and not legacy:  # PhysiCell's April-2022 reset
            d.update({x: dict(zero) for x in "STUE"})
            d["does"] -= _RESET
        try:
            d["id"] = int(ident) if ident else (0 if is_default else len(defs))
        except ValueError:
            raise r.err(where, f"ID {ident!r} is not an integer", "write ID=\"1\"") from None
        ph = cd.find("phenotype")
        if ph is not None:
            d["volume"] = r.number(ph, "volume/total", where + "/phenotype", default=d["volume"])
            if d["volume"] <= 0:
                raise r.err(f"{where}/phenotype/volume/total", f"must be > 0 µm³, got {d['volume']:g}",
                            "give the cell volume in µm³")
            for sub in ph.findall("secretion/substrate"):
                sname = (sub.get("name") or "").strip()
                swhere = f"{where}/phenotype/secretion/substrate[@name='{sname}']"
                if sname not in names:
                    raise r.err(swhere, f"names substrate {sname!r}, which <microenvironment_setup> lacks "
                                f"({', '.join(names)})", "use a <variable> name")
                for tag, x in (("secretion_rate", "S"), ("secretion_target", "T"), ("uptake_rate", "U"),
                               ("net_export_rate", "E")):
                    val = r.number(sub, tag, swhere, default=d[x][sname])
                    if val < 0:
                        raise r.err(f"{swhere}/{tag}", f"is negative ({val:g})", "rates and targets are >= 0")
                    d[x][sname] = val
            for tag, what in _NOT_SIMULATED:
                if ph.find(tag) is None:
                    continue  # inherited
                if _active_block(ph, tag):
                    d["does"].add(what)
                else:
                    d["does"].discard(what)
        if is_default:
            defaults = d
        defs[name] = d
    return defs


def _active_block(ph: ET.Element, tag: str) -> bool:
    """Whether a phenotype block would make PhysiCell's cells do something jaxcell does not."""
    el = ph.find(tag)
    if el is None:
        return False
    if tag == "motility":
        return _true(ph.findtext("motility/options/enabled") or "") and _positive(ph.findtext("motility/speed"))
    if tag == "death":
        return any(_positive(x.text) for x in el.iter("death_rate")) or any(_positive(x.text) for x in el.iter("rate"))
    if tag == "cycle":
        rates = [x.text for x in el.iter("rate")] + [x.text for x in el.iter("duration")]
        return any(_positive(x) for x in rates)
    if tag == "mechanics":
        return False  # cells that neither move nor divide never overlap: mechanics has nothing to do
    if tag == "intracellular":
        return True
    return any(_positive(x.text) for x in el.iter() if len(x) == 0)


def _positive(raw: str | None) -> bool:
    try:
        return float(raw or 0.0) > 0
    except ValueError:
        return False


def _cells_file(r: _Reader, root: ET.Element, base: Path) -> Path | None:
    """The initial cells' csv named by ``<initial_conditions><cell_positions>``, or None."""
    cp = root.find("initial_conditions/cell_positions")
    if cp is None or not _true(cp.get("enabled")):
        return None
    kind = (cp.get("type") or "").strip().lower()
    if kind != "csv":
        raise r.err("initial_conditions/cell_positions", f"type {cp.get('type')!r} is not read (PhysiCell reads "
                    "csv only)", "give type=\"csv\" with a cells.csv, or enabled=\"false\"")
    folder = (cp.findtext("folder") or "").strip()
    fname = (cp.findtext("filename") or "").strip()
    return _find_file(r, base, folder, fname, "initial_conditions/cell_positions",
                      "fix <folder>/<filename>, or set enabled=\"false\" to start without cells")


def _find_file(r: _Reader, base: Path, folder: str, fname: str, where: str, fix: str) -> Path:
    """A file PhysiCell names by folder and filename, relative to its working folder (the project):
    looked for next to the XML, in its parent folder, and in the working folder."""
    if not fname:
        raise r.err(f"{where}/filename", "missing", "name the file")
    tried = [base / folder / fname, base.parent / folder / fname, Path.cwd() / folder / fname]
    for p in tried:
        if p.is_file():
            return p
    raise r.err(where, f"file {folder + '/' if folder else ''}{fname} not found "
                f"(looked in {', '.join(str(p.parent) for p in tried)})", fix)


def _initial_cells(r: _Reader, root: ET.Element, base: Path, grid: dict, ndim: int, thick: float, defs: dict,
                   names: Sequence[str], notes: list[str],
                   per_volume: set[str] = frozenset()) -> tuple[list[dict], dict[str, tuple[str, float]]]:
    """``[[cells]]`` tables from the cells csv, one per (cell type, volume) with placement "positions",
    and ``{type label: (PhysiCell type, volume)}`` of the types they carry.

    Cells whose csv volume differs from their definition's get rates for their own volume; for a type in
    ``per_volume`` (rules act on its rates per volume) each such volume is a type of its own,
    ``"name (V µm³)"``, so that the rules convert exactly (up to :data:`_MAX_VOLUME_TYPES` of them; beyond,
    the rules use the definition's volume, and ``notes`` says so)."""
    path = _cells_file(r, root, base)
    if path is None:
        return [], {}
    rows = _read_cells_csv(r, path, defs, notes)
    lo = np.asarray(grid["origin"], float)
    hi = lo + np.asarray(grid["shape"]) * grid["spacing"]
    groups: dict[tuple[str, float], list[list[float]]] = {}
    outside = 0
    for x, y, z, tname, vol in rows:
        p = np.array([x, y, z][:ndim])
        inside = bool(np.all((p >= lo) & (p <= hi)))
        if ndim == 2:
            inside = inside and abs(z) <= thick / 2
        if not inside:
            outside += 1
            continue
        groups.setdefault((tname, vol), []).append(p.tolist())
    if outside:
        notes.append(f"{outside} cell(s) of {path.name} outside the domain (inactive in PhysiCell; left out)")
    pops, placed = [], {}
    n_vol = {t: sum(1 for (tn, v) in groups if tn == t and v != defs[t]["volume"]) for t, _ in groups}
    for t in sorted(x for x in per_volume if n_vol.get(x, 0) > _MAX_VOLUME_TYPES):
        notes.append(f"rules on rates of {t} use its definition's volume for its cells with {n_vol[t]} other "
                     f"csv volumes (more than {_MAX_VOLUME_TYPES})")
    for (tname, vol), pos in groups.items():
        d = defs[tname]
        per = vol / thick / MINUTE  # V (µm³ → µm^ndim per slab thickness) per minute
        split = tname in per_volume and vol != d["volume"] and n_vol[tname] <= _MAX_VOLUME_TYPES
        label = _volume_type(tname, vol) if split else tname
        pop: dict[str, Any] = {"type": label, "placement": "positions", "positions": pos, "volume": vol}
        placed[label] = (tname, vol if split else d["volume"])
        sec = {nm: d["E"][nm] / thick / MINUTE for nm in names if d["E"][nm] > 0}
        upt = {nm: d["U"][nm] * per for nm in names if d["U"][nm] > 0}
        # a target with a rate of 0 is kept: a rule may raise the rate (PhysiCell's usual switch-on)
        sat = {nm: d["T"][nm] for nm in names if d["S"][nm] > 0 or d["T"][nm] != 0}
        rate = {nm: d["S"][nm] * per for nm in sat}
        for key, val in (("secretion", sec), ("uptake", upt), ("saturation_rate", rate), ("saturation", sat)):
            if val:
                pop[key] = val
        pops.append(pop)
    return pops, placed


_MAX_VOLUME_TYPES = 16  # csv volumes of one ruled type that become types of their own (each costs a rule)


def _volume_type(tname: str, vol: float) -> str:
    """The jaxcell type label of cells of PhysiCell type ``tname`` whose csv volume differs from the definition's."""
    return f"{tname} ({vol!r} µm³)"


def _read_cells_csv(r: _Reader, path: Path, defs: dict,
                    notes: list[str]) -> list[tuple[float, float, float, str, float]]:
    """PhysiCell's cells csv: ``x,y,z,ID`` rows (v1) or a header ``x,y,z,type,...`` with type names (v2)."""
    label = str(path)
    try:
        lines = path.read_text("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ScenarioError(label, "", f"cannot read the cells file ({e.__class__.__name__})",
                            "give a UTF-8 csv") from None
    lines = [ln for ln in lines if ln.strip()]
    if not lines:
        raise ScenarioError(label, "", "the cells file is empty", "write one x,y,z,type row per cell")
    by_id = {d["id"]: nm for nm, d in defs.items()}
    out, unknown = [], set()
    header = lines[0].lstrip()[:1] in ("x", "X")
    labels = [h.strip().lower() for h in lines[0].split(",")] if header else []
    extra = [h for h in labels[4:] if h and h != "volume"]
    if extra:
        notes.append(f"cells csv columns {', '.join(extra)} (only volume is read)")
    for n, line in enumerate(lines[1:] if header else lines, start=2 if header else 1):
        parts = [p.strip() for p in line.split(",")]
        try:
            x, y, z = (float(v) for v in parts[:3])
        except ValueError:
            raise ScenarioError(label, f"line {n}", f"expected x,y,z numbers first, got {line.strip()!r}",
                                "fix that row") from None
        vol = None
        if header:
            if len(parts) < 4:
                raise ScenarioError(label, f"line {n}", "expected x,y,z,type", "add the cell type name")
            tname = parts[3]
            if "volume" in labels and labels.index("volume") < len(parts) and parts[labels.index("volume")]:
                try:
                    vol = float(parts[labels.index("volume")])
                except ValueError:
                    raise ScenarioError(label, f"line {n}, column volume", "expected a number",
                                        "fix that row") from None
                if not (math.isfinite(vol) and vol > 0):
                    raise ScenarioError(label, f"line {n}, column volume", f"must be > 0 µm³, got {vol:g}",
                                        "give the cell's volume in µm³, or leave it empty for its definition's")
        else:
            if len(parts) != 4:
                raise ScenarioError(label, f"line {n}", f"expected 4 numbers x,y,z,ID, got {len(parts)} fields",
                                    "write x,y,z,ID rows, or a header x,y,z,type and type names")
            try:
                ident = int(float(parts[3]))
            except ValueError:
                raise ScenarioError(label, f"line {n}", f"the cell type ID {parts[3]!r} is not a number",
                                    "write the integer ID, or use the header format x,y,z,type") from None
            tname = by_id.get(ident, f"ID {ident}")
        if tname not in defs:
            unknown.add(tname)
            continue
        out.append((x, y, z, tname, defs[tname]["volume"] if vol is None else vol))
    if unknown:
        notes.append(f"cells of undefined type(s) {', '.join(sorted(unknown))} in {path.name} (skipped, as PhysiCell "
                     "does)")
    return out


# PhysiCell behaviour "<substrate> <suffix>" -> (jaxcell rule behaviour head, definition rate key)
_RULE_BEHAVIOURS = {"secretion": ("saturation_rate", "S"), "uptake": ("uptake", "U"), "export": ("secretion", "E")}


def _read_rules(r: _Reader, root: ET.Element, base: Path, defs: dict, names: Sequence[str],
                notes: list[str]) -> list[dict]:
    """The rules of the enabled rules CSVs (PhysiCell's CBHG format) whose signal is a substrate and whose
    behaviour is a substrate's secretion, uptake or export, as ``{"type", "signal", "head", "sub", "key",
    "up", "sat", "half", "hill"}`` in PhysiCell's units; the others are counted in ``notes``.

    Formats by field count: 8 (v2/v3: type, signal, direction, behaviour, saturation value, half-max,
    Hill power, applies to dead), 9 (v1: a base value after the behaviour, not read: PhysiCell takes the
    definition's) and 10 (v0: type, behaviour, min, base, max, signal, direction, half-max, Hill power,
    dead).
    """
    out: list[dict] = []
    lacking: dict[str, int] = {}
    for rs in root.findall("cell_rules/rulesets/ruleset"):
        if not _true(rs.get("enabled")):
            continue
        folder, fname = (rs.findtext("folder") or "").strip(), (rs.findtext("filename") or "").strip()
        path = _find_file(r, base, folder, fname, "cell_rules/rulesets/ruleset",
                          "fix <folder>/<filename>, or set the ruleset's enabled=\"false\"")
        try:
            lines = path.read_bytes().decode("utf-8", errors="replace").splitlines()
        except OSError as e:
            raise ScenarioError(str(path), "", f"cannot read the rules file ({e.__class__.__name__})",
                                "check the file") from None
        for n, line in enumerate(lines, start=1):
            if not line.strip() or line.lstrip().startswith("//"):
                continue
            f = [x.strip() for x in line.split(",")]
            if len(f) not in (8, 9, 10) and len(line.split("\t")) in (8, 9, 10):
                f = [x.strip() for x in line.split("\t")]
            if len(f) not in (8, 9, 10) or not all(f):
                notes.append(f"{path.name} line {n} (not a rule: {len(f)} fields; PhysiCell skips it too)")
                continue
            if len(f) == 10:
                ctype, beh, signal, direction, half, hill = f[0], f[1], f[5], f[6], f[7], f[8]
                sat = f[4] if direction.lower() in ("increase", "increases", "promotes") else f[2]
            else:
                ctype, signal, direction, beh = f[:4]
                sat, half, hill = f[-4:-1]
            if ctype not in defs:
                raise ScenarioError(str(path), f"line {n}", f"cell type {ctype!r} is not defined in the settings "
                                    f"({', '.join(defs)})", "use a <cell_definition> name (PhysiCell exits here too)")
            sub, _, suffix = beh.rpartition(" ")
            if signal not in names or sub not in names or suffix not in _RULE_BEHAVIOURS:
                what = beh if signal in names else f"signal {signal}"
                lacking[what] = lacking.get(what, 0) + 1
                continue
            try:
                sat_v, half_v, hill_v = float(sat), float(half), float(hill)
            except ValueError:
                raise ScenarioError(str(path), f"line {n}", f"expected numbers for the value, half-max and Hill "
                                    f"power, got {sat!r}, {half!r}, {hill!r}", "fix that row") from None
            if not (sat_v >= 0 and half_v > 0 and hill_v > 0 and math.isfinite(sat_v + half_v + hill_v)):
                raise ScenarioError(str(path), f"line {n}", f"the value must be >= 0 and the half-max and Hill "
                                    f"power > 0, got {sat_v:g}, {half_v:g}, {hill_v:g}", "fix that row")
            head, key = _RULE_BEHAVIOURS[suffix]
            out.append({"type": ctype, "signal": signal, "head": head, "sub": sub, "key": key,
                        "up": direction.lower() in ("increase", "increases", "promotes"), "sat": sat_v,
                        "half": half_v, "hill": hill_v})
    if lacking:
        notes.append("rules jaxcell lacks (" + ", ".join(f"{k} ×{v}" if v > 1 else k for k, v in lacking.items())
                     + ")")
    return out


def _expand_rules(r: _Reader, root: ET.Element, specs: list[dict], placed: dict[str, tuple[str, float]],
                  thick: float, notes: list[str]) -> list[dict]:
    """``[[rules]]`` tables: one per rule and placed group of its cell type, the value converted as the
    definitions' (per minute; × the group's volume / thickness for rates per volume). As in PhysiCell,
    the last rule of a behaviour and direction sets the value all of them move towards."""
    out: list[dict] = []
    for x in specs:
        for label, (tname, vol) in placed.items():
            if tname != x["type"]:
                continue
            scale = 1 / thick / MINUTE if x["key"] == "E" else vol / thick / MINUTE
            out.append({"signal": x["signal"], "kind": "concentration", "behaviour": f"{x['head']}:{x['sub']}",
                        "direction": "up" if x["up"] else "down", "max": x["sat"] * scale, "K": x["half"],
                        "n": x["hill"], "cell_type": label})
    last = {(x["cell_type"], x["behaviour"], x["direction"]): x["max"] for x in out}
    for x in out:
        x["max"] = last[(x["cell_type"], x["behaviour"], x["direction"])]
    if out:
        ph = r.number(root, "overall/dt_phenotype", "overall", default=6.0)
        dt = r.number(root, "overall/dt_diffusion", "overall", default=0.01)
        if ph > dt * (1 + 1e-9):
            notes.append(f"rules evaluated every step of {dt:g} min (PhysiCell: every dt_phenotype = {ph:g} min)")
    return out


def _other_sections(root: ET.Element, notes: list[str]) -> None:
    """User parameters that place cells in custom code, and other options jaxcell does not read."""
    n = root.findtext("user_parameters/number_of_cells")
    if _positive(n):
        notes.append(f"user_parameters number_of_cells = {n.strip()} (cells the project's custom code places)")


def write_microenvironment_mat(path: str | Path, centers: Sequence[np.ndarray], voxel_volume: float,
                               fields: np.ndarray) -> None:
    """Write PhysiCell's ``*_microenvironment0.mat``: a MATLAB Level-4 float64 matrix named
    ``multiscale_microenvironment`` with one column per voxel (x fastest) holding
    ``[x, y, z, voxel volume, ρ_0, ..., ρ_{S−1}]``, as ``Microenvironment::write_to_matlab`` does.

    Args:
        path: the file to write.
        centers: voxel centres per axis (µm), 2 or 3 arrays; z = 0 for 2D.
        voxel_volume: µm³ (PhysiCell's, ``dx³`` in 2D too).
        fields: ``(S, *grid.shape)`` in PhysiCell's units.
    """
    mesh = np.meshgrid(*centers, indexing="ij")
    cols = [m.reshape(-1, order="F") for m in mesh]  # jaxcell is (x, y, z)-indexed; x fastest = Fortran order
    while len(cols) < 3:
        cols.append(np.zeros_like(cols[0]))
    n = cols[0].size
    rows = np.stack(cols + [np.full(n, float(voxel_volume))]
                    + [np.asarray(f, np.float64).reshape(-1, order="F") for f in fields])
    name = b"multiscale_microenvironment"
    header = np.array([0, rows.shape[0], n, 0, len(name)], "<u4").tobytes()
    with open(path, "wb") as fh:
        fh.write(header + name + np.ascontiguousarray(rows.T, "<f8").tobytes())

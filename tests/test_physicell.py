"""PhysiCell's own files: settings XML and cells.csv read with PhysiCell's semantics, checked against a
NumPy transcription of BioFVM's LOD scheme, Dirichlet nodes and agent secretion (tests/biofvm_reference.py)
run in PhysiCell's units (min); bad input refused in one line."""

import shutil
import struct
import warnings
from pathlib import Path

import biofvm_reference as biofvm
import numpy as np
import pytest

import jaxcell as jc
from jaxcell.cli import main
from jaxcell.physicell import write_microenvironment_mat
from jaxcell.scenario import ScenarioError

DATA = Path(__file__).parent / "data" / "physicell"
SETTINGS_2D = DATA / "config" / "PhysiCell_settings.xml"
SETTINGS_3D = DATA / "3d" / "PhysiCell_settings.xml"


def _run(sc: jc.Scenario) -> jc.Trajectory:
    _, traj = jc.simulate(sc.model, sc.state, t_end=sc.t_end, dt=sc.dt, save_every=sc.save_every,
                          behaviour=sc.behaviour)
    return traj


def _reference(shape, dx, D, decay, initial, faces, cells, dt, n_steps, save_every_steps, voxel_volume):
    """PhysiCell's loop: save, diffuse (Dirichlet around every sweep), secrete; frames at 0 and every save."""
    rho = np.broadcast_to(np.asarray(initial, float).reshape((-1,) + (1,) * len(shape)), (len(D),) + shape).copy()
    active, value = biofvm.dirichlet_nodes(shape, faces, len(D)) if faces else (None, None)
    frames = [rho.copy()]
    for n in range(1, n_steps + 1):
        rho = biofvm.lod_step(rho, dt, dx, D, decay, active, value)
        rho = biofvm.secrete(rho, cells, dt, voxel_volume)
        if n % save_every_steps == 0:
            frames.append(rho.copy())
    return np.asarray(frames), active


def test_2d_settings_match_biofvm_reference():
    """The 2D sample: D, decay, per-face Dirichlet (a face turned on for a substrate whose outer condition is
    off), inheritance (parent_type keeps the default's uptake; no parent resets it), csv header format with a
    per-cell volume; V_voxel = dx³ as in PhysiCell's one-voxel-thick 2D domain; frames at 0, 1, 2, 3 min."""
    sc = jc.load_scenario(SETTINGS_2D)
    assert sc.model.solver == "lod" and sc.dt == pytest.approx(3.0) and sc.t_end == pytest.approx(180.0)
    traj = _run(sc)
    assert np.allclose(np.asarray(traj.times), [0, 60, 120, 180])
    zero2 = [0.0, 0.0]
    faces = {"xmin": ([True, True], [30.0, 0.5]), "xmax": ([True, False], [38.0, 0.0]),
             "ymax": ([True, False], [20.0, 0.0])}  # ymin is off for both substrates: no node there
    default = {"S": zero2, "T": [38.0, 0.0], "U": [10.0, 0.0], "E": zero2}
    secretor = {"S": [0.0, 2.0], "T": [38.0, 1.5], "U": [10.0, 0.1], "E": [0.0, 30.0]}
    cells = [{"voxel": (1, 2), "V": 4000.0, **secretor}, {"voxel": (3, 1), "V": 3000.0, **secretor},
             {"voxel": (4, 3), "V": 2494.0, "S": zero2, "T": zero2, "U": [0.0, 0.5], "E": zero2},
             {"voxel": (0, 0), "V": 2494.0, **default}]
    ref, active = _reference((6, 4), 20.0, [6000.0, 300.0], [0.6, 0.06], [10.0, 0.0], faces, cells, 0.05, 60, 20,
                             20.0**3)
    got = np.asarray(traj.fields)
    # PhysiCell lets a cell in a Dirichlet voxel change it until the next step re-imposes the value
    # (the default cell sits in one); jaxcell keeps held voxels at their value: all other voxels agree
    free = ~active
    np.testing.assert_allclose(got[:, free], ref[:, free], rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(got[0], ref[0])  # t = 0: PhysiCell has not imposed its Dirichlet values yet
    held = np.broadcast_to(active, got[1:].shape)
    np.testing.assert_allclose(got[1:][held], np.broadcast_to(np.where(active, _values(faces, (6, 4), 2), 0),
                                                               got[1:].shape)[held], rtol=1e-15)
    assert got[-1, 1, 1, 2] > 0.3  # the chemokine the secretors put out reached a level worth checking


def _values(faces, shape, n_sub):
    return biofvm.dirichlet_nodes(shape, faces, n_sub)[1]


def test_3d_settings_match_biofvm_reference_and_edges_follow_the_later_face():
    """3D, three substrates: B's ymin face (on through its options, outer off) makes A's ymin edge voxels
    free although A holds xmin/xmax; A's zmin is off; cells from an x,y,z,ID csv with an undefined ID and one
    outside the domain (both left out, and said so); ID 0 is the default the others inherit the volume of."""
    with pytest.warns(UserWarning) as rec:
        sc = jc.load_scenario(SETTINGS_3D)
    msg = " ".join(str(w.message) for w in rec)
    assert "undefined type(s) ID 7" in msg and "1 cell(s) of cells.csv outside the domain" in msg
    assert sc.n_cells == 3
    held, _ = sc.model.held_voxels(np.float64)
    faces = {"xmin": ([True, False, False], [1.0, 0.0, 0.0]), "xmax": ([True, False, False], [2.0, 0.0, 0.0]),
             "ymin": ([False, True, False], [1.0, 3.0, 0.0]), "ymax": ([True, False, False], [1.0, 0.0, 0.0]),
             "zmax": ([True, False, False], [1.0, 0.0, 0.0])}
    shape = (5, 4, 3)
    active, _ = biofvm.dirichlet_nodes(shape, faces, 3)
    np.testing.assert_array_equal(np.asarray(held), active)
    assert not active[0, 0, 0, 1] and active[0, 0, 1, 1] and active[1, 2, 0, 0]  # the edge rule, both ways
    traj = _run(sc)
    zero = [0.0, 0.0, 0.0]
    cells = [{"voxel": (2, 2, 1), "V": 2000.0, "S": [0.0, 0.5, 0.0], "T": [0.0, 2.0, 0.0], "U": [0.0, 0.0, 0.8],
              "E": [0.0, 50.0, 0.0]},
             {"voxel": (1, 1, 0), "V": 2000.0, "S": zero, "T": zero, "U": [2.0, 0.0, 0.0], "E": [0.0, 0.0, 20.0]},
             {"voxel": (3, 0, 2), "V": 2000.0, "S": zero, "T": zero, "U": [2.0, 0.0, 0.0], "E": [0.0, 0.0, 20.0]}]
    ref, _ = _reference(shape, 10.0, [400.0, 100.0, 1000.0], [0.2, 0.05, 0.0], [0.3, 0.0, 0.1], faces, cells, 0.1,
                        20, 5, 10.0**3)
    got = np.asarray(traj.fields)
    assert got.shape == ref.shape == (5, 3) + shape
    np.testing.assert_allclose(got[:, ~active], ref[:, ~active], rtol=1e-12, atol=1e-12)
    b = {k: np.asarray(v) for k, v in jc.budget(jc.simulate(sc.model, sc.state, t_end=sc.t_end, dt=sc.dt)[0]).items()}
    scale = b["initial"] + b["inflow"] + b["secreted"]
    assert np.all(np.abs(b["residual"]) <= 1e-12 * scale), b  # the impositions are booked as inflow/outflow
    assert b["inflow"][1] > 0 and b["outflow"][0] > 0


def test_voxel_layer_dirichlet_on_every_solver_matches_closed_form():
    """``Dirichlet(v, at="voxel")`` in 1D: the first voxel held at v, no-flux beyond it and at the far end:
    c = v cosh((L − x)/λ)/cosh((L − x₀)/λ) with x₀ the held voxel's centre, second order in h for
    steady_state, implicit and explicit. lod imposes the value around its sweeps as BioFVM does, so its
    steady state is off by O(dt) (measured 12 % at dt·D/h² = 0.8): first order, as BioFVM's."""
    D, k, v, L = 10.0, 0.01, 2.0, 100.0
    lam = np.sqrt(D / k)
    errs = []
    for n in (20, 40):
        grid = jc.Grid((n,), L / n)
        x = grid.centers(0)
        exact = v * np.cosh((L - x) / lam) / np.cosh((L - x[0]) / lam)
        sub = jc.Substrate("s", D, k, boundary={"x-": jc.Dirichlet(v, at="voxel")})
        errs.append(np.max(np.abs(np.asarray(jc.steady_state(jc.Model(grid, [sub])))[0] / exact - 1)))
        for solver, dt in (("implicit", 2.0), ("explicit", 0.5)):
            model = jc.Model(grid, [sub], solver=solver)
            state, _ = jc.simulate(model, model.init(), t_end=3000.0, dt=dt)
            c = np.asarray(state.fields[0])
            assert c[0] == v
            assert np.max(np.abs(c / exact - 1)) < 0.5 * (L / n / lam) ** 2 + 1e-6, solver
    assert np.all(np.array(errs) <= 0.5 * (L / np.array([20, 40]) / lam) ** 2)
    assert 3.5 < errs[0] / errs[1] < 4.5  # second order
    grid = jc.Grid((40,), L / 40)
    x = grid.centers(0)
    exact = v * np.cosh((L - x) / lam) / np.cosh((L - x[0]) / lam)
    model = jc.Model(grid, [jc.Substrate("s", D, k, boundary={"x-": jc.Dirichlet(v, at="voxel")})], solver="lod")
    lod = []
    for dt in (0.4, 0.04):
        state, _ = jc.simulate(model, model.init(), t_end=2000.0, dt=dt)
        lod.append(np.max(np.abs(np.asarray(state.fields[0]) / exact - 1)))
    assert 8.0 < lod[0] / lod[1] < 11.0, lod  # first order in dt
    assert lod[1] < 0.01, lod


def test_held_at_start_false_books_the_first_imposition():
    """Held voxels that start off their value are set in the first step, on every solver, and the budget
    books the jump: the residual stays at round-off."""
    grid = jc.Grid((8, 6), 10.0)
    sub = jc.Substrate("s", 20.0, 0.01, boundary={"x-": jc.Dirichlet(1.0, at="voxel"), "y+": jc.Dirichlet(0.0)})
    for solver in ("implicit", "explicit", "lod"):
        model = jc.Model(grid, [sub], solver=solver)
        state0 = model.init(fields=np.full((1, 8, 6), 0.25), held_at_start=False)
        assert float(state0.fields[0, 0, 0]) == 0.25
        state, _ = jc.simulate(model, state0, t_end=5.0, dt=1.0)
        assert np.all(np.asarray(state.fields[0, 0]) == 1.0), solver
        b = {k: float(v[0]) for k, v in jc.budget(state).items()}
        assert abs(b["residual"]) <= 1e-13 * (b["initial"] + b["inflow"]), (solver, b)
        assert b["inflow"] >= 0.75 * 6 * 100.0  # at least the first imposition's jump, 0.75 × 6 voxels × 100 µm²


def test_toml_translation_runs_and_overrides_apply(tmp_path):
    """The translation kept as the scenario's text is a scenario itself (same checked configuration);
    ``--set`` keys are the TOML schema's."""
    sc = jc.load_scenario(SETTINGS_2D)
    f = tmp_path / "translated.toml"
    f.write_text(sc.text)
    again = jc.load_scenario(f)
    assert again.fingerprint() == sc.fingerprint()
    short = jc.scenario.load(SETTINGS_2D, ["run.t_end=60"])
    assert short.t_end == 60.0 and short.save_every == 60.0


def test_cli_runs_a_physicell_file_and_writes_physicell_mat_files(tmp_path, capsys):
    """``jaxcell run PhysiCell_settings.xml``: Zarr and figures as for any scenario, plus PhysiCell's
    microenvironment .mat files (read here byte by byte, as MATLAB Level 4) with the same numbers."""
    proj = tmp_path / "proj"
    shutil.copytree(DATA / "config", proj / "config")
    out = tmp_path / "out"
    rc = main(["run", str(proj / "config" / "PhysiCell_settings.xml"), "--out", str(out), "--no-figures"])
    assert rc == 0, capsys.readouterr().err
    mats = sorted((out / "physicell").glob("output*_microenvironment0.mat"))
    assert [m.name for m in mats] == [f"output{i:08d}_microenvironment0.mat" for i in range(4)]
    data = mats[-1].read_bytes()
    mopt, rows, cols, imagf, namlen = struct.unpack("<5I", data[:20])
    assert (mopt, rows, cols, imagf) == (0, 4 + 2, 24, 0)
    assert data[20:20 + namlen] == b"multiscale_microenvironment"
    m = np.frombuffer(data[20 + namlen:], "<f8").reshape(cols, rows).T
    xr = pytest.importorskip("xarray")
    fields = xr.open_zarr(out / "fields.zarr").concentration.values[-1]
    # column n is voxel n with x fastest: x = -50 + 20 i, y = -30 + 20 j, z = 0, V = 20³
    i, j = 4, 1
    n = i + 6 * j
    assert m[:4, n].tolist() == [30.0, -10.0, 0.0, 8000.0]
    np.testing.assert_allclose(m[4:, n], fields[:, i, j], rtol=1e-6)


def test_microenvironment_mat_layout_3d(tmp_path):
    """The writer alone: voxel order x fastest, then y, then z; one row per substrate after x, y, z, V."""
    fields = np.arange(2 * 3 * 2 * 2, dtype=float).reshape(2, 3, 2, 2)
    centers = [np.array([5.0, 15.0, 25.0]), np.array([-5.0, 5.0]), np.array([1.0, 2.0])]
    write_microenvironment_mat(tmp_path / "m.mat", centers, 1000.0, fields)
    data = (tmp_path / "m.mat").read_bytes()
    m = np.frombuffer(data[20 + 27:], "<f8").reshape(12, 6).T
    for n in range(12):
        i, j, k = n % 3, (n // 3) % 2, n // 6
        assert m[:4, n].tolist() == [centers[0][i], centers[1][j], centers[2][k], 1000.0]
        assert m[4:, n].tolist() == fields[:, i, j, k].tolist()


RULES = """// PhysiCell's CBHG rules, v3 (8 fields)
secretor,oxygen,decreases,chemokine secretion,0.5,15,2,0
bystander,chemokine,increases,chemokine uptake,3,0.2,1,0
bystander,oxygen,increases,chemokine secretion,4,5,1,0
secretor,pressure,decreases,cycle entry,0,1,4,0
default,oxygen,increases,migration speed,1,5,4,0
secretor,contact with bystander,decreases migration speed,0.01,0.1,10,0
// a comment in Latin-1: \xe9
"""


def _with_rules(text: str, dt_phenotype: str | None = None) -> str:
    text = text.replace("</cell_definitions>", "</cell_definitions><cell_rules><rulesets><ruleset protocol=\"CBHG\" "
                        "version=\"3.0\" format=\"csv\" enabled=\"true\"><folder>./config</folder><filename>"
                        "rules.csv</filename></ruleset></rulesets></cell_rules>")
    if dt_phenotype is not None:
        text = text.replace('<dt_phenotype units="min">6</dt_phenotype>',
                            f"<dt_phenotype>{dt_phenotype}</dt_phenotype>")
    return text


def test_rules_csv_on_secretion_and_uptake_match_biofvm_reference(tmp_path):
    """PhysiCell's rules CSV: a secretion rate repressed by oxygen and an uptake rate raised by the chemokine
    become jc.rules (Hill factors as Hypothesis_Rule combines them); with dt_phenotype = dt_diffusion PhysiCell
    re-evaluates them after every step's secretion, as jaxcell does: the reference does the same by hand."""
    f = _edit(tmp_path, "<dt_phenotype", "<dt_phenotype")
    f.write_text(_with_rules(f.read_text(), dt_phenotype="0.05"))
    (f.parent / "rules.csv").write_bytes(RULES.encode("latin-1"))
    with pytest.warns(UserWarning, match="rules jaxcell lacks"):
        sc = jc.load_scenario(f)
    assert sc.behaviour is not None and len(sc.behaviour.rules) == 4  # one per secretor volume, two bystander
    traj = _run(sc)
    zero2 = [0.0, 0.0]
    faces = {"xmin": ([True, True], [30.0, 0.5]), "xmax": ([True, False], [38.0, 0.0]),
             "ymax": ([True, False], [20.0, 0.0])}
    secretor = {"S": [0.0, 2.0], "T": [38.0, 1.5], "U": [10.0, 0.1], "E": [0.0, 30.0]}
    cells = [{"voxel": (1, 2), "V": 4000.0, **secretor}, {"voxel": (3, 1), "V": 3000.0, **secretor},
             {"voxel": (4, 3), "V": 2494.0, "S": zero2, "T": [0.0, 2.0], "U": [0.0, 0.5], "E": zero2},
             {"voxel": (0, 0), "V": 2494.0, "S": zero2, "T": [38.0, 0.0], "U": [10.0, 0.0], "E": zero2}]
    cells = [{**c, "S": list(c["S"]), "U": list(c["U"])} for c in cells]

    def hill(x, half, n):
        s = (x / half) ** n
        return s / (1 + s)

    shape, n_sub = (6, 4), 2
    rho = np.broadcast_to(np.array([10.0, 0.0]).reshape(2, 1, 1), (n_sub,) + shape).copy()
    active, value = biofvm.dirichlet_nodes(shape, faces, n_sub)
    frames = [rho.copy()]
    for n in range(1, 61):
        rho = biofvm.lod_step(rho, 0.05, 20.0, [6000.0, 300.0], [0.6, 0.06], active, value)
        rho = biofvm.secrete(rho, cells, 0.05, 20.0**3)
        for c in cells[:2]:  # secretors: chemokine secretion 2 -> 0.5 as oxygen rises past 15 mmHg
            c["S"][1] = 2.0 + (0.5 - 2.0) * hill(rho[(0, *c["voxel"])], 15.0, 2.0)
        cells[2]["U"][1] = 0.5 + (3.0 - 0.5) * hill(rho[(1, *cells[2]["voxel"])], 0.2, 1.0)
        # switched on from a rate of 0: the bystander secretes toward its target density 2
        cells[2]["S"][1] = 0.0 + (4.0 - 0.0) * hill(rho[(0, *cells[2]["voxel"])], 5.0, 1.0)
        if n % 20 == 0:
            frames.append(rho.copy())
    got, ref = np.asarray(traj.fields), np.asarray(frames)
    np.testing.assert_allclose(got[:, ~active], ref[:, ~active], rtol=1e-12, atol=1e-12)
    assert cells[0]["S"][1] < 1.5 and cells[2]["S"][1] > 2.0  # the repression and the switch-on did act


def _edit(tmp_path: Path, old: str, new: str, src: Path = SETTINGS_2D) -> Path:
    proj = tmp_path / "p"
    shutil.copytree(src.parent, proj / "config")
    f = proj / "config" / src.name
    for g in (f, proj / "config" / "cells.csv"):
        text = g.read_text()
        if old in text:
            g.write_text(text.replace(old, new, 1))
            return f
    raise AssertionError(f"{old!r} is in neither file")


@pytest.mark.parametrize("old,new,where,fix", [
    ("<time_units>min</time_units>", "<time_units>hour</time_units>", "overall/time_units", "min"),
    ("<space_units>micron</space_units>", "<space_units>mm</space_units>", "overall/space_units", "micron"),
    ("<x_max>60</x_max>", "<x_max>70</x_max>", "domain/x_max", "multiple of dx"),
    ("<dy>20</dy>", "<dy>10</dy>", "domain/dy", "cubic voxels"),
    ("<filename>cells.csv</filename>", "<filename>missing.csv</filename>", "initial_conditions/cell_positions",
     "enabled"),
    ('<substrate name="chemokine">', '<substrate name="IL-6">', "secretion/substrate[@name='IL-6']",
     "<variable> name"),
    ("<max_time units=\"min\">3</max_time>", "", "overall/max_time", "max_time"),
    ("<PhysiCell_settings version=\"devel-version\">", "<settings>", "", "PhysiCell_settings"),
    ('<interval units="min">1</interval>', '<interval units="min">0.0001</interval>', "save/full_data/interval",
     "raise the interval"),
    ("-30,10,0,secretor,", "-30,10,0,secretor,-5", "cells.csv: line 2, column volume", "µm³"),
])
def test_bad_input_is_one_line_naming_the_element_and_the_fix(tmp_path, old, new, where, fix):
    if old.startswith("<PhysiCell_settings"):
        f = _edit(tmp_path, old, new)
        f.write_text(f.read_text().replace("</PhysiCell_settings>", "</settings>"))
    else:
        f = _edit(tmp_path, old, new)
    with pytest.raises(ScenarioError) as e:
        jc.load_scenario(f)
    msg = str(e.value)
    assert "\n" not in msg and where in msg and fix in msg, msg


def test_not_xml_and_a_broken_cells_file_are_refused(tmp_path):
    f = tmp_path / "bad.xml"
    f.write_text("<PhysiCell_settings><domain>")
    with pytest.raises(ScenarioError, match="not valid XML"):
        jc.load_scenario(f)
    g = _edit(tmp_path, "<filename>cells.csv</filename>", "<filename>cells.csv</filename>")
    (g.parent / "cells.csv").write_text("x,y,z,type\n1,2\n")
    with pytest.raises(ScenarioError, match=r"cells.csv: line 2: expected x,y,z"):
        jc.load_scenario(g)


def test_what_jaxcell_does_not_simulate_is_one_warning_line(tmp_path):
    """Cycling, dying and moving cells, rules and the template's random cells: named in one warning."""
    f = _edit(tmp_path, '<rate start_index="0" end_index="0" fixed_duration="false">0.0</rate>',
              '<rate start_index="0" end_index="0" fixed_duration="false">0.001</rate>')
    text = f.read_text().replace("<options><enabled>false</enabled></options>", "<options><enabled>true</enabled>"
                                 "</options>").replace('<number_of_cells type="int" units="none">0',
                                                       '<number_of_cells type="int" units="none">5')
    f.write_text(_with_rules(text))
    (f.parent / "rules.csv").write_text(RULES)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        jc.load_scenario(f)
    msgs = [str(w.message) for w in rec if issubclass(w.category, UserWarning)]
    assert len(msgs) == 1 and "\n" not in msgs[0], msgs
    for part in ("cycle (division) of default, secretor, bystander", "motility of default, secretor",
                 "rules jaxcell lacks (signal pressure, migration speed)", "number_of_cells = 5",
                 "rules.csv line 7 (not a rule: 7 fields"):
        assert part in msgs[0], msgs[0]


def test_shipped_example_runs_as_shipped(tmp_path, capsys):
    """examples/physicell: runs through ``jaxcell run`` unchanged, names the tumour's cycle and death in its one
    warning line, writes a .mat per 5-min frame, holds the edge at 38 mmHg and closes the oxygen budget."""
    settings = Path(__file__).resolve().parent.parent / "examples" / "physicell" / "config" / "PhysiCell_settings.xml"
    out = tmp_path / "out"
    rc = main(["run", str(settings), "--out", str(out), "--no-figures"])
    err = capsys.readouterr().err
    assert rc == 0, err
    lines = [ln for ln in err.splitlines() if "warning" in ln]
    assert len(lines) == 1 and "cycle (division) of tumor, macrophage" in lines[0] and "death of" in lines[0]
    assert len(list((out / "physicell").glob("*.mat"))) == 7
    xr = pytest.importorskip("xarray")
    c = xr.open_zarr(out / "fields.zarr").concentration.values
    assert np.all(c[1:, 0, 0, :] == np.float32(38.0)) and np.all(c[1:, 0, :, -1] == np.float32(38.0))
    import json

    b = json.loads((out / "summary.json").read_text())["budget"]["oxygen"]
    assert abs(b["relative_residual"]) < 1e-4  # float32 over 3,000 steps
    assert 0 < c[-1, 0, 25, 25] < 38.0 and b["uptake"] > 0


def test_a_date_from_set_and_the_builtin_default_cell_are_handled(tmp_path):
    """``--set run.t_end=1979-05-27`` on an XML is one line (the TOML check refuses a date); a definition
    that sets no cycle or death inherits PhysiCell's built-in default cell's (Ki67 cycle, apoptosis),
    which the warning names."""
    with pytest.raises(ScenarioError, match="run.t_end: must be a number"):
        jc.scenario.load(SETTINGS_2D, ["run.t_end=1979-05-27"])
    f = _edit(tmp_path, '<cell_definition name="default" ID="0">', '<cell_definition name="default" ID="9">')
    text = f.read_text()
    start, end = text.index("<cycle"), text.index("</death>") + len("</death>")
    f.write_text(text[:start] + text[end:])
    with pytest.warns(UserWarning, match="cycle \\(division\\) of default, secretor, bystander; death of default"):
        jc.load_scenario(f)


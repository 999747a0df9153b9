"""The command line and scenario files end to end: outputs, bad input, resume, info."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxcell.cli import main
from jaxcell.scenario import ScenarioError, builtin_scenarios, load

xr = pytest.importorskip("xarray")
pytest.importorskip("zarr")
pytest.importorskip("matplotlib")

SMALL = """
title = "small test scenario"
[grid]
shape = [12, 10, 6]
spacing = 10.0
[[substrates]]
name = "A"
diffusion = 10.0
decay = 1.0e-3
[[substrates]]
name = "B"
diffusion = 5.0
decay = 1.0e-3
boundary = { "x-" = { flux = 0.01 }, "y-" = "noflux", "x+" = { dirichlet = 0.0 } }
[vessel]
shape = "box"
lo = [0.0, 0.0, 0.0]
hi = [20.0, 100.0, 60.0]
value = { "A" = 0.05 }
[[cells]]
type = "producer"
placement = "sphere"
count = 3
center = [60.0, 50.0, 30.0]
radius = 20.0
secretion = { "A" = 20.0 }
[[cells]]
type = "responder"
placement = "random"
count = 40
receptors = { "A" = { total = 500.0, kon = 0.0515, koff = 2.3e-4, kint = 1.1e-3 } }
activation = { signal = "A", bound = 5.0 }
[[cells]]
type = "reader"
placement = "csv"
file = "readers.csv"
uptake = { "B" = 1.0 }
activation = { signal = "B", concentration = 1e-4 }
[[responses]]
target = "B"
signal = "A"
max = 5.0
K = 10.0
n = 2.0
cell_type = "responder"
[run]
dt = 5.0
t_end = 60.0
save_every = 15.0
seed = 3
"""


def write_small(folder: Path, text: str = SMALL, csv: str = "x,y,z\n55,45,25\n65.5,55,35\n") -> Path:
    (folder / "readers.csv").write_text(csv)
    path = folder / "small.toml"
    path.write_text(text)
    return path


def test_default_run_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    # one step per chunk, like test_builtin_scenarios_parse_and_run: the compiled step is shared
    rc = main(["run", "--out", str(out), "--set", "run.t_end=10", "--set", "run.save_every=5"])
    assert rc == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["activation.png", "field_midplane.png", "fields.zarr",
                                                     "radial_profile.png", "summary.json"]
    assert not (tmp_path / "out.partial").exists()
    ds = xr.open_zarr(out / "fields.zarr")
    assert ds.concentration.dims == ("time", "substrate", "x", "y", "z")
    assert ds.concentration.shape == (3, 1, 32, 32, 16)
    assert ds.concentration.attrs["units"] == "amount/µm^3"
    assert ds.x.attrs["units"] == "µm" and ds.time.attrs["units"] == "s"
    np.testing.assert_allclose(ds.time.values, [0.0, 5.0, 10.0])
    np.testing.assert_allclose(ds.x.values[:2], [5.0, 15.0])
    assert list(ds.substrate.values) == ["IL-2"]
    assert ds.bound_receptors.dims == ("time", "cell", "substrate")
    assert ds.position.dims == ("cell", "axis") and ds.position.attrs["units"] == "µm"
    assert ds.activated.dims == ("time", "cell")
    assert ds.attrs["seed"] == 0 and ds.attrs["jaxcell_version"]
    cfg = json.loads(ds.attrs["scenario"])
    assert cfg["run"]["t_end"] == 10.0 and cfg["substrates"][0]["diffusion"] == 10.0
    summary = json.loads((out / "summary.json").read_text())
    b = summary["budget"]["IL-2"]
    assert b["secreted"] == pytest.approx(10 * 50.0 * 10.0, rel=1e-9)
    assert abs(b["residual"]) < 1e-9 * b["secreted"]
    assert summary["steps"] == 2 and summary["frames"] == 3
    assert 0.0 <= summary["fraction_responders_activated"] <= 1.0
    # the last frame in the store is the final state in the summary
    assert float(ds.concentration.isel(time=-1).max()) == pytest.approx(summary["max_concentration"]["IL-2"])
    # a second run replaces the earlier output folder
    assert main(["run", "--out", str(out), "--set", "run.t_end=5", "--set", "run.save_every=5", "--no-figures"]) == 0
    assert xr.open_zarr(out / "fields.zarr").sizes["time"] == 2
    assert not (out / "activation.png").exists()


def test_small_scenario_every_feature(tmp_path: Path) -> None:
    path = write_small(tmp_path)
    sc = load(path)
    assert sc.n_cells == 3 + 40 + 2 and sc.types == ("producer", "responder", "reader")
    assert sc.model.dirichlet_mask is not None and int(sc.model.dirichlet_mask.sum()) == 2 * 10 * 6
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out)]) == 0
    ds = xr.open_zarr(out / "fields.zarr")
    assert list(ds.substrate.values) == ["A", "B"]
    assert ds.concentration.shape == (5, 2, 12, 10, 6)
    np.testing.assert_allclose(ds.position.values[-2:], [[55, 45, 25], [65.5, 55, 35]], rtol=1e-6)
    # the vessel is held; responders secrete B through the response
    np.testing.assert_allclose(ds.concentration.isel(time=-1, substrate=0, x=0).values, 0.05, rtol=1e-6)
    sec_b = ds.secretion.isel(time=-1, substrate=1).values[3:43]
    assert sec_b.max() > 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["activation"]["by_type"]) == {"responder", "reader"}


@pytest.mark.parametrize("name", sorted(builtin_scenarios()))
def test_builtin_scenarios_parse_and_run(name: str, tmp_path: Path) -> None:
    sc = load(name)
    assert sc.config["title"]
    dt = sc.run.dt
    out = tmp_path / name
    figs = [] if name == "morphogen_gradient" else ["--no-figures"]  # 2D figures; 3D ones are tested above
    rc = main(["run", name, "--out", str(out), "--set", f"run.t_end={2 * dt}", "--set", f"run.save_every={dt}", *figs])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2
    for nm, b in summary["budget"].items():
        assert b["relative_residual"] < 1e-6, nm


def test_list_and_info(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--list"]) == 0
    listed = capsys.readouterr().out
    for name in ("paracrine_niche", "morphogen_gradient", "relay", "vessel"):
        assert name in listed
    assert main(["info"]) == 0
    info = capsys.readouterr().out
    for word in ("jaxcell", "jaxlib", "numpy", "optax", "devices", "default float"):
        assert word in info


BAD = {
    "typo in a key": ("diffusion = 10.0", "difusion = 10.0", "substrates[0].difusion", "did you mean 'diffusion'"),
    "negative rate": ('secretion = { "A" = 20.0 }', 'secretion = { "A" = -20.0 }', "cells[0].secretion.A", ">= 0"),
    "unknown substrate": ('secretion = { "A" = 20.0 }', 'secretion = { "C" = 20.0 }', "cells[0].secretion.C",
                          "unknown substrate"),
    "wrong type": ("count = 40", 'count = "forty"', "cells[1].count", "must be an integer"),
    "unknown table": ("[run]", "[runn]", "runn", "did you mean 'run'"),
    "bad boundary": ('"y-" = "noflux"', '"y-" = "periodic"', 'substrates[1].boundary."y-"', "whole axis"),
    "vessel with periodic axis": ('"y-" = "noflux"', '"y" = "periodic"', "vessel", "not supported"),
    "bad solver": ("dt = 5.0", 'dt = 5.0\nsolver = "implicitt"', "run.solver", "implicit"),
    "cells outside": ("center = [60.0, 50.0, 30.0]", "center = [60.0, 50.0, 300.0]", "cells[0].radius",
                      "leaves the domain"),
    "response type": ('cell_type = "responder"', 'cell_type = "responders"', "responses[0].cell_type",
                      "did you mean 'responder'"),
    "bad TOML": ("[run]", "[run", "", "not valid TOML"),
    "negative flux": ('"y-" = "noflux"', '"y-" = { flux = -1.0 }', 'substrates[1].boundary."y-".flux',
                      "dirichlet = 0.0"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_scenario_one_line_no_output(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old, new, key, words = BAD[case]
    assert old in SMALL
    path = write_small(tmp_path, SMALL.replace(old, new, 1))
    out = tmp_path / "out"
    rc = main(["run", str(path), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1, err
    assert str(path) in err and key in err and words in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["readers.csv", "small.toml"]


@pytest.mark.parametrize("csv,words", [("x,y\n1,2\n", "missing column(s) z"),
                                       ("x,y,z\n1,2,abc\n", "line 2, column z"),
                                       ("x,y,z\n1,2,3\n1,2,999\n", "line 3"),
                                       ("", "empty")])
def test_bad_data_file(csv: str, words: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_small(tmp_path, csv=csv)
    rc = main(["run", str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    # the words must be in the message, not merely in tmp_path's name (which holds the test id)
    assert "readers.csv" in err and words in err.split("readers.csv", 1)[1], err
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_missing_file_and_bad_override(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(tmp_path / "nope.toml"), "--out", str(tmp_path / "o")]) == 2
    assert "no such scenario file" in capsys.readouterr().err
    assert main(["run", "paracrine_nich", "--out", str(tmp_path / "o")]) == 2
    assert "did you mean 'paracrine_niche'" in capsys.readouterr().err
    assert main(["run", "--set", "run.dt=-1", "--out", str(tmp_path / "o")]) == 2
    assert "run.dt: must be > 0" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_refuses_to_replace_foreign_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    path = write_small(tmp_path)
    assert main(["run", str(path), "--out", str(out)]) == 2
    assert "not a jaxcell output folder" in capsys.readouterr().err
    assert (out / "thesis.tex").read_text() == "precious"


def test_killed_and_resumed_equals_uninterrupted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_small(tmp_path)
    ref, out = tmp_path / "ref", tmp_path / "out"
    assert main(["run", str(path), "--out", str(ref), "--no-figures"]) == 0
    assert main(["run", str(path), "--out", str(out), "--stop-after-chunks", "2"]) == 3
    assert "--resume" in capsys.readouterr().err
    assert not out.exists() and (tmp_path / "out.partial" / "state.npz").exists()
    # resuming twice: the second interruption picks up where the first left off
    assert main(["run", str(path), "--out", str(out), "--resume", "--stop-after-chunks", "1"]) == 3
    assert main(["run", str(path), "--out", str(out), "--resume", "--no-figures"]) == 0
    assert not (tmp_path / "out.partial").exists()
    a, b = xr.open_zarr(ref / "fields.zarr"), xr.open_zarr(out / "fields.zarr")
    for var in ("concentration", "bound_receptors", "free_receptors", "secretion", "activated"):
        np.testing.assert_allclose(b[var].values, a[var].values, rtol=1e-12, atol=0, err_msg=var)
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (ref, out))
    assert sb["resumed"] and not sa["resumed"]
    assert sb["budget"] == sa["budget"]
    # resuming with a changed scenario is refused, not silently mixed
    assert main(["run", str(path), "--out", str(out), "--stop-after-chunks", "1"]) == 3
    capsys.readouterr()
    assert main(["run", str(path), "--out", str(out), "--resume", "--set", "run.seed=4"]) == 2
    assert "different scenario" in capsys.readouterr().err


def test_scenario_error_is_one_line() -> None:
    with pytest.raises(ScenarioError) as e:
        load("paracrine_niche", ["cells[1].receptors.IL-2.kon=-1"])
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("builtin:paracrine_niche: ") and 'receptors."IL-2".kon' in msg


def test_fit_subcommand_dispatch(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    calls = []
    fake = types.ModuleType("jaxcell.fit_cli")
    monkeypatch.setitem(sys.modules, "jaxcell.fit_cli", fake)
    assert main(["fit", str(tmp_path / "spec.toml")]) == 2
    assert "run_fit_cli is missing" in capsys.readouterr().err
    fake.run_fit_cli = lambda spec, out: calls.append((spec, out)) or 0
    assert main(["fit", "spec.toml", "--out", "d"]) == 0
    assert calls == [("spec.toml", "d")]


def test_entry_point_subprocess(tmp_path: Path) -> None:
    """The installed-style invocation: a bad file gives one line on stderr, no traceback."""
    path = write_small(tmp_path, SMALL.replace("count = 40", "count = -4"))
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    p = subprocess.run([sys.executable, "-m", "jaxcell.cli", "run", str(path), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "Traceback" not in p.stderr
    assert "cells[1].count" in p.stderr and ">= 0" in p.stderr
    assert not (tmp_path / "o").exists()

"""Running scenarios into output folders: the Zarr store, summary.json, figures and --resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scenario_cases import write_small

from jaxcell.io import FIGURES, OutputError, StopRequested, run_scenario
from jaxcell.scenario import builtin_scenarios, load

xr = pytest.importorskip("xarray")
pytest.importorskip("zarr")
pytest.importorskip("matplotlib")


def quiet(_: str) -> None:
    """A ``log`` that drops run_scenario's one-line notes."""


def test_default_scenario_outputs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    # one step per chunk, like test_builtin_scenarios_parse_and_run: the compiled step is shared
    summary = run_scenario(load(None, ["run.t_end=10", "run.save_every=5"]), out, progress=False, log=quiet)
    assert sorted(p.name for p in out.iterdir()) == sorted([*FIGURES, "fields.zarr", "summary.json"])
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
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary))
    b = summary["budget"]["IL-2"]
    assert b["secreted"] == pytest.approx(10 * 50.0 * 10.0, rel=1e-9)
    assert abs(b["residual"]) < 1e-9 * b["secreted"]
    assert summary["steps"] == 2 and summary["frames"] == 3
    assert 0.0 <= summary["fraction_responders_activated"] <= 1.0
    # the last frame in the store is the final state in the summary
    assert float(ds.concentration.isel(time=-1).max()) == pytest.approx(summary["max_concentration"]["IL-2"])
    # a second run replaces the earlier output folder
    run_scenario(load(None, ["run.t_end=5", "run.save_every=5"]), out, figures=False, progress=False, log=quiet)
    assert xr.open_zarr(out / "fields.zarr").sizes["time"] == 2
    assert not (out / "activation.png").exists()


def test_small_scenario_every_feature(tmp_path: Path) -> None:
    sc = load(write_small(tmp_path))
    out = tmp_path / "out"
    summary = run_scenario(sc, out, progress=False, log=quiet)
    ds = xr.open_zarr(out / "fields.zarr")
    assert list(ds.substrate.values) == ["A", "B"]
    assert ds.concentration.shape == (5, 2, 12, 10, 6)
    np.testing.assert_allclose(ds.position.values[-2:], [[55, 45, 25], [65.5, 55, 35]], rtol=1e-6)
    # the vessel is held; responders secrete B through the response
    np.testing.assert_allclose(ds.concentration.isel(time=-1, substrate=0, x=0).values, 0.05, rtol=1e-6)
    sec_b = ds.secretion.isel(time=-1, substrate=1).values[3:43]
    assert sec_b.max() > 0
    assert set(summary["activation"]["by_type"]) == {"responder", "reader"}
    for name in FIGURES:
        assert (out / name).stat().st_size > 1000, name


@pytest.mark.parametrize("name", sorted(builtin_scenarios()))
def test_builtin_scenarios_parse_and_run(name: str, tmp_path: Path) -> None:
    sc = load(name)
    assert sc.config["title"]
    dt = sc.run.dt
    sc = load(name, [f"run.t_end={2 * dt}", f"run.save_every={dt}"])
    figures = name == "morphogen_gradient"  # 2D figures; 3D ones are tested above
    summary = run_scenario(sc, tmp_path / name, figures=figures, progress=False, log=quiet)
    assert summary["steps"] == 2
    for nm, b in summary["budget"].items():
        assert b["relative_residual"] < 1e-6, nm


def test_refuses_to_replace_foreign_folder(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    sc = load(write_small(tmp_path))
    with pytest.raises(OutputError, match="not a jaxcell output folder"):
        run_scenario(sc, out, log=quiet)
    assert (out / "thesis.tex").read_text() == "precious"


def test_killed_and_resumed_equals_uninterrupted(tmp_path: Path) -> None:
    sc = load(write_small(tmp_path))
    ref, out = tmp_path / "ref", tmp_path / "out"
    run_scenario(sc, ref, figures=False, progress=False, log=quiet)
    with pytest.raises(StopRequested, match="--resume"):
        run_scenario(sc, out, stop_after_chunks=2, progress=False, log=quiet)
    assert not out.exists() and (tmp_path / "out.partial" / "state.npz").exists()
    # resuming twice: the second interruption picks up where the first left off
    with pytest.raises(StopRequested):
        run_scenario(sc, out, resume=True, stop_after_chunks=1, progress=False, log=quiet)
    run_scenario(sc, out, resume=True, figures=False, progress=False, log=quiet)
    assert not (tmp_path / "out.partial").exists()
    a, b = xr.open_zarr(ref / "fields.zarr"), xr.open_zarr(out / "fields.zarr")
    for var in ("concentration", "bound_receptors", "free_receptors", "secretion", "activated"):
        np.testing.assert_allclose(b[var].values, a[var].values, rtol=1e-12, atol=0, err_msg=var)
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (ref, out))
    assert sb["resumed"] and not sa["resumed"]
    assert sb["budget"] == sa["budget"]
    # resuming with a changed scenario is refused, not silently mixed
    with pytest.raises(StopRequested):
        run_scenario(sc, out, stop_after_chunks=1, progress=False, log=quiet)
    changed = load(write_small(tmp_path), ["run.seed=4"])
    with pytest.raises(OutputError, match="different scenario"):
        run_scenario(changed, out, resume=True, progress=False, log=quiet)


def test_living_cells_tracks_resume_bitwise(tmp_path: Path) -> None:
    """[[rules]] run inside the loop: tracks and live slots in the Zarr store, cells.png, the
    budget closes with deaths and divisions, and a killed-and-resumed run equals the whole one bit for bit."""
    from scenario_cases import LIVING

    path = tmp_path / "living.toml"
    path.write_text(LIVING)
    sc = load(path)
    ref, out = tmp_path / "ref", tmp_path / "out"
    summary = run_scenario(sc, ref, progress=False, log=quiet)
    assert (ref / "cells.png").stat().st_size > 1000
    ds = xr.open_zarr(ref / "fields.zarr")
    assert ds.track.dims == ("time", "cell", "axis") and ds.track.shape == (5, 120, 2)
    alive = ds.alive.values
    assert alive[0].sum() == 43 and alive[-1].sum() != 43  # cells divided or died
    # only movers divide: every slot filled during the run holds a mover (free slots start typed 0)
    born = alive[-1] & ~alive[0]
    assert born.any() and (ds.type_in_slot.values[-1][born] == 1).all()
    # live movers moved; the sources (no speed) stayed where they were placed
    moved = np.linalg.norm(ds.track.values[-1] - ds.track.values[0], axis=-1)
    src = (ds.cell_type.values == 0) & alive[0]  # free slots are typed 0 too until a daughter fills them
    assert np.all(moved[src] == 0) and np.median(moved[~src & alive[0] & alive[-1]]) > 1.0
    for nm, b in summary["budget"].items():
        assert b["relative_residual"] < 1e-6, nm
    with pytest.raises(StopRequested):
        run_scenario(sc, out, stop_after_chunks=2, progress=False, log=quiet)
    run_scenario(sc, out, resume=True, figures=False, progress=False, log=quiet)
    b = xr.open_zarr(out / "fields.zarr")
    for var in ("concentration", "track", "alive", "type_in_slot", "secretion", "uptake"):
        np.testing.assert_array_equal(b[var].values, ds[var].values, err_msg=var)

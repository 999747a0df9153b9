"""What the figures compare with and how they name things: the model's own steady state, the scenario's
units and state names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import jaxcell as jc
from jaxcell.io import _frame, _steady_reference, run_scenario
from jaxcell.scenario import load

pytest.importorskip("matplotlib")


LINEAR = """
[grid]
shape = [24, 20]
spacing = 5.0
[[substrates]]
name = "S"
diffusion = 20.0
decay = 2.0e-3
[[cells]]
type = "source"
placement = "random"
count = 3
lo = [20.0, 20.0]
hi = [100.0, 80.0]
secretion = { "S" = 2.0 }
[[cells]]
type = "sink"
placement = "random"
count = 30
uptake = { "S" = 1.0 }
[run]
dt = 10.0
t_end = 20.0
save_every = 10.0
"""


def test_reference_curve_is_the_steady_state_of_the_same_model(tmp_path: Path) -> None:
    # a linear model in a no-flux box: the frozen-rate model is the model itself
    (tmp_path / "lin.toml").write_text(LINEAR)
    sc = load(tmp_path / "lin.toml")
    state = sc.init_state()
    ref = _steady_reference(sc, _frame(sc, state))
    oracle = np.asarray(jc.steady_state(sc.model, sc.cells))
    np.testing.assert_allclose(ref, oracle, rtol=1e-9, atol=0)
    # and a long implicit run of that model reaches it (the figure's claim)
    end, _ = jc.simulate(sc.model, state, t_end=2e4, dt=5.0)  # splitting error O(dt)
    np.testing.assert_allclose(np.asarray(end.fields), ref, rtol=1e-3, atol=1e-6 * float(ref.max()))


def test_receptors_become_their_quasi_steady_clearance() -> None:
    sc = load("paracrine_niche", ["grid.shape=[16,16,8]", "grid.spacing=20.0"])
    fr = _frame(sc, sc.init_state())
    ref = _steady_reference(sc, fr)
    assert ref is not None and np.all(np.isfinite(ref)) and ref.min() >= 0
    # receptors clear: the reference lies below the steady state of secretion and decay alone
    free = np.asarray(jc.steady_state(sc.model.__class__(sc.grid, sc.model.substrates),
                                      jc.Cells(sc.cells.position, secretion=sc.cells.secretion)))
    assert ref.sum() < free.sum()


def test_vessel_names_oxygen_in_mmhg_and_hypoxic_cells(tmp_path: Path) -> None:
    sc = load("vessel", ["run.t_end=60", "run.save_every=60"])
    assert sc.units(0) == "mmHg" and sc.state_name(0) == "hypoxic"
    assert load("relay").state_name(1) == "activated" and load("relay").units(0) == "amount/µm^3"
    run_scenario(sc, tmp_path / "o", progress=False, log=lambda _: None)
    for name in ("field_midplane.png", "radial_profile.png", "activation.png"):
        assert (tmp_path / "o" / name).stat().st_size > 10_000

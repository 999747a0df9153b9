"""Scenario files: reading, checking, and errors that name the file, the key and the fix."""

from __future__ import annotations

import re
from pathlib import Path

import jax
import numpy as np
import pytest
from scenario_cases import BAD, SMALL, write_small

import jaxcell as jc
from jaxcell.scenario import ScenarioError, load


def test_small_scenario_every_feature(tmp_path: Path) -> None:
    sc = load(write_small(tmp_path))
    assert sc.n_cells == 3 + 40 + 2 and sc.types == ("producer", "responder", "reader")
    assert sc.model.dirichlet_mask is not None and int(sc.model.dirichlet_mask.sum()) == 2 * 10 * 6
    assert sc.model.names == ("A", "B")
    np.testing.assert_allclose(np.asarray(sc.cells.position)[-2:], [[55, 45, 25], [65.5, 55, 35]], rtol=1e-6)
    b = sc.model.substrates[1].boundary
    assert isinstance(b["x-"], jc.Flux) and float(b["x-"].value) == pytest.approx(0.01)
    assert isinstance(b["x+"], jc.Dirichlet) and float(b["x+"].value) == 0.0
    assert len(sc.model.responses) == 1 and sc.model.responses[0].cell_type == 1


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_scenario_names_key_and_fix(case: str, tmp_path: Path) -> None:
    old, new, key, words = BAD[case]
    assert old in SMALL
    path = write_small(tmp_path, SMALL.replace(old, new, 1))
    with pytest.raises(ScenarioError) as e:
        load(path)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}: ") and key in msg and words in msg, msg
    assert e.value.key == key


def test_robin_face(tmp_path: Path) -> None:
    """``{ robin = { permeability, outside } }`` builds jc.Robin(permeability, outside) (µm/s, amount/µm^ndim)."""
    face = '"y-" = { robin = { permeability = 0.5, outside = 0.25 } }'
    sc = load(write_small(tmp_path, SMALL.replace('"y-" = "noflux"', face, 1)))
    got = sc.model.substrates[1].boundary["y-"]
    want = jc.Robin(0.5, 0.25)
    assert type(got) is type(want)
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want), strict=True):
        assert float(a) == float(b)
    assert sc.config["substrates"][1]["boundary"]["y-"] == {"robin": {"permeability": 0.5, "outside": 0.25}}
    # outside defaults to 0 (a sink); an axis name sets both faces
    sc = load(write_small(tmp_path, SMALL.replace('"y-" = "noflux"', '"y" = { robin = { permeability = 2.0 } }')))
    for f in ("y-", "y+"):
        b = sc.model.substrates[1].boundary[f]
        assert isinstance(b, jc.Robin) and float(b.permeability) == 2.0 and float(b.outside) == 0.0


@pytest.mark.parametrize("spec,key,words", [
    ('{ robin = { permeability = -1.0 } }', '"y-".robin', "Robin permeability must be >= 0"),
    ('{ robin = { permeability = "fast" } }', '"y-".robin.permeability', "must be a number (µm/s)"),
    ('{ robin = { permeability = 1.0, outside = -1.0 } }', '"y-".robin', "Robin outside must be >= 0"),
    ('{ robin = { outside = 1.0 } }', '"y-".robin.permeability', "missing"),
    ('{ robin = { permeability = 1.0, outsde = 1.0 } }', '"y-".robin.outsde', "did you mean 'outside'"),
    ('{ robin = 1.0 }', '"y-".robin', "must be a table"),
])
def test_bad_robin_face(spec: str, key: str, words: str, tmp_path: Path) -> None:
    path = write_small(tmp_path, SMALL.replace('"y-" = "noflux"', f'"y-" = {spec}', 1))
    with pytest.raises(ScenarioError) as e:
        load(path)
    msg = str(e.value)
    assert f"substrates[1].boundary.{key}" in msg and words in msg, msg


def test_solver_refusals_name_the_table(tmp_path: Path) -> None:
    """Model and its solver own the rules; the message names the table that breaks them."""
    # the spectral solver cannot hold the vessel's voxels: the vessel is named
    spectral = SMALL.replace("seed = 3", 'seed = 3\nsolver = "spectral"')
    no_dirichlet = spectral.replace(', "x+" = { dirichlet = 0.0 }', "", 1)
    with pytest.raises(ScenarioError, match=r"small\.toml: vessel: solver='spectral' cannot hold"):
        load(write_small(tmp_path, no_dirichlet))
    # ... and cannot take a Dirichlet face even without a vessel: the run's solver is named
    with pytest.raises(ScenarioError, match=r"small\.toml: run: solver='spectral' handles no-flux") as e:
        load(write_small(tmp_path, spectral))
    assert "run.solver" in str(e.value)
    # faces the grid lacks are refused by Substrate, at the substrate's boundary
    flat = SMALL.replace("shape = [12, 10, 6]", "shape = [12, 10]")
    with pytest.raises(ScenarioError, match=r"substrates\[1\]\.boundary: Substrate 'B' names faces \['z-'\]"):
        load(write_small(tmp_path, flat.replace('"y-" = "noflux"', '"z-" = "noflux"')))


def test_bad_override_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="no such scenario file"):
        load(tmp_path / "nope.toml")
    with pytest.raises(ScenarioError, match="did you mean 'paracrine_niche'"):
        load("paracrine_nich")
    with pytest.raises(ScenarioError, match="run.dt: must be > 0"):
        load(None, ["run.dt=-1"])
    with pytest.raises(ScenarioError, match="expected KEY=VALUE"):
        load(None, ["run.dt"])


@pytest.mark.parametrize("csv,words", [("x,y\n1,2\n", "missing column(s) z"),
                                       ("x,y,z\n1,2,abc\n", "line 2, column z"),
                                       ("x,y,z\n1,2,3\n1,2,999\n", "line 3"),
                                       ("", "empty")])
def test_bad_data_file(csv: str, words: str, tmp_path: Path) -> None:
    path = write_small(tmp_path, csv=csv)
    with pytest.raises(ScenarioError) as e:
        load(path)
    msg = str(e.value)
    assert "\n" not in msg
    # the words must be in the message, not merely in tmp_path's name (which holds the test id)
    assert "readers.csv" in msg and words in msg.split("readers.csv", 1)[1], msg


def test_scenario_error_is_one_line() -> None:
    with pytest.raises(ScenarioError) as e:
        load("paracrine_niche", ["cells[1].receptors.IL-2.kon=-1"])
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("builtin:paracrine_niche: ") and 'receptors."IL-2".kon' in msg


def test_checker_maps_a_constructor_error_to_the_key() -> None:
    """Checker.at turns a constructor's ValueError into one line naming the file, the key and the fix."""
    from jaxcell import scenario

    c = scenario.Checker("f.toml")
    want = r"^f\.toml: grid\.spacing: spacing must be > 0 µm.*; give a positive spacing$"
    with pytest.raises(ScenarioError, match=want), c.at("grid.spacing", "give a positive spacing"):
        jc.Grid((4,), -1.0)


def test_rules_and_base_values_become_a_behaviour(tmp_path: Path) -> None:
    """[[rules]] give jc.Rule objects; base = per population lands in Cells.base; capacity adds free slots."""
    from scenario_cases import LIVING

    path = tmp_path / "living.toml"
    path.write_text(LIVING)
    sc = load(path)
    assert isinstance(sc.behaviour, jc.Rules)
    r0, r1 = sc.behaviour.rules
    assert (r0.behaviour, r0.direction, float(r0.max), float(r0.K), r0.cell_type) == \
        ("chemotaxis:GF", "up", 0.05, 0.1, 1)
    assert (r1.behaviour, float(r1.n), float(r1.max)) == ("division", 2.0, 5e-3)
    cells = sc.cells
    assert cells.n == 120 and int(np.sum(np.asarray(cells.alive))) == 43
    is_mover = np.asarray(cells.type) == 1
    alive = np.asarray(cells.alive)
    np.testing.assert_array_equal(np.asarray(cells.base["speed"])[alive], np.where(is_mover[alive], 0.05, 0.0))
    np.testing.assert_array_equal(np.asarray(cells.base["death"])[alive], np.where(is_mover[alive], 2e-4, 0.0))
    np.testing.assert_array_equal(np.asarray(cells.base["division"])[alive], np.where(is_mover[alive], 1e-3, 0.0))
    # the state records the remaining base values (division from 0, chemotaxis from 0) before any step
    state = sc.init_state()
    assert set(state.cells.base) == {"speed", "death", "division", "chemotaxis:GF"}


EXTRA_DIVISION = '[[rules]]\nsignal = "GF"\nbehaviour = "division"\nmax = 9.0e-3\nK = 0.2\n[run]'


@pytest.mark.parametrize("old, new, key", [
    ('behaviour = "chemotaxis:GF"', 'behaviour = "chemotaxis:O2"', "rules[0].behaviour"),
    ('behaviour = "chemotaxis:GF"', 'behaviour = "growth"', "rules[0]"),
    ('cell_type = "mover"\n[run]', 'cell_type = "movers"\n[run]', "rules[1].cell_type"),
    ("capacity = 120", "capacity = 10", "run.capacity"),
    ("death = 2.0e-4,", "wobble = 1.0,", "cells[1].base.wobble"),
    ("speed = 0.05,", "speed = -0.05,", "cells[1].base.speed"),
    ("capacity = 120", "capacity = 1000000000", "run.capacity"),
    ("[run]", EXTRA_DIVISION, "rules"),  # two up-rules of division with different max
])
def test_bad_rules_name_their_key(old: str, new: str, key: str, tmp_path: Path) -> None:
    from scenario_cases import LIVING

    assert old in LIVING
    path = tmp_path / "bad.toml"
    path.write_text(LIVING.replace(old, new))
    with pytest.raises(ScenarioError) as e:
        load(path)
    msg = str(e.value)
    assert "\n" not in msg and f": {key}: " in msg, msg


def test_living_scenarios_check_what_joins_tables(tmp_path: Path) -> None:
    """Populations of one type with different activation rules, a rule and a response on one rate,
    and division without free slots (a warning): each named at its key."""
    from scenario_cases import LIVING

    second = ('[[cells]]\ntype = "mover"\nplacement = "random"\ncount = 5\nlo = [0.0, 0.0]\nhi = [200.0, 120.0]\n'
              'activation = { signal = "GF", concentration = 0.1 }\n[[rules]]')
    cases = [(LIVING.replace("[[rules]]", second, 1), "cells[2].activation"),
             (LIVING.replace("[run]", '[[responses]]\ntarget = "GF"\nsignal = "GF"\nmax = 1.0\nK = 1.0\n'
                             'kind = "concentration"\n[[rules]]\nsignal = "GF"\nbehaviour = "secretion:GF"\n'
                             'max = 0.0\nK = 1.0\ndirection = "down"\n[run]'), "rules")]
    for text, key in cases:
        path = tmp_path / "bad.toml"
        path.write_text(text)
        with pytest.raises(ScenarioError, match=rf": {re.escape(key)}: "):
            load(path)
    path = tmp_path / "full.toml"
    path.write_text(LIVING.replace("capacity = 120", "capacity = 43"))
    with pytest.warns(UserWarning, match="no free slot for daughters"):
        load(path)

"""Shared scenario text and bad-input cases for test_scenario, test_io and test_cli."""

from __future__ import annotations

from pathlib import Path

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
"""A 12×10×6 grid of 10 µm voxels, two substrates, a vessel, three populations
(sphere, random, csv), a response and 4 frames of 15 s: every scenario feature."""


def write_small(folder: Path, text: str = SMALL, csv: str = "x,y,z\n55,45,25\n65.5,55,35\n") -> Path:
    """Write ``text`` as ``folder/small.toml`` and its cell file ``readers.csv``; returns the TOML path."""
    (folder / "readers.csv").write_text(csv)
    path = folder / "small.toml"
    path.write_text(text)
    return path


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
    "negative robin permeability": ('"y-" = "noflux"', '"y-" = { robin = { permeability = -1.0 } }',
                                    'substrates[1].boundary."y-".robin', "permeability >= 0"),
    "spacing below the grid's range": ("spacing = 10.0", "spacing = 1e-9", "grid", "spacing must lie in"),
}
"""``{case: (text in SMALL, replacement, key the message names, words it contains)}``."""

LIVING = """
title = "cells that live: a source, movers that chemotax, divide and die"
[grid]
shape = [20, 12]
spacing = 10.0
[[substrates]]
name = "GF"
diffusion = 20.0
decay = 1.0e-3
[[cells]]
type = "source"
placement = "sphere"
count = 3
center = [100.0, 60.0]
radius = 10.0
secretion = { "GF" = 5.0 }
[[cells]]
type = "mover"
placement = "random"
count = 40
lo = [0.0, 0.0]
hi = [200.0, 120.0]
uptake = { "GF" = 1.0 }
base = { speed = 0.05, death = 2.0e-4, division = 1.0e-3 }
[[rules]]
signal = "GF"
behaviour = "chemotaxis:GF"
max = 0.05
K = 0.1
cell_type = "mover"
[[rules]]
signal = "GF"
behaviour = "division"
max = 5.0e-3
K = 0.2
n = 2.0
cell_type = "mover"
[run]
dt = 5.0
t_end = 200.0
save_every = 50.0
seed = 3
capacity = 120
"""
